"""Fast exact patching: the reference loop's numbers without its redundant work (see :func:`fast_patching`)."""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Callable

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from patchlab.hooks import act_name
from patchlab.runtime import progress as progress_bar

from patchlab.metrics import Metric, PatchingMetric
from patchlab.patching.components import Component, check_batch, component as get_component, hook_name
from patchlab.patching.kernel import Kernel, Trace, kernel_unsupported
from patchlab.patching.reference import reference_patching

if TYPE_CHECKING:
    from patchlab.types import Cache, Model

# Tolerance of the self-check: the kernel must reproduce the model's final logits this closely
# (relative to their largest magnitude) before its numbers are trusted.
SELF_CHECK_RTOL = 1e-4
# Rows x positions resumed at once (bounds the memory of one batched step).
_TOKENS_PER_CHUNK = 8192


class FastPatchingFallback(UserWarning):
    """``fast_patching`` could not handle a model or metric and ran the reference loop instead."""


class Unsupported(Exception):
    """Raised inside the fast methods when they must fall back to their reference."""


def _final_position_evaluator(
    metric: Metric, corrupted_logits: Float[Tensor, "batch pos d_vocab"]
) -> tuple[Tensor | None, Callable[[Tensor], float]]:
    """The logit columns fast patching must compute, and how to score ``[batch, columns]`` logits.

    ``PatchingMetric`` reads two answer logits per prompt: only those columns are unembedded, and
    the same metric is evaluated on them. Any other metric gets the full final-position logits as
    ``[batch, 1, d_vocab]``; it must give the same value there as on the full logits.
    """
    if type(metric) is PatchingMetric:
        batch = metric.answer_tokens.shape[0]
        pairs = torch.tensor([[0, 1]], device=metric.answer_tokens.device).expand(batch, 2)
        on_columns = PatchingMetric(pairs, metric.clean_logit_diff, metric.corrupted_logit_diff)
        return metric.answer_tokens.to(corrupted_logits.device), lambda cols: on_columns(cols[:, None]).item()
    try:
        full = metric(corrupted_logits).item()
        last = metric(corrupted_logits[:, -1:]).item()
    except Exception as err:  # the metric indexes positions other than the last one
        raise Unsupported(f"the metric fails on final-position logits ({type(err).__name__}: {err})") from None
    if not math.isclose(full, last, rel_tol=1e-6, abs_tol=1e-7):
        raise Unsupported(
            f"the metric reads more than the final position ({full} on all positions, {last} on the last one)"
        )
    return None, lambda logits: metric(logits[:, None]).item()


def _patch_starts(
    spec: Component, clean: Tensor, corrupted: Tensor, n_layers: int
) -> tuple[Bool[Tensor, "layer cols batch"], Int[Tensor, "layer cols batch"]]:
    """Which (layer, col, prompt) patches change anything, and the first position each changes.

    ``clean`` / ``corrupted`` are the stacked activations of the model's own clean and corrupted runs;
    ``cols`` flattens the component's axes after the layer. A patch whose clean activation equals the
    corrupted one leaves the run exactly as it was; so does a patch at the last layer that changes
    the block's output only before the final position.
    """
    if spec.kind == "resid":
        differs = (clean != corrupted).any(-1).transpose(1, 2)  # [layer, pos, batch]
        n_pos = differs.shape[1]
        if spec.name in ("attn_out", "mlp_out"):
            differs[n_layers - 1, : n_pos - 1] = False
        first = torch.arange(n_pos, device=differs.device)[None, :, None].expand_as(differs)
        return differs, first
    differs_at = (clean != corrupted).any(-1)  # [layer, batch, pos, head]; patterns [layer, batch, head, dest]
    if spec.kind == "pattern":
        differs_at = differs_at.transpose(2, 3)
    if not spec.by_pos:  # a head at every position: its output changes from the first position that differs
        per_head = differs_at.permute(0, 3, 1, 2)  # [layer, head, batch, pos]
        return per_head.any(-1), per_head.int().argmax(-1)
    n_pos = differs_at.shape[2]
    if spec.kind in ("z", "q", "pattern"):  # these change the head's output at their own position only
        differs_at[n_layers - 1, :, : n_pos - 1] = False
    order = (0, 2, 3, 1) if spec.axes == ("pos", "head") else (0, 3, 2, 1)  # -> [layer, *axes, batch]
    differs = differs_at.permute(*order)
    positions = torch.arange(n_pos, device=differs.device)
    positions = positions[:, None, None] if spec.axes == ("pos", "head") else positions[None, :, None]
    return differs.flatten(1, 2), positions.expand_as(differs).flatten(1, 2)


