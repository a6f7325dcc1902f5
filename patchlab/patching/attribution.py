"""Attribution patching (Nanda): the first-order estimate of exact patching, one forward and one backward pass."""

from __future__ import annotations

from typing import Any, Callable

import torch
from jaxtyping import Float, Int
from torch import Tensor

from patchlab.metrics import Metric
from patchlab.patching.components import check_batch, component as get_component


def attribution_patching(
    model: Any,
    corrupted_tokens: Int[Tensor, "batch pos"],
    clean_cache: Any,
    metric: Metric,
    component: str = "resid_pre",
    progress: bool = True,
) -> Float[Tensor, "layer ..."]:
    """Attribution patching (Nanda): the first-order estimate of what exact patching returns.

    One forward and one backward pass of the corrupted run give the gradient of the metric with
    respect to every activation; the effect of patching is approximated by the linear term:
    ``metric(corrupted) + sum((clean - corrupted) * grad)``, summed over the patched slice (one
    position, a head at all positions, or a head at one position) and over the batch. Same arguments
    and result shape as :func:`reference_patching`; ``progress`` is accepted for the common signature
    (there is no loop).
    """
    spec = get_component(component)
    names = [spec.hook.format(layer=layer) for layer in range(model.cfg.n_layers)]
    check_batch(corrupted_tokens, clean_cache, names[0])
    activations: dict[str, Tensor] = {}

    def track(embedding: Tensor, hook: Any) -> Tensor:
        return embedding.detach().requires_grad_(True)

    def keep(name: str) -> Callable[[Tensor, Any], Tensor]:
        def hook(activation: Tensor, hook: Any) -> Tensor:
            activations[name] = activation
            return activation  # returned, so that a reshaped hook (hook_z) feeds this very tensor on
        return hook

    with torch.enable_grad():
        logits = model.run_with_hooks(corrupted_tokens, fwd_hooks=[("hook_embed", track)]
                                      + [(name, keep(name)) for name in names])
        value = metric(logits)
        grads = torch.autograd.grad(value, [activations[name] for name in names])
    with torch.no_grad():
        rows = []
        for name, grad in zip(names, grads):
            delta = (clean_cache[name] - activations[name]) * grad
            summed = [dim for dim in range(delta.ndim) if dim not in spec.dims]  # batch and the rest
            rows.append(delta.sum(dim=summed))  # the patched axes (``spec.dims`` are in the axes' order)
        return (value.detach() + torch.stack(rows)).float().cpu()


def agreement(estimate: Tensor, exact: Tensor) -> dict[str, float]:
    """How well one patching table matches another: Pearson r and the largest absolute error."""
    a, b = estimate.flatten().double(), exact.flatten().double()
    centred_a, centred_b = a - a.mean(), b - b.mean()
    denom = (centred_a.norm() * centred_b.norm()).item()
    return {
        "pearson_r": float("nan") if denom == 0 else (centred_a @ centred_b).item() / denom,
        "max_abs_error": (a - b).abs().max().item(),
    }
