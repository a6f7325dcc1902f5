"""Name the likely mistake behind a wrong result: the grader's diagnosis, and the notebooks' checks.

Pure functions on tensors: a learner's result is compared with the reference and with the results
that known mistakes produce (the caller computes those with ``patchlab``, or they are derived here
from the reference). The first match names the mistake; the message tells the learner what to fix
without giving the reference values away. The grader's hidden tests (``autograder.checks``) call
these on hidden prompt sets and models; an exercise notebook's local check calls them on its own
prompts (``residual_patching_problem``), so a learner reads the grader's words before handing in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable, NamedTuple

import torch
from torch import Tensor

from patchlab.patching import fast_patching

if TYPE_CHECKING:
    from transformer_lens import ActivationCache

    from patchlab.types import Cache, Model

# The tolerances of the grader's comparisons, and of the notebooks' checks. Logit differences are
# O(1-10) logits; the normalised metric is O(1) but divides by (clean - corrupted), which amplifies
# float32 rounding when that gap is small.
ATOL_LOGIT_DIFF = 1e-3
ATOL_METRIC = 1e-3
RTOL = 1e-4
ATOL_ACTIVATION = 1e-6  # a patched activation is a copy of cached values: equal up to rounding

# What each mistake looks like, told to the learner.
MESSAGES: dict[str, str] = {
    "transposed": (
        "Axes transposed: the result must be [n_layers, n_positions] (one row per layer, one column per "
        "position); yours is [n_positions, n_layers]. Store each value at results[layer, position]."
    ),
    "sign_flipped": (
        "Sign flipped: your values are the negatives of the expected ones. The logit difference is the "
        "correct answer's logit minus the incorrect one's: answer_tokens[:, 0] is correct, "
        "answer_tokens[:, 1] incorrect."
    ),
    "unnormalised": (
        "Not normalised: these are raw logit differences. Normalise them, "
        "(logit_diff - corrupted_logit_diff) / (clean_logit_diff - corrupted_logit_diff), so that the "
        "corrupted run scores 0 and the clean run 1 (use the metric you are given)."
    ),
    "normalised_backwards": (
        "Normalised the wrong way round: the clean run should score 1 and the corrupted run 0, yours does "
        "the opposite. Subtract the corrupted baseline and divide by (clean - corrupted)."
    ),
    "divided_by_clean": (
        "Only half normalised: you divided by the clean logit difference but did not subtract the "
        "corrupted baseline. Use (logit_diff - corrupted) / (clean - corrupted)."
    ),
    "wrong_direction": (
        "Patched the wrong way (corrupted into clean): you ran the clean prompts and patched in activations "
        "of the corrupted run. Cache the clean run, run the corrupted prompts, and patch the clean "
        "activations into them."
    ),
    "resid_mid": (
        "Wrong hook: you patched hook_resid_mid (the residual stream between attention and MLP). Patch "
        "blocks.{layer}.hook_resid_pre, the residual stream at the input of each layer."
    ),
    "resid_post": (
        "Wrong hook: you patched hook_resid_post (the output of each layer, i.e. the input of the next "
        "one). Patch blocks.{layer}.hook_resid_pre, the residual stream at the input of each layer."
    ),
    "off_by_one_layer": (
        "Off by one layer: your rows are right except at one end (or shifted by one layer). Loop over "
        "range(model.cfg.n_layers), patch blocks.{layer}.hook_resid_pre and store at results[layer, ...]."
    ),
    "off_by_one_position": (
        "Off by one position: your columns are right except at one end (or shifted by one position). "
        "Loop over every position, the last one included, and store at results[..., position]."
    ),
    "not_final_position": (
        "Wrong position: you read the logits at another position than the last. The prediction of the "
        "answer is the output at the final token: logits[:, -1]."
    ),
    "single_prompt": (
        "Only one prompt used: your value is that of the first prompt alone. Use the whole batch and "
        "take the mean over the prompts."
    ),
    "sum_not_mean": "Sum instead of mean: average over the prompts (.mean()), do not add them up.",
    "not_reduced": (
        "One value per prompt returned where a single number is expected: average over the batch (.mean())."
    ),
    "reduced_too_early": (
        "A single number returned where one value per prompt is expected: do not average over the batch "
        "here; return a tensor of shape [batch]."
    ),
    "broadcast_index": (
        "Indexing mistake: logits[:, -1, answer_tokens[:, 0]] picks every prompt's answer for every prompt "
        "([batch, batch]). Pick one answer per prompt, e.g. with .gather(-1, answer_tokens) or "
        "logits[torch.arange(batch), -1, answer_tokens[:, 0]]."
    ),
    "cache_mutated": (
        "The cached clean activations were modified in place: after your code ran, clean_cache held other "
        "values than before, so every later patch reads wrong 'clean' activations. Never write into "
        "clean_cache; write into the activation you are given and return it."
    ),
    "patched_all_positions": (
        "Patched every position: your hook replaced the whole activation with the clean one. Overwrite "
        "only the given position: activation[:, position] = clean[:, position]."
    ),
    "not_patched": (
        "Nothing patched: your hook returned the activation unchanged. Overwrite position `position` with "
        "the clean activation (clean_cache[hook.name]) and return the activation."
    ),
    "hard_coded_sizes": (
        "Right on the course model but wrong on a model of another shape: use the model's own sizes "
        "(model.cfg.n_layers, model.cfg.n_heads, model.cfg.d_model, tokens.shape[1]) instead of numbers "
        "written into your code."
    ),
    "head_transposed_by_pos": (
        "Axes in the wrong order: the result must be [n_layers, n_positions, n_heads] (TransformerLens's "
        "order, as in the chapter); yours is [n_layers, n_heads, n_positions]. Store each value at "
        "results[layer, position, head]."
    ),
    "head_transposed": (
        "Axes transposed: the result must be [n_layers, n_heads] (one row per layer, one column per head); "
        "yours is [n_heads, n_layers]. Store each value at results[layer, head]."
    ),
    "wrong_head_axis": (
        "Wrong head axis: you indexed another axis of the activation than the heads'. In hook_z, hook_q, "
        "hook_k and hook_v, [batch, pos, head_index, d_head], the head is axis 2 (the last axis is d_head); "
        "in hook_pattern, [batch, head_index, dest_pos, src_pos], it is axis 1."
    ),
    "patched_all_heads": (
        "Patched every head of the layer: your patch overwrote all heads at once (the whole attention "
        "layer), so every head of a layer gets the same value. Overwrite only head `head`: index the head "
        "axis too."
    ),
    "head_all_positions": (
        "Patched the head at every position: your hook replaced head `head` everywhere. Overwrite it only "
        "at `position`: z[:, position, head] = clean[:, position, head]."
    ),
    "head_not_patched": (
        "Nothing patched: your hook returned the activation unchanged. Overwrite head `head` at `position` "
        "with the clean activation (clean_cache[hook.name]) and return the activation."
    ),
    "head_off_by_one_layer": (
        "Off by one layer: your rows are right except at one end (or shifted by one layer). Loop over "
        "range(model.cfg.n_layers), patch blocks.{layer}.attn.hook_... of that layer and store at "
        "results[layer, ...]."
    ),
    "patched_head_output": (
        "Patched the heads' output (hook_z) instead of the input `which` names: patch "
        "blocks.{layer}.attn.hook_{which} (hook_q, hook_k, hook_v or hook_pattern)."
    ),
    "wrong_input": (
        "Patched another input of the heads than `which` names (e.g. the keys when asked for the queries): "
        "patch blocks.{layer}.attn.hook_{which}, with `which` one of 'q', 'k', 'v', 'pattern'."
    ),
    "top_heads_signed": (
        "Ranked by signed value: a head whose patch lowers the metric matters as much as one that raises "
        "it. Rank the heads by the magnitude of their effect, results.abs()."
    ),
    "top_heads_swapped": (
        "(head, layer) pairs returned: return each head as (layer, head), the layer first, as "
        "results[layer, head] indexes it."
    ),
    "attribution_backwards": (
        "Difference taken the wrong way round: your estimates are the mirror image of the expected ones "
        "about the corrupted run's metric. Attribution patching moves from the corrupted run towards the "
        "clean one: multiply the gradient by (clean activation - corrupted activation)."
    ),
    "attribution_grad_at_clean": (
        "Gradient taken at the clean run: the first-order expansion is around the corrupted run, the point "
        "patching starts from. Run the corrupted prompts with gradients, differentiate the metric there, "
        "and use the clean run only for its cached activations."
    ),
    "attribution_not_summed_d_model": (
        "Not summed over d_model: your result keeps one value per residual-stream dimension. Patching a "
        "position replaces its whole vector, so sum (clean - corrupted) * gradient over the last axis "
        "(and over the prompts) to get one number per layer and position."
    ),
    "attribution_not_summed_positions": (
        "Not summed over positions: your result keeps one value per position (a head at one position). "
        "Here a head is patched at every position at once: sum over the positions too, for one number per "
        "layer and head."
    ),
    "attribution_not_summed_d_head": (
        "Not summed over d_head: your result keeps one value per dimension of the head's output. Sum "
        "(clean - corrupted) * gradient over d_head (and over prompts and positions) for one number per "
        "layer and head."
    ),
    "attribution_batch_mean": (
        "Averaged over the prompts instead of summed: the metric is already a mean over prompts, so each "
        "prompt's gradient carries its 1/n. Sum the terms over the batch axis."
    ),
    "attribution_exact": (
        "Exact patching, not attribution patching: your values are those of patching each cell with a "
        "forward pass. This exercise asks for the first-order estimate, from one forward and one backward "
        "pass of the corrupted run."
    ),
    "path_not_frozen": (
        "Other heads not frozen: this is plain activation patching of each head's output, which lets the "
        "sender's effect flow through every later head too. In the sender's run, set the z of every other "
        "head, in every layer, to its output in the corrupted run (corrupted_cache), and give only the "
        "sender its clean z."
    ),
    "path_mlps_frozen": (
        "MLPs frozen too: you kept the MLP outputs at their corrupted values, which cuts the paths from the "
        "sender through the MLPs. Freeze only the attention heads (hook_z); let the MLPs (and LayerNorms) be "
        "recomputed."
    ),
    "path_freeze_short": (
        "Not every layer frozen: the heads of the last layer were recomputed, so the sender's effect also "
        "reaches the output through them. Freeze the heads of every layer, range(model.cfg.n_layers)."
    ),
    "path_wrong_direction": (
        "Patched the wrong way: you ran the clean prompts, froze the heads at their clean outputs and gave "
        "the sender its corrupted z. Run the corrupted prompts, freeze every other head at its corrupted "
        "output, and give the sender its z from the clean run."
    ),
    "path_sender_not_patched": (
        "Every sender scores 0, the corrupted run's value: the sender never got its clean output. Overwrite "
        "the sender's z, z[:, :, head], with the clean run's (clean_cache), after freezing the other heads."
    ),
    "path_receivers_not_patched": (
        "These are the frozen runs' own metrics, i.e. path patching to the final residual stream: the "
        "receivers were never patched. Record the receivers' inputs in the frozen run, then run the "
        "corrupted prompts again with nothing frozen, only those inputs patched in, and take its metric."
    ),
    "path_wrong_receiver_input": (
        "Patched another input of the receivers than `receiver_input` names (e.g. their keys when asked "
        "for their queries): record and patch blocks.{layer}.attn.hook_{receiver_input}, only the "
        "receiver heads' slice of it."
    ),
    "uses_globals": (
        "Right on the notebook's prompts but wrong on a new prompt set: your function must use only its "
        "arguments, not notebook variables (data, clean_cache, metric, ...) or numbers copied from an "
        "earlier run."
    ),
}

# A candidate: the result a mistake would give, or a function computing it (run only when needed).
Candidate = Tensor | Callable[[], Tensor]


class Diagnosis(NamedTuple):
    """Why a result is wrong: ``name`` is a key of ``MESSAGES``, or ``"mismatch"`` when no known
    mistake explains it."""

    name: str
    message: str


def _as_float(value: Tensor) -> Tensor:
    return torch.as_tensor(value).detach().float().cpu()


def close(learner: Tensor, expected: Tensor, atol: float, rtol: float) -> bool:
    """Same shape and all values within ``atol + rtol * |expected|`` (NaN never matches)."""
    learner, expected = _as_float(learner), _as_float(expected)
    return learner.shape == expected.shape and bool(torch.allclose(learner, expected, atol=atol, rtol=rtol))


def matches(learner: Tensor, candidates: Iterable[tuple[str, Candidate]], atol: float, rtol: float) -> list[str]:
    """The names of all candidate mistakes whose result the learner's matches, in order."""
    found = []
    for name, candidate in candidates:
        value = candidate() if callable(candidate) else candidate
        if close(learner, value, atol, rtol):
            found.append(name)
    return found


