"""The reference loop: one full forward pass with ``run_with_hooks`` per patched cell (the ground truth)."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from patchlab.metrics import Metric
from patchlab.patching.components import check_batch, component as get_component, hook_name
from patchlab.runtime import progress as progress_bar

if TYPE_CHECKING:
    from patchlab.types import Cache, HookPoint, Model


def reference_patching(
    model: Model,
    corrupted_tokens: Int[Tensor, "batch pos"],
    clean_cache: Cache,
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
    sizes = get_component(component).sizes(model, corrupted_tokens.shape[1])
    cells = list(itertools.product(range(model.cfg.n_layers), *(range(size) for size in sizes)))
    values = reference_cells(model, corrupted_tokens, clean_cache, metric, component, cells, progress)
    return values.reshape(model.cfg.n_layers, *sizes)


def reference_cells(
    model: Model,
    corrupted_tokens: Int[Tensor, "batch pos"],
    clean_cache: Cache,
    metric: Metric,
    component: str,
    cells: Sequence[tuple[int, ...]],
    progress: bool = False,
) -> Float[Tensor, " n_cells"]:
    """The reference loop over some ``cells`` only (indices into :func:`reference_patching`'s result,
    layer first): a spot check of a sweep too large to run whole, e.g. by head and position on GPT-2
    small on a CPU (2,160 forward passes)."""
    check_batch(corrupted_tokens, clean_cache, hook_name(component, 0))
    spec = get_component(component)
    values = torch.zeros(len(cells))
    for i, (layer, *index) in enumerate(progress_bar(cells, desc=f"patching {component}", disable=not progress)):
        name = hook_name(component, layer)
        where = spec.selector(tuple(index))

        def hook(activation: Tensor, hook: HookPoint) -> Tensor:
            activation[where] = clean_cache[name][where]
            return activation

        with torch.no_grad():
            logits = model.run_with_hooks(corrupted_tokens, fwd_hooks=[(name, hook)])
        values[i] = metric(logits).item()
    return values
