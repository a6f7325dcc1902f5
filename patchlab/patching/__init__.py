"""Activation patching: the reference loop, fast exact patching, attribution patching and path patching.

Denoising: run the corrupted prompts, and at one cell (a layer and a position, a head, or a head at
one position) overwrite an activation with the one cached from the clean run; the metric then says
how much of the clean behaviour came back.

Three interchangeable methods (``METHODS``), all called as
``method(model, corrupted_tokens, clean_cache, metric, component, progress)`` for every component of
``COMPONENTS`` (see :mod:`patchlab.patching.components`):

- ``reference`` (:mod:`~patchlab.patching.reference`): one full forward pass per cell with
  ``run_with_hooks``; slow, simple, the ground truth;
- ``fast`` (:mod:`~patchlab.patching.fast`): the same numbers (to float rounding) from far less work;
- ``attribution`` (:mod:`~patchlab.patching.attribution`): Nanda's gradient-based linear
  approximation, one forward and one backward pass of the corrupted run given the clean run's cache;
  ``attribution_patching_qk_fix`` adds the QK fix of AtP* (exact softmax) for heads' queries and
  keys, and the course's own first-order extension of it to heads' outputs.

Path patching (:mod:`~patchlab.patching.paths`) patches a sender head's effect along one path only:
to the final residual stream, or to receiver heads' queries, keys or values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch
from jaxtyping import Float
from torch import Tensor

from patchlab.ioi import IOIData
from patchlab.metrics import metric_from_runs
from patchlab.patching.attribution import agreement, attribution_patching, attribution_patching_qk_fix
from patchlab.patching.components import COMPONENTS, component, hook_name
from patchlab.patching.fast import FastPatchingFallback, fast_patching
from patchlab.patching.paths import fast_path_patching, reference_path_patching
from patchlab.patching.reference import reference_cells, reference_patching

if TYPE_CHECKING:
    from patchlab.types import Model

# What the chapters, the exercises and a learner use. The grader's and the tests' helpers are in the
# modules: components (Component, patch_position, check_batch), attribution (attribution_terms).
__all__ = [
    "COMPONENTS",
    "METHODS",
    "FastPatchingFallback",
    "PatchingResult",
    "agreement",
    "attribution_patching",
    "attribution_patching_qk_fix",
    "component",
    "fast_path_patching",
    "fast_patching",
    "hook_name",
    "patch_ioi",
    "reference_cells",
    "reference_patching",
    "reference_path_patching",
]


@dataclass
class PatchingResult:
    """What one patching experiment measured: the values and the baselines they are normalised by."""

    component: str
    method: str
    values: Float[Tensor, "layer ..."]
    clean_logit_diff: float
    corrupted_logit_diff: float


# Patching methods by name: each takes (model, corrupted_tokens, clean_cache, metric, component, progress).
METHODS: dict[str, Callable[..., Tensor]] = {
    "reference": reference_patching,
    "fast": fast_patching,
    "attribution": attribution_patching,
}


def patch_ioi(
    model: Model, data: IOIData, component: str = "resid_pre", method: str = "reference", progress: bool = True
) -> PatchingResult:
    """Run the clean and corrupted prompts of ``data`` and patch ``component`` with ``method``."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}: choose one of {', '.join(METHODS)}")
    if component not in COMPONENTS:
        raise ValueError(f"unknown component {component!r}: choose one of {', '.join(COMPONENTS)}")
    with torch.no_grad():
        clean_logits, clean_cache = model.run_with_cache(data.clean_tokens)
        corrupted_logits = model(data.corrupted_tokens)
    metric = metric_from_runs(clean_logits, corrupted_logits, data.answer_tokens)
    values = METHODS[method](model, data.corrupted_tokens, clean_cache, metric, component=component, progress=progress)
    return PatchingResult(component, method, values, metric.clean_logit_diff, metric.corrupted_logit_diff)