def off_by_one(learner: Tensor, reference: Tensor, axis: int, atol: float, rtol: float) -> bool:
    """True when ``learner`` is ``reference`` shifted by one index along ``axis``, or is right
    everywhere but at the last index (a loop one step short)."""
    learner, reference = _as_float(learner), _as_float(reference)
    if learner.shape != reference.shape or reference.ndim <= axis or reference.shape[axis] < 2:
        return False
    if close(learner, reference, atol, rtol):
        return False
    got, ref = learner.movedim(axis, 0), reference.movedim(axis, 0)
    pairs = [(got[1:], ref[:-1]), (got[:-1], ref[1:]), (got[:-1], ref[:-1])]
    return any(close(a, b, atol, rtol) for a, b in pairs)


def grid_mistakes(reference: Tensor, clean_logit_diff: float, corrupted_logit_diff: float) -> list[tuple[str, Tensor]]:
    """What a [layer, position] grid of the normalised metric looks like after the mistakes that
    are pure functions of the right one: transposed, sign flipped, not or wrongly normalised."""
    reference = _as_float(reference)
    gap = clean_logit_diff - corrupted_logit_diff
    return [
        ("transposed", reference.transpose(0, 1)),
        ("sign_flipped", -reference),
        ("unnormalised", reference * gap + corrupted_logit_diff),
        ("normalised_backwards", 1 - reference),
    ]


