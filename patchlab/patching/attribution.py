"""Attribution patching (Nanda): the first-order estimate of exact patching, from the clean run's cache
(one forward pass) and one forward and one backward pass of the corrupted run.

:func:`attribution_patching_qk_fix` adds the QK fix of AtP* (Kramár et al. 2024) for heads' queries
and keys: the patched head's scores are recomputed exactly and so is the softmax that turns them into
weights, so that saturated attention is not linearised; only the step from the weights to the metric
stays first-order. For heads' **outputs** it applies the course's own extension, not AtP*'s method: the
change of every later head's scores is taken to first order (a forward-mode derivative) and only the
softmax after it is exact. :func:`attribution_terms` gives the terms of plain attribution patching
before they are summed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch
import torch.autograd.forward_ad as fwAD
from jaxtyping import Float, Int
from torch import Tensor

from patchlab.hooks import act_name
from patchlab.metrics import Metric
from patchlab.patching.components import check_batch, component as get_component
from patchlab.runtime import progress as progress_bar

if TYPE_CHECKING:
    from patchlab.types import Cache, HookPoint, Model

# attn_scores and pattern: [batch, head, dest, src], before and after the softmax


def _track(embedding: Tensor, hook: HookPoint) -> Tensor:
    """The graph starts at the embedding (the weights need no gradient)."""
    return embedding.detach().requires_grad_(True)


def _keep(
    store: dict[str, Tensor], name: str, transform: Callable[[Tensor], Tensor] = lambda a: a
) -> Callable[[Tensor, Any], Tensor]:
    """A hook that stores (a transformed) activation as ``store[name]`` and passes it on (``name``, not
    ``hook.name``, which may be an alias such as ``blocks.0.hook_in``)."""

    def hook(activation: Tensor, hook: HookPoint) -> Tensor:
        store[name] = transform(activation)
        return store[name]  # returned, so that a reshaped hook (hook_z) feeds this very tensor on

    return hook


def _gradients(
    model: Model,
    tokens: Int[Tensor, "batch pos"],
    metric: Metric,
    names: list[str],
    cut: Sequence[str] = (),
    also: Sequence[str] = (),
) -> tuple[Float[Tensor, ""], dict[str, Tensor], list[Tensor]]:
    """The metric of a run of ``tokens``, the activations at ``names``, ``cut`` and ``also``, and the
    metric's gradient at ``names``.

    The activations at ``cut`` are made leaves of the graph: the gradients are then partial
    derivatives, with those activations held fixed.
    """
    activations: dict[str, Tensor] = {}
    leaf = lambda a: a.detach().requires_grad_(True)  # noqa: E731
    with torch.enable_grad():
        logits = model.run_with_hooks(
            tokens,
            fwd_hooks=[(act_name("embed"), _track)]
            + [(name, _keep(activations, name, leaf)) for name in cut]
            + [(name, _keep(activations, name)) for name in [*names, *also]],
        )
        value = metric(logits)
        grads = torch.autograd.grad(value, [activations[name] for name in names])
    return value.detach(), {name: a.detach() for name, a in activations.items()}, list(grads)


def attribution_terms(
    model: Model,
    corrupted_tokens: Int[Tensor, "batch pos"],
    clean_cache: Cache,
    metric: Metric,
    component: str = "resid_pre",
) -> tuple[Float[Tensor, ""], Float[Tensor, "layer batch ..."]]:
    """The metric of the corrupted run and, for every layer, ``(clean - corrupted) * ∂metric/∂activation``
    entry by entry (the activation's own shape, e.g. ``[batch, pos, d_model]``), the gradient taken at
    the corrupted run. :func:`attribution_patching` sums these terms over each patched slice."""
    spec = get_component(component)
    names = [spec.hook(layer) for layer in range(model.cfg.n_layers)]
    check_batch(corrupted_tokens, clean_cache, names[0])
    value, activations, grads = _gradients(model, corrupted_tokens, metric, names)
    return value, torch.stack([(clean_cache[name] - activations[name]) * grad for name, grad in zip(names, grads)])


def attribution_patching(
    model: Model,
    corrupted_tokens: Int[Tensor, "batch pos"],
    clean_cache: Cache,
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
    value, terms = attribution_terms(model, corrupted_tokens, clean_cache, metric, component)
    kept = [dim + 1 for dim in get_component(component).dims]  # the patched axes, after the layer axis
    summed = [dim for dim in range(1, terms.ndim) if dim not in kept]  # batch and the rest
    return (value + terms.sum(dim=summed)).float().cpu()  # ``dims`` are in the axes' order


def _score_changes(
    model: Model, tokens: Int[Tensor, "batch pos"], layer: int, delta_z: Float[Tensor, "batch pos head d_head"]
) -> list[Float[Tensor, "head batch head_to pos pos_src"]]:
    """Per head of ``layer``: the first-order change of every later layer's attention scores when that
    head's ``z`` moves by ``delta_z`` (forward-mode differentiation of one run, the batch repeated per head)."""
    n_heads, batch = model.cfg.n_heads, tokens.shape[0]
    tangent = torch.zeros(n_heads, *delta_z.shape, dtype=delta_z.dtype, device=delta_z.device)
    for head in range(n_heads):
        tangent[head, :, :, head] = delta_z[:, :, head]  # copy h moves head h only
    tangent = tangent.flatten(0, 1)
    later = [act_name("attn_scores", later_layer) for later_layer in range(layer + 1, model.cfg.n_layers)]
    changes: dict[str, Tensor] = {}

    def move(z: Tensor, hook: HookPoint) -> Tensor:
        return fwAD.make_dual(z, tangent)

    def read(name: str) -> Callable[[Tensor, Any], Tensor]:
        def hook(scores: Tensor, hook: HookPoint) -> Tensor:
            change = fwAD.unpack_dual(scores).tangent
            changes[name] = torch.zeros_like(scores) if change is None else change
            return scores

        return hook

    with torch.no_grad(), fwAD.dual_level():
        model.run_with_hooks(
            tokens.repeat(n_heads, 1), fwd_hooks=[(act_name("z", layer), move)] + [(name, read(name)) for name in later]
        )
    return [changes[name].unflatten(0, (n_heads, batch)) for name in later]


def _scores(
    model: Model,
    q: Float[Tensor, "batch pos head d_head"],
    k: Float[Tensor, "batch pos head d_head"],
    like: Float[Tensor, "batch head pos pos_src"],
) -> Float[Tensor, "batch head pos pos_src"]:
    """Attention scores from queries and keys, masked where ``like`` (scores of the same run shape) is."""
    scale = model.cfg.attn_scale if model.cfg.attn_scale > 0 else model.cfg.d_head**0.5
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / scale
    return torch.where(torch.isfinite(like), scores, like)


def _qk_fix_inputs(
    model: Model,
    corrupted_tokens: Int[Tensor, "batch pos"],
    clean_cache: Cache,
    metric: Metric,
    kind: str,
) -> Float[Tensor, "layer head"]:
    """The QK fix for a head's queries (``kind="q"``) or keys (``"k"``) patched at every position: the
    patched pattern is computed exactly, ``metric + sum((pattern_patched - pattern) * ∂metric/∂pattern)``."""
    n_layers = model.cfg.n_layers
    names = {part: [act_name(part, layer) for layer in range(n_layers)] for part in ("q", "k")}
    patterns = [act_name("pattern", layer) for layer in range(n_layers)]
    scores = [act_name("attn_scores", layer) for layer in range(n_layers)]
    value, activations, grads = _gradients(
        model, corrupted_tokens, metric, patterns, also=[*names["q"], *names["k"], *scores]
    )
    rows = []
    for layer in range(n_layers):
        q, k = (activations[names[part][layer]] for part in ("q", "k"))
        corrupted = activations[scores[layer]]
        if not torch.allclose(_scores(model, q, k, corrupted), corrupted, atol=1e-4, rtol=1e-4):
            raise ValueError("the attention scores are not q·k / scale with the causal mask for this model")
        clean = clean_cache[names[kind][layer]]
        patched = _scores(model, clean, k, corrupted) if kind == "q" else _scores(model, q, clean, corrupted)
        change = torch.softmax(patched, dim=-1) - activations[patterns[layer]]
        rows.append((change * grads[layer]).sum(dim=(0, 2, 3)))  # [head]
    return (value + torch.stack(rows)).float().cpu()


def _qk_fix_outputs(
    model: Model,
    corrupted_tokens: Int[Tensor, "batch pos"],
    clean_cache: Cache,
    metric: Metric,
    progress: bool,
) -> Float[Tensor, "layer head"]:
    """The QK fix for a head's output (``z``) patched at every position (see :func:`attribution_patching_qk_fix`)."""
    n_layers = model.cfg.n_layers
    z_names = [act_name("z", layer) for layer in range(n_layers)]
    pattern_names = [act_name("pattern", layer) for layer in range(n_layers)]
    score_names = [act_name("attn_scores", layer) for layer in range(n_layers)]
    value, activations, grads = _gradients(model, corrupted_tokens, metric, z_names + pattern_names, cut=score_names)
    z_grads, pattern_grads = grads[:n_layers], grads[n_layers:]
    rows = []
    for layer in progress_bar(range(n_layers), desc="QK fix, one pass per layer", disable=not progress):
        delta_z = clean_cache[z_names[layer]] - activations[z_names[layer]]
        row = (delta_z * z_grads[layer]).sum(dim=(0, 1, 3))  # [head]: every path but the later scores
        changes = _score_changes(model, corrupted_tokens, layer, delta_z) if layer + 1 < n_layers else []
        for later, change in zip(range(layer + 1, n_layers), changes):
            scores = activations[score_names[later]]
            moved = torch.softmax(torch.where(torch.isfinite(scores), scores + change, scores), dim=-1)
            row = row + ((moved - activations[pattern_names[later]]) * pattern_grads[later]).sum(dim=(1, 2, 3, 4))
        rows.append(row)
    return (value + torch.stack(rows)).float().cpu()


def attribution_patching_qk_fix(
    model: Model,
    corrupted_tokens: Int[Tensor, "batch pos"],
    clean_cache: Cache,
    metric: Metric,
    component: str = "head_out",
    progress: bool = True,
) -> Float[Tensor, "layer head"]:
    """Attribution patching of heads, linear in the attention weights and exact in the softmax that
    makes them. Same result shape as ``attribution_patching(..., component)`` would give, for
    ``head_q``, ``head_k`` or ``head_out``.

    - ``head_q``, ``head_k``: the QK fix of AtP* (Kramár et al. 2024): the patched head's attention
      pattern is recomputed exactly from the clean queries (keys) and the corrupted keys (queries);
      only the step from the pattern to the metric is linear.
    - ``head_out``: the course's own first-order extension, not part of AtP*. The metric is split at every head's attention scores. With the scores held
      fixed, a head's output acts through values, MLPs and the residual stream, and that part stays
      linear (``delta_z · ∂metric/∂z``, a partial derivative); through each later head's scores it
      acts as ``(softmax(scores + delta_scores) - pattern) · ∂metric/∂pattern``, where
      ``delta_scores`` is the first-order change of the scores (a forward-mode derivative in the
      direction ``delta_z``). With that softmax linearised too, this is plain attribution patching.
      One backward pass and, per layer, one forward pass of the batch repeated once per head, with
      forward-mode derivatives: on GPT-2 small more work than exact head patching itself (144 passes),
      so this shows the fix rather than speeding anything up (AtP* computes it more cheaply).
    """
    check_batch(corrupted_tokens, clean_cache, act_name("z", 0))
    if component in ("head_q", "head_k"):
        return _qk_fix_inputs(model, corrupted_tokens, clean_cache, metric, component[-1])
    if component == "head_out":
        return _qk_fix_outputs(model, corrupted_tokens, clean_cache, metric, progress)
    raise ValueError(f"the QK fix is for head_out, head_q and head_k, not {component!r}")


def agreement(estimate: Tensor, exact: Tensor) -> dict[str, float]:
    """How well one patching table matches another: Pearson r and the largest absolute error."""
    a, b = estimate.flatten().double(), exact.flatten().double()
    centred_a, centred_b = a - a.mean(), b - b.mean()
    denom = (centred_a.norm() * centred_b.norm()).item()
    return {
        "pearson_r": float("nan") if denom == 0 else (centred_a @ centred_b).item() / denom,
        "max_abs_error": (a - b).abs().max().item(),
    }
