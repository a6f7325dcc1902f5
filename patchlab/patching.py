"""Activation patching: the plain reference loop over layers x positions (and over heads).

Denoising: run the corrupted prompts, and at one (layer, position) overwrite the activation with the
one cached from the clean run; the metric then says how much of the clean behaviour came back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from patchlab.ioi import IOIData
from patchlab.metrics import Metric, logit_diff, patching_metric

# Each component patched by layer and position, and the TransformerLens hook that carries it.
COMPONENT_HOOKS: dict[str, str] = {
    "resid_pre": "blocks.{layer}.hook_resid_pre",
    "attn_out": "blocks.{layer}.hook_attn_out",
    "mlp_out": "blocks.{layer}.hook_mlp_out",
}
HEAD_HOOK = "blocks.{layer}.attn.hook_z"  # per-head outputs [batch, pos, head, d_head]
COMPONENTS = (*COMPONENT_HOOKS, "head_out")


def hook_name(component: str, layer: int) -> str:
    """The hook name of ``component`` at ``layer`` (e.g. ``blocks.3.hook_resid_pre``)."""
    if component == "head_out":
        return HEAD_HOOK.format(layer=layer)
    if component not in COMPONENT_HOOKS:
        raise ValueError(f"unknown component {component!r}: choose one of {', '.join(COMPONENTS)}")
    return COMPONENT_HOOKS[component].format(layer=layer)


def _check_batch(model: Any, corrupted_tokens: Tensor, clean_cache: Any, name: str) -> None:
    if name not in clean_cache:
        raise ValueError(f"the clean cache has no {name!r}: cache the clean run with run_with_cache")
    clean_act = clean_cache[name]
    if clean_act.shape[:2] != corrupted_tokens.shape:
        raise ValueError(
            f"clean activations are {tuple(clean_act.shape[:2])} [batch, pos] but the corrupted tokens "
            f"are {tuple(corrupted_tokens.shape)}: clean and corrupted batches must match"
        )


def patch_position(
    activation: Float[Tensor, "batch pos ..."], clean_activation: Float[Tensor, "batch pos ..."], pos: int
) -> Float[Tensor, "batch pos ..."]:
    """Overwrite position ``pos`` of ``activation`` with the clean one (in place, returned)."""
    activation[:, pos] = clean_activation[:, pos]
    return activation


def reference_patching(
    model: Any,
    corrupted_tokens: Int[Tensor, "batch pos"],
    clean_cache: Any,
    metric: Metric,
    component: str = "resid_pre",
    progress: bool = True,
) -> Float[Tensor, "layer pos"]:
    """Patch ``component`` from the clean cache into the corrupted run at every (layer, position).

    One full forward pass per cell with ``run_with_hooks``: slow, simple, the ground truth that the
    fast methods are tested against. Returns ``metric`` of each patched run, ``[n_layers, n_pos]``.
    """
    if component == "head_out":
        raise ValueError("head_out is patched per head, not per position: use reference_head_patching")
    n_layers, n_pos = model.cfg.n_layers, corrupted_tokens.shape[1]
    _check_batch(model, corrupted_tokens, clean_cache, hook_name(component, 0))
    results = torch.zeros(n_layers, n_pos)
    cells = [(layer, pos) for layer in range(n_layers) for pos in range(n_pos)]
    for layer, pos in tqdm(cells, desc=f"patching {component}", disable=not progress):
        name = hook_name(component, layer)

        def hook(activation: Tensor, hook: Any) -> Tensor:
            return patch_position(activation, clean_cache[name], pos)

        with torch.no_grad():
            logits = model.run_with_hooks(corrupted_tokens, fwd_hooks=[(name, hook)])
        results[layer, pos] = metric(logits).item()
    return results


def reference_head_patching(
    model: Any,
    corrupted_tokens: Int[Tensor, "batch pos"],
    clean_cache: Any,
    metric: Metric,
    progress: bool = True,
) -> Float[Tensor, "layer head"]:
    """Patch each attention head's output (``hook_z``, all positions) from the clean run."""
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    _check_batch(model, corrupted_tokens, clean_cache, hook_name("head_out", 0))
    results = torch.zeros(n_layers, n_heads)
    cells = [(layer, head) for layer in range(n_layers) for head in range(n_heads)]
    for layer, head in tqdm(cells, desc="patching head_out", disable=not progress):
        name = hook_name("head_out", layer)

        def hook(z: Tensor, hook: Any) -> Tensor:
            z[:, :, head] = clean_cache[name][:, :, head]
            return z

        with torch.no_grad():
            logits = model.run_with_hooks(corrupted_tokens, fwd_hooks=[(name, hook)])
        results[layer, head] = metric(logits).item()
    return results



@dataclass
class PatchingResult:
    """What one patching experiment measured: the values and the baselines they are normalised by."""

    component: str
    method: str
    values: Float[Tensor, "layer cols"]
    clean_logit_diff: float
    corrupted_logit_diff: float


# Patching methods by name: each takes (model, corrupted_tokens, clean_cache, metric, component, progress).
METHODS: dict[str, Callable[..., Tensor]] = {"reference": reference_patching}


def patch_ioi(
    model: Any, data: IOIData, component: str = "resid_pre", method: str = "reference", progress: bool = True
) -> PatchingResult:
    """Run the clean and corrupted prompts of ``data`` and patch ``component`` with ``method``."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}: choose one of {', '.join(METHODS)}")
    if component not in COMPONENTS:
        raise ValueError(f"unknown component {component!r}: choose one of {', '.join(COMPONENTS)}")
    with torch.no_grad():
        clean_logits, clean_cache = model.run_with_cache(data.clean_tokens)
        corrupted_logits = model(data.corrupted_tokens)
    clean_ld = logit_diff(clean_logits, data.answer_tokens).item()
    corrupted_ld = logit_diff(corrupted_logits, data.answer_tokens).item()
    metric = patching_metric(data.answer_tokens, clean_ld, corrupted_ld)
    if component == "head_out" and method == "reference":
        values = reference_head_patching(model, data.corrupted_tokens, clean_cache, metric, progress=progress)
    else:
        values = METHODS[method](model, data.corrupted_tokens, clean_cache, metric, component=component,
                                 progress=progress)
    return PatchingResult(component, method, values, clean_ld, corrupted_ld)