def _spans(indices: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2 and 5'."""
    spans, start = [], None
    for i, value in enumerate(indices):
        if start is None:
            start = value
        if i + 1 == len(indices) or indices[i + 1] != value + 1:
            spans.append(str(start) if start == value else f"{start}-{value}")
            start = None
    return ", ".join(spans[:-1]) + (" and " if len(spans) > 1 else "") + spans[-1]


def mismatch_message(learner: Tensor, reference: Tensor, axis_names: tuple[str, ...] = (), atol: float = 1e-3) -> str:
    """The fallback, in words: the shape, or along each axis where the values are off and by how
    much at most; no reference value is given away."""
    learner, reference = _as_float(learner), _as_float(reference)
    if learner.shape != reference.shape:
        names = f" [{', '.join(axis_names)}]" if axis_names else ""
        return f"Wrong shape: expected {tuple(reference.shape)}{names}, got {tuple(learner.shape)}."
    if not torch.isfinite(learner).all():
        return "Your result contains NaN or infinite values."
    diff = (learner - reference).abs()
    if reference.ndim == 0:
        return f"Wrong value (off by {diff.item():.3g}): re-read the task and the hint."
    wrong = diff > atol
    if not wrong.any():
        return f"Values off by up to {diff.max().item():.3g}, just outside the tolerance: re-read the task."
    where = []
    for axis in range(reference.ndim):
        others = tuple(a for a in range(reference.ndim) if a != axis)
        bad = wrong.any(dim=others) if others else wrong
        indices = [int(i) for i in torch.nonzero(bad).flatten()]
        name = axis_names[axis] if axis < len(axis_names) else f"axis {axis}"
        plural = name + ("s" if len(indices) > 1 else "")
        where.append(f"{plural} {_spans(indices)}" if len(indices) < bad.numel() else f"every {name}")
    return (
        f"Wrong values at {'; '.join(where)} ({int(wrong.sum())} of {diff.numel()} entries, off by up to "
        f"{diff.max().item():.3g}); the rest are right. Re-read the task and the hint."
    )


def diagnose(
    learner: Tensor,
    reference: Tensor,
    candidates: Iterable[tuple[str, Candidate]] = (),
    off_by_one_axes: dict[int, str] | None = None,
    axis_names: tuple[str, ...] = (),
    atol: float = 1e-4,
    rtol: float = 1e-4,
    messages: dict[str, str] = MESSAGES,
) -> Diagnosis | None:
    """None if ``learner`` matches ``reference``; else the mistakes that explain it (every one of
    ``candidates`` it matches, else off by one along ``off_by_one_axes`` {axis: mistake name}),
    else a ``"mismatch"`` diagnosis saying where the values differ. When two mistakes give the same
    numbers (on this model and these prompts) both are named: ``"a+b"``, "... Or: ...". The
    mistakes' names are keys of ``messages``."""
    if close(learner, reference, atol, rtol):
        return None
    names = list(dict.fromkeys(matches(learner, candidates, atol, rtol)))  # a mistake may have several forms
    if not names:
        names = [
            mistake
            for axis, mistake in (off_by_one_axes or {}).items()
            if off_by_one(learner, reference, axis, atol, rtol)
        ][:1]
    if not names:
        return Diagnosis("mismatch", mismatch_message(learner, reference, axis_names, atol))
    return Diagnosis("+".join(names), " Or: ".join(messages[name] for name in names))


# The residual-stream patching grid's known mistakes computed by patching (the others derive from
# the right grid): corrupted patched into clean, and the wrong hook.
RESIDUAL_VARIANTS = ("wrong_direction", "resid_mid", "resid_post")


def residual_variant(
    model: Model,
    clean_tokens: Tensor,
    corrupted_tokens: Tensor,
    clean_cache: ActivationCache,
    corrupted_cache: Cache,
    metric: Callable[[Tensor], Tensor],
    variant: str = "reference",
) -> Tensor:
    """The ``[n_layers, n_positions]`` grid of patching ``resid_pre`` from clean into corrupted
    (``"reference"``), or what a mistake of ``RESIDUAL_VARIANTS`` gives instead."""
    if variant == "reference":  # exact patching: the reference loop's numbers (tests/unit/test_fast_patching.py)
        return fast_patching(model, corrupted_tokens, clean_cache, metric, progress=False)
    if variant == "wrong_direction":
        return fast_patching(model, clean_tokens, corrupted_cache, metric, progress=False)
    from transformer_lens.patching import generic_activation_patch, layer_pos_patch_setter

    return generic_activation_patch(
        model,
        corrupted_tokens,
        clean_cache,
        metric,
        patch_setter=layer_pos_patch_setter,
        activation_name=variant,
        index_axis_names=("layer", "pos"),
    )


def residual_mistakes(
    reference: Tensor, variant: Callable[[str], Tensor], clean_logit_diff: float, corrupted_logit_diff: float
) -> tuple[list[tuple[str, Candidate]], dict[str, Any]]:
    """The candidate mistakes of a residual-patching grid (``variant(name)`` computes those of
    ``RESIDUAL_VARIANTS``, when needed) and the options of :func:`diagnose` for it."""
    transposed, *metric_mistakes = grid_mistakes(reference, clean_logit_diff, corrupted_logit_diff)
    computed = [(name, lambda name=name: variant(name)) for name in RESIDUAL_VARIANTS]
    return [transposed, *computed, *metric_mistakes], {
        "off_by_one_axes": {0: "off_by_one_layer", 1: "off_by_one_position"},
        "axis_names": ("layer", "position"),
        "atol": ATOL_METRIC,
    }


def residual_patching_problem(
    results: Tensor, model: Model, clean_tokens: Tensor, corrupted_tokens: Tensor, metric: Any
) -> str | None:
    """Exercise 6.2's local check: None when ``results`` is the course library's residual-patching
    grid of these prompts (``metric`` a :func:`patchlab.metrics.patching_metric`); else what the
    grader would say, naming the known mistake that explains it."""
    model.reset_hooks()
    with torch.no_grad():
        _, clean_cache = model.run_with_cache(clean_tokens)
        _, corrupted_cache = model.run_with_cache(corrupted_tokens)

        def variant(name: str) -> Tensor:
            return _as_float(
                residual_variant(model, clean_tokens, corrupted_tokens, clean_cache, corrupted_cache, metric, name)
            )

        reference = variant("reference")
        candidates, options = residual_mistakes(
            reference, variant, metric.clean_logit_diff, metric.corrupted_logit_diff
        )
        learner = _as_float(results)
        if learner.shape != reference.shape:  # only a transposition changes the grid's shape
            candidates = [c for c in candidates if c[0] == "transposed"]
        diagnosis = diagnose(learner, reference, candidates, rtol=RTOL, **options)
    return None if diagnosis is None else diagnosis.message
