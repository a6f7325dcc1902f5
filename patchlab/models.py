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
MODEL_NAMES = ("auto", *HUB_MODELS, "ioi-mini", "gpt2-small-random")
ENV_VAR = "PATCHLAB_MODEL"


class ModelUnavailableError(RuntimeError):
    """A model could not be loaded; the message names the ways out."""


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
    ways_out = ("Either connect to the internet once so that Hugging Face caches it, or use the course "
                "model: load_model('ioi-mini') (or set PATCHLAB_MODEL=ioi-mini).")
    if not _hub_reachable():
        if not _hub_cached(hf_id):
            raise ModelUnavailableError(
                f"{name} is not in the Hugging Face cache and the hub cannot be reached. {ways_out}"
            )
        import huggingface_hub.constants

        huggingface_hub.constants.HF_HUB_OFFLINE = True  # load from the cache without retrying the network
    try:
        return TransformerBridge.boot_transformers(hf_id, device=device)
    except Exception as err:  # the hub raises OSError, ConnectionError, LocalEntryNotFoundError...
        raise ModelUnavailableError(
            f"{name} could not be loaded ({type(err).__name__}: {str(err).splitlines()[0][:160]}). {ways_out}"
        ) from None


def _load_ioi_mini(device: torch.device):
    from transformer_lens.model_bridge import TransformerBridge

    if not (COURSE_MODEL_DIR / "model.safetensors").exists():
        raise ModelUnavailableError(
            f"the course model's weights are missing from {COURSE_MODEL_DIR}; reinstall patchlab or "
            "train them again with `python -m patchlab.train`"
        )
    return TransformerBridge.boot_transformers(str(COURSE_MODEL_DIR), device=device)


def _load_gpt2_small_random(device: torch.device, seed: int = 0):
    """GPT-2 small's architecture and compute cost with seeded random weights (no download).

    It uses the course tokenizer (GPT-2's is not shipped); token ids stay in GPT-2's vocabulary."""
    from transformer_lens.model_bridge.sources._bridge_builder import build_bridge_from_module
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(attn_implementation="eager")  # the defaults are GPT-2 small's shape
    torch.manual_seed(seed)
    hf_model = GPT2LMHeadModel(config).to(device).eval()
    return build_bridge_from_module(
        hf_model, "GPT2LMHeadModel", hf_config=config, tokenizer=load_course_tokenizer(),
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
    loaders = {"ioi-mini": _load_ioi_mini, "gpt2-small-random": _load_gpt2_small_random}
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
                print("patchlab: using ioi-mini, the course model (GPT-2 small is not available offline)",
                      file=sys.stdout)
            return _finish(_load_ioi_mini(device), "ioi-mini")
    return _finish(loaders[name](device), name)


def model_label(model) -> str:
    """The name ``load_model`` gave this model (for titles and reports)."""
    return getattr(model, "patchlab_name", None) or str(getattr(model.cfg, "model_name", "model"))
