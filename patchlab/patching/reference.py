"""The reference loop: one full forward pass with ``run_with_hooks`` per patched cell (the ground truth)."""

from __future__ import annotations

import itertools
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from patchlab.metrics import Metric
from patchlab.patching.components import check_batch, component as get_component, hook_name


def reference_patching(
    model: Any,
    corrupted_tokens: Int[Tensor, "batch pos"],
    clean_cache: Any,
    metric: Metric,
    component: str = "resid_pre",
    progress: bool = True,
) -> Float[Tensor, "layer ..."]:
    """Patch ``component`` from the clean cache into the corrupted run, one cell at a time.

    One full forward pass per cell with ``run_with_hooks``: slow, simple, the ground truth that the
    fast methods are tested against. Returns ``metric`` of each patched run: ``[n_layers, n_pos]`` for
    ``resid_pre``, ``attn_out``, ``mlp_out``; ``[n_layers, n_heads]`` for a head's output, queries,
    keys, values or pattern at all positions (``head_out``, ``head_q``, ...); ``[n_layers, n_pos,
    n_heads]`` by position (``head_out_by_pos``, ...), and ``[n_layers, n_heads, n_pos]`` for
    ``head_pattern_by_pos`` (the shapes of TransformerLens's functions).
    """
    spec = get_component(component)
    n_layers = model.cfg.n_layers
    check_batch(corrupted_tokens, clean_cache, hook_name(component, 0))
    sizes = spec.sizes(model, corrupted_tokens.shape[1])
    results = torch.zeros(n_layers, *sizes)
    cells = list(itertools.product(range(n_layers), *(range(size) for size in sizes)))
    for layer, *index in tqdm(cells, desc=f"patching {component}", disable=not progress):
        name = hook_name(component, layer)
        where = spec.selector(tuple(index))

        def hook(activation: Tensor, hook: Any) -> Tensor:
            activation[where] = clean_cache[name][where]
            return activation

        with torch.no_grad():
            logits = model.run_with_hooks(corrupted_tokens, fwd_hooks=[(name, hook)])
        results[(layer, *index)] = metric(logits).item()
    return results


def reference_head_patching(
    model: Any,
    corrupted_tokens: Int[Tensor, "batch pos"],
    clean_cache: Any,
    metric: Metric,
    progress: bool = True,
) -> Float[Tensor, "layer head"]:
    """Patch each attention head's output (``hook_z``, all positions) from the clean run."""
    return reference_patching(model, corrupted_tokens, clean_cache, metric, "head_out", progress)