def _head_seed(
    spec: Component,
    kernel: Kernel,
    trace: Trace,
    clean: Tensor,
    corrupted: Tensor,
    layer: int,
    cols: Tensor,
    prompts: Tensor,
    first_pos: int,
) -> Float[Tensor, "rows suffix d_model"]:
    """Block ``layer``'s output (positions ``first_pos`` on) with one head's z, q, k, v or pattern patched.

    Row ``r`` patches head ``heads[r]`` of prompt ``prompts[r]``, at position ``first_pos`` (by position)
    or at every position. The head's output is recomputed from the patched activation and the
    recorded corrupted ones, for the positions it can change (``first_pos`` on); the other heads
    keep their recorded outputs.
    """
    n_pos = trace.resid_pre.shape[2]
    heads = cols if not spec.by_pos else cols % kernel.n_heads if spec.axes == ("pos", "head") else cols // n_pos
    rows = torch.arange(len(prompts), device=cols.device)
    z = trace.z[layer][prompts, first_pos:].clone()  # [rows, suffix, head, d_head]
    if spec.kind == "z":
        if spec.by_pos:
            z[rows, 0, heads] = clean[layer][prompts, first_pos, heads]
        else:
            z[rows, :, heads] = clean[layer][prompts, first_pos:, heads]
        return kernel.finish_block(layer, trace.resid_pre[layer][prompts, first_pos:], z)
    patched = slice(first_pos, first_pos + 1 if spec.by_pos else None)  # the positions the patch overwrites
    if spec.kind == "pattern":  # [layer, batch, head, dest, src]
        pattern = corrupted[layer][prompts, heads].clone()  # [rows, dest, src]
        pattern[:, patched] = clean[layer][prompts, heads][:, patched]
        z[rows, :, heads] = pattern[:, first_pos:] @ trace.v[layer][prompts, :, heads]
    else:
        qkv = {which: getattr(trace, which)[layer][prompts, :, heads] for which in "qkv"}  # [rows, pos, d_head]
        qkv[spec.kind][:, patched] = clean[layer][prompts, :, heads][:, patched]
        z[rows, :, heads] = kernel.attention(qkv["q"][:, first_pos:, None], qkv["k"][:, :, None], qkv["v"][:, :, None])[
            :, :, 0
        ]
    return kernel.finish_block(layer, trace.resid_pre[layer][prompts, first_pos:], z)


def _seed(
    spec: Component,
    kernel: Kernel,
    trace: Trace,
    clean: Tensor,
    corrupted: Tensor,
    layer: int,
    cols: Tensor,
    prompts: Tensor,
    first_pos: int,
) -> Float[Tensor, "rows suffix d_model"]:
    """The residual suffix (positions ``first_pos`` on) with which patched rows enter their start block.

    ``resid_pre`` rows start at ``layer``; the others finish block ``layer`` here (its attention
    output patched, then the MLP) and start at ``layer + 1``.
    """
    if spec.kind != "resid":
        return _head_seed(spec, kernel, trace, clean, corrupted, layer, cols, prompts, first_pos)
    if spec.name == "resid_pre":
        suffix = trace.resid_pre[layer][prompts, first_pos:].clone()
        suffix[:, 0] = clean[layer][prompts, first_pos]
        return suffix
    suffix = trace.resid_pre[layer + 1][prompts, first_pos:].clone()
    if spec.name == "attn_out":
        mid = trace.resid_pre[layer][prompts, first_pos] + clean[layer][prompts, first_pos]
        suffix[:, 0] = mid + kernel.mlp_out(layer, mid)
    else:
        suffix[:, 0] = trace.resid_mid[layer][prompts, first_pos] + clean[layer][prompts, first_pos]
    return suffix


