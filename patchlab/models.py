"""Model loading: GPT-2 small, the course model ``ioi-mini`` and a random GPT-2-small-sized model.

Every model comes back as a TransformerLens 4.x ``TransformerBridge`` in compatibility mode, in eval
mode, with its parameters' gradients off, so the rest of the course is the same code for each.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import warnings
from functools import partial
from pathlib import Path

import torch

COURSE_MODEL_DIR = Path(__file__).parent / "course_model"
# Models from the Hugging Face hub (need the internet once), by course name.
HUB_MODELS = {"gpt2-small": "gpt2", "gpt2-medium": "gpt2-medium", "gpt2-large": "gpt2-large", "gpt2-xl": "gpt2-xl"}
MODEL_NAMES = ("auto", *HUB_MODELS, "ioi-mini", "ioi-mini-reshaped", "gpt2-small-random")
ENV_VAR = "PATCHLAB_MODEL"


class ModelUnavailableError(RuntimeError):
    """A model could not be loaded: ``reason`` says why, the message adds the ways out (``ways_out``)."""

    def __init__(self, reason: str, ways_out: str = "") -> None:
        super().__init__(f"{reason}. {ways_out}" if ways_out else reason)
        self.reason, self.ways_out = reason, ways_out


def pick_device() -> torch.device:
    """CUDA when available, else CPU. Apple MPS is never chosen silently: it has produced inverted
    IOI logit differences with TransformerLens; pass ``device="mps"`` yourself to try it."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _quiet_transformers() -> None:
    """No progress bars or warnings on stderr (graded notebook cells must keep stderr empty)."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="transformer_lens")
    warnings.filterwarnings("ignore", module="transformers")


def _finish(bridge, name: str):
    from transformer_lens.model_bridge import TransformerBridge

    assert isinstance(bridge, TransformerBridge)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bridge.enable_compatibility_mode(disable_warnings=True)
    bridge.eval()
    for p in bridge.parameters():
        p.requires_grad_(False)
    bridge.patchlab_name = name
    return bridge


def load_course_tokenizer():
    """The word-level tokenizer of ``ioi-mini`` (loaded from its folder, as the bridge needs)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(COURSE_MODEL_DIR)


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers at all (one quick connection, no retries)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _hub_cached(hf_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return all(isinstance(try_to_load_from_cache(hf_id, f), str) for f in ("config.json", "model.safetensors"))


def _load_hub(name: str, device: torch.device):
    """A model of ``HUB_MODELS`` from the hub or its local cache; a clear error when neither works."""
    from transformer_lens.model_bridge import TransformerBridge

    hf_id = HUB_MODELS[name]
    ways_out = (
        "Either connect to the internet once so that Hugging Face caches it, or use the course "
        "model: load_model('ioi-mini') (or set PATCHLAB_MODEL=ioi-mini)."
    )
    if not _hub_reachable():
        if not _hub_cached(hf_id):
            raise ModelUnavailableError(
                f"{name} is not in the Hugging Face cache and the hub cannot be reached", ways_out
            )
        import huggingface_hub.constants

        huggingface_hub.constants.HF_HUB_OFFLINE = True  # load from the cache without retrying the network
    try:
        return TransformerBridge.boot_transformers(hf_id, device=device)
    except Exception as err:  # the hub raises OSError, ConnectionError, LocalEntryNotFoundError...
        raise ModelUnavailableError(
            f"{name} could not be loaded ({type(err).__name__}: {str(err).splitlines()[0][:160]})", ways_out
        ) from None


def _load_ioi_mini(device: torch.device):
    from transformer_lens.model_bridge import TransformerBridge

    if not (COURSE_MODEL_DIR / "model.safetensors").exists():
        raise ModelUnavailableError(
            f"the course model's weights are missing from {COURSE_MODEL_DIR}; reinstall patchlab or "
            "train them again with `python -m patchlab_dev.train`"
        )
    return TransformerBridge.boot_transformers(str(COURSE_MODEL_DIR), device=device)


def _reshaped_state(
    state: dict[str, torch.Tensor], n_layer: int, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """``ioi-mini``'s GPT-2 weights rewritten at twice the width, twice the heads and one more block.

    Every residual vector x becomes [x, x] (LayerNorm keeps mean and variance, so LN([x, x]) =
    [LN(x), LN(x)]); matrices that read the residual stream take half of each copy, matrices that
    write to it write both copies; the new heads read randomly and write nothing; the new block (the
    third) writes nothing; the final LayerNorm is halved because the unembedding is tied to the
    doubled embedding. The function computed is ioi-mini's, up to float rounding."""

    def read(w: torch.Tensor) -> torch.Tensor:  # [d, out] -> [2d, out]
        return torch.cat([w, w]) / 2

    def both(w: torch.Tensor) -> torch.Tensor:  # [..., d] -> [..., 2d]
        return torch.cat([w, w], dim=-1)

    def noise(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * 0.02

    d = state["transformer.wte.weight"].shape[1]
    new = {
        "transformer.wte.weight": both(state["transformer.wte.weight"]),
        "transformer.wpe.weight": both(state["transformer.wpe.weight"]),
        "transformer.ln_f.weight": both(state["transformer.ln_f.weight"]) / 2,
        "transformer.ln_f.bias": both(state["transformer.ln_f.bias"]) / 2,
    }
    old_layers = [i for i in range(n_layer - 1)]
    layout = old_layers[:2] + [None] + old_layers[2:]  # None: the block that writes nothing
    for index, old in enumerate(layout):
        p, q = f"transformer.h.{index}.", f"transformer.h.{old}."
        if old is None:
            src = {
                k[len("transformer.h.0.") :]: torch.zeros_like(v)
                for k, v in state.items()
                if k.startswith("transformer.h.0.")
            }
            src["ln_1.weight"] = src["ln_2.weight"] = torch.ones(d)
        else:
            src = {k[len(q) :]: v for k, v in state.items() if k.startswith(q)}
        for ln in ("ln_1", "ln_2"):
            new[p + f"{ln}.weight"], new[p + f"{ln}.bias"] = both(src[f"{ln}.weight"]), both(src[f"{ln}.bias"])
        qkv_w, qkv_b = src["attn.c_attn.weight"], src["attn.c_attn.bias"]  # [d, 3d], [3d]
        blocks_w, blocks_b = [], []
        for part in range(3):  # q, k, v: the old heads, then as many new heads reading at random
            blocks_w += [read(qkv_w[:, part * d : (part + 1) * d]), noise(2 * d, d)]
            blocks_b += [qkv_b[part * d : (part + 1) * d], noise(d)]
        new[p + "attn.c_attn.weight"], new[p + "attn.c_attn.bias"] = torch.cat(blocks_w, 1), torch.cat(blocks_b)
        new[p + "attn.c_proj.weight"] = torch.cat([both(src["attn.c_proj.weight"]), torch.zeros(d, 2 * d)])
        new[p + "attn.c_proj.bias"] = both(src["attn.c_proj.bias"])
        new[p + "mlp.c_fc.weight"], new[p + "mlp.c_fc.bias"] = read(src["mlp.c_fc.weight"]), src["mlp.c_fc.bias"]
        new[p + "mlp.c_proj.weight"], new[p + "mlp.c_proj.bias"] = (
            both(src["mlp.c_proj.weight"]),
            both(src["mlp.c_proj.bias"]),
        )
    return new


def _load_ioi_mini_reshaped(device: torch.device):
    """``ioi-mini`` at another shape (5 layers, 8 heads, d_model 256, same function): the grader's
    second model, so that code with the course model's sizes written in fails."""
    from safetensors.torch import load_file
    from transformer_lens.model_bridge.sources._bridge_builder import build_bridge_from_module
    from transformers import GPT2Config, GPT2LMHeadModel

    small = GPT2Config.from_pretrained(COURSE_MODEL_DIR)
    config = GPT2Config.from_pretrained(
        COURSE_MODEL_DIR,
        n_layer=small.n_layer + 1,
        n_head=2 * small.n_head,
        n_embd=2 * small.n_embd,
        n_inner=4 * small.n_embd,
        attn_implementation="eager",
    )
    state = load_file(COURSE_MODEL_DIR / "model.safetensors")
    state = {k if k.startswith("transformer.") else f"transformer.{k}": v for k, v in state.items()}
    hf_model = GPT2LMHeadModel(config)
    new = _reshaped_state(state, config.n_layer, torch.Generator().manual_seed(0))
    missing, unexpected = hf_model.load_state_dict(new, strict=False)
    assert not unexpected and all(k.endswith("lm_head.weight") or ".attn.bias" in k for k in missing), missing
    return build_bridge_from_module(
        hf_model.to(device).eval(),  # type: ignore[arg-type]  # transformers types to() oddly
        "GPT2LMHeadModel",
        hf_config=config,
        tokenizer=load_course_tokenizer(),
        model_name="ioi-mini-reshaped",
    )


def _load_gpt2_small_random(device: torch.device, seed: int = 0):
    """GPT-2 small's architecture and compute cost with seeded random weights (no download).

    It uses the course tokenizer (GPT-2's is not shipped); token ids stay in GPT-2's vocabulary."""
    from transformer_lens.model_bridge.sources._bridge_builder import build_bridge_from_module
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(attn_implementation="eager")  # type: ignore[call-arg]  # the defaults are GPT-2 small's shape
    torch.manual_seed(seed)
    hf_model = GPT2LMHeadModel(config).to(device).eval()  # type: ignore[arg-type]
    return build_bridge_from_module(
        hf_model,
        "GPT2LMHeadModel",
        hf_config=config,
        tokenizer=load_course_tokenizer(),
        model_name="gpt2-small-random",
    )


def load_model(name: str = "auto", device: str | torch.device | None = None, verbose: bool = True):
    """Load a model as a ``TransformerBridge`` in compatibility mode (eval, no parameter gradients).

    ``name``: ``"gpt2-small"`` (or ``gpt2-medium``, ``-large``, ``-xl``), ``"ioi-mini"`` (the course
    model, shipped with patchlab),
    ``"gpt2-small-random"`` (for benchmarks) or ``"auto"`` (default): the model named by the
    ``PATCHLAB_MODEL`` environment variable if set, else GPT-2 small when it can be loaded, else
    ``ioi-mini``; the choice is printed in one line.
    """
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}: choose one of {', '.join(MODEL_NAMES)}")
    device = torch.device(device) if device is not None else pick_device()
    _quiet_transformers()
    loaders = {
        "ioi-mini": _load_ioi_mini,
        "ioi-mini-reshaped": _load_ioi_mini_reshaped,
        "gpt2-small-random": _load_gpt2_small_random,
    }
    loaders |= {hub_name: partial(_load_hub, hub_name) for hub_name in HUB_MODELS}
    if name == "auto":
        chosen = os.environ.get(ENV_VAR)
        if chosen:
            if chosen not in loaders:
                raise ValueError(f"{ENV_VAR}={chosen!r} is not a model: use one of {', '.join(loaders)}")
            if verbose:
                print(f"patchlab: using {chosen} ({ENV_VAR} is set)", file=sys.stdout)
            return _finish(loaders[chosen](device), chosen)
        try:
            model = _finish(_load_hub("gpt2-small", device), "gpt2-small")
            if verbose:
                print("patchlab: using gpt2-small (loaded from Hugging Face)", file=sys.stdout)
            return model
        except ModelUnavailableError:
            if verbose:
                print(
                    "patchlab: using ioi-mini, the course model (GPT-2 small is not available offline)", file=sys.stdout
                )
            return _finish(_load_ioi_mini(device), "ioi-mini")
    return _finish(loaders[name](device), name)


def model_label(model) -> str:
    """The name ``load_model`` gave this model (for titles and reports)."""
    return getattr(model, "patchlab_name", None) or str(getattr(model.cfg, "model_name", "model"))