def _resume_patched(
    spec: Component, kernel: Kernel, trace: Trace, clean: Tensor, corrupted: Tensor, progress: bool
) -> tuple[Bool[Tensor, "layer cols batch"], Float[Tensor, "layer cols batch d_model"]]:
    """Run every patch that changes anything, batched by the first position it changes.

    Returns which (layer, col, prompt) patches were run and their final residual at the last position.
    """
    n_layers = kernel.n_layers
    differs, first = _patch_starts(spec, clean, corrupted, n_layers)
    n_cols, batch, n_pos = differs.shape[1], differs.shape[2], trace.resid_pre.shape[2]
    final = trace.resid_pre.new_zeros(n_layers, n_cols, batch, trace.resid_pre.shape[-1])
    shift = 0 if spec.name == "resid_pre" else 1  # the other components finish their block in _seed
    cells = differs.nonzero()  # [rows, 3]: layer, col, prompt
    starts = first[differs]
    for first_pos in progress_bar(starts.unique().tolist(), desc=f"fast patching {spec.name}", disable=not progress):
        group = cells[starts == first_pos]
        group = group[group[:, 0].argsort(stable=True)]
        for rows in group.split(max(1, _TOKENS_PER_CHUNK // (n_pos - first_pos))):
            layers, cols, prompts = rows.unbind(1)
            counts = torch.unique_consecutive(layers, return_counts=True)[1].tolist()
            seeds = [
                _seed(spec, kernel, trace, clean, corrupted, int(layer[0]), col, prompt, first_pos)
                for layer, col, prompt in zip(layers.split(counts), cols.split(counts), prompts.split(counts))
            ]
            final[layers, cols, prompts] = kernel.resume(trace, first_pos, layers + shift, prompts, torch.cat(seeds))
    return differs, final


class CorruptedRun:
    """The corrupted run as fast methods need it: by the model and by the kernel, checked against each other.

    The model's run gives the activations named ``names`` (to compare with the clean ones) and the
    logits that unpatched cells reuse; the kernel's :class:`Trace` gives the keys, values and residuals
    that patched runs resume from. Raises ``Unsupported`` when the kernel cannot run the model or
    does not reproduce its logits, or when ``metric`` reads more than the final position.
    """

    def __init__(self, model: Model, corrupted_tokens: Tensor, names: list[str], metric: Metric) -> None:
        reason = kernel_unsupported(model.cfg)
        if reason:
            raise Unsupported(f"the model is not a GPT-2-style transformer ({reason})")
        logits, self.cache = model.run_with_cache(
            corrupted_tokens, names_filter=lambda name: name in names or name == act_name("resid_pre", 0)
        )
        self.columns, self.evaluate = _final_position_evaluator(metric, logits)
        try:
            self.kernel = Kernel(model)
        except (KeyError, AttributeError, TypeError) as err:
            raise Unsupported(f"its weights are not laid out as GPT-2's ({type(err).__name__}: {err})") from None
        self.trace = self.kernel.trace(self.cache[act_name("resid_pre", 0)])
        base = logits[:, -1]
        self.base = base if self.columns is None else base.gather(-1, self.columns)
        error = (self.logits(self.trace.resid_pre[-1][:, -1]) - self.base).abs().max().item()
        if error > SELF_CHECK_RTOL * max(1.0, self.base.abs().max().item()):
            raise Unsupported(f"the fast kernel does not reproduce the model's logits (max difference {error:.2g})")

    def logits(self, final_resid: Float[Tensor, "rows d_model"], prompts: Tensor | None = None) -> Tensor:
        """The logits the metric reads, from final residuals (of ``prompts``, default all)."""
        columns = self.columns if self.columns is None or prompts is None else self.columns[prompts]
        return self.kernel.logits(final_resid, columns)

    def score(
        self, changed: Bool[Tensor, "cells batch"], final: Float[Tensor, "cells batch d_model"]
    ) -> Float[Tensor, " cells"]:
        """The metric of each cell: the corrupted logits, with those of the ``changed`` prompts recomputed."""
        results = torch.zeros(changed.shape[0])
        for cell, patched in enumerate(changed):
            logits = self.base.clone()
            if patched.any():
                logits[patched] = self.logits(final[cell, patched], patched)
            results[cell] = self.evaluate(logits)
        return results


def _fast(
    model: Model, corrupted_tokens: Tensor, clean_cache: Cache, metric: Metric, spec: Component, progress: bool
) -> Float[Tensor, "layer ..."]:
    names = [spec.hook(layer) for layer in range(model.cfg.n_layers)]
    with torch.no_grad():
        run = CorruptedRun(model, corrupted_tokens, names, metric)
        clean = torch.stack([clean_cache[name] for name in names])
        corrupted = torch.stack([run.cache[name] for name in names])
        differs, final = _resume_patched(spec, run.kernel, run.trace, clean, corrupted, progress)
        results = run.score(differs.flatten(0, 1), final.flatten(0, 1))
    return results.view(model.cfg.n_layers, *spec.sizes(model, corrupted_tokens.shape[1]))


def fast_patching(
    model: Model,
    corrupted_tokens: Int[Tensor, "batch pos"],
    clean_cache: Cache,
    metric: Metric,
    component: str = "resid_pre",
    progress: bool = True,
) -> Float[Tensor, "layer ..."]:
    """Exact activation patching with the reference loop's results and a fraction of its work.

    Same arguments and results as :func:`reference_patching` (every component of
    ``COMPONENTS``), to float rounding. What it leaves out:

    - patches whose clean activation equals the corrupted one (for IOI, everything before S2): the
      run is exactly the corrupted one, so its logits are reused;
    - layers before the patched one: a patched run resumes from the recorded corrupted run;
    - positions before the patched one: causal attention leaves them as in the corrupted run, so
      only the later positions are recomputed, with the earlier keys and values reused;
    - the last layer's other positions, and the unembedding of all but the final position (only the
      two answer columns for a ``PatchingMetric``);
    - one small pass per patch: all patches starting at one position run as one batch;
    - for a head's queries, keys, values or pattern, everything but that head's attention in the
      patched block: its other heads keep their recorded outputs.

    The metric must read the final position only (any function of ``logits[:, -1]``); other
    metrics, and models that are not GPT-2-style, fall back to the reference loop with a
    :class:`FastPatchingFallback` warning. The kernel runs the model's own processed weights and is
    checked against the model's corrupted logits on every call before its numbers are used.
    """
    spec = get_component(component)
    check_batch(corrupted_tokens, clean_cache, hook_name(component, 0))
    try:
        return _fast(model, corrupted_tokens, clean_cache, metric, spec, progress)
    except Unsupported as reason:
        warnings.warn(
            f"fast_patching: falling back to the reference loop because {reason}", FastPatchingFallback, stacklevel=2
        )
        return reference_patching(model, corrupted_tokens, clean_cache, metric, component, progress)
