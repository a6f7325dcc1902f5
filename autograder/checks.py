"""The trusted half of the hidden tests: judge what a learner's functions returned.

:mod:`autograder.harvest` ran each learner function, inside the sandbox, on the graded cases: two
models of different shape (the course model and ``ioi-mini-reshaped``: 5 layers, 8 heads, width 256;
with ``--model gpt2-small``, GPT-2 small and the course model), each with the classic prompts (the
second model their first pair) and a second prompt set (other names, another template, another
length). Here, outside the sandbox, the same inputs are rebuilt, the references computed with
``patchlab`` (once per grading run), and each
returned value compared with its reference within explicit tolerances. ``judge`` returns None when
every case is right, else the message the learner sees: a known mistake is named only when it
explains every case that was checked; otherwise the message says in words where the values are off.
"""

from __future__ import annotations

import json
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from patchlab.check import (
    ATOL_ACTIVATION, ATOL_LOGIT_DIFF, ATOL_METRIC, MESSAGES, RTOL, Candidate, diagnose, grid_mistakes, matches,
    mismatch_message, residual_mistakes, residual_variant,
)
from autograder.harvest import (
    ATTRIBUTION, HEAD_INPUTS, Models, PromptSet, cases, head_map_values, heatmap_values, path_receivers, run_case,
)
from patchlab.metrics import logit_diff, normalise
from patchlab.patching import attribution_patching, fast_path_patching, fast_patching, hook_name
from patchlab.patching.attribution import attribution_terms
from patchlab.patching.components import patch_position
from patchlab.patching.paths import RECEIVER_INPUTS


# What each check's learner function is, for the messages.
RETURNS = {
    "check_logit_diff_per_prompt": "a tensor of shape [batch]",
    "check_mean_logit_diff": "a 0-dimensional tensor",
    "check_normalised_metric": "a 0-dimensional tensor",
    "check_patch_hook": "the patched activation, a tensor of shape [batch, pos, d_model]",
    "check_residual_patching": "a tensor of shape [n_layers, n_positions]",
    "check_heatmap": "a plotly Figure",
    "check_head_hook": "the patched activation, a tensor of shape [batch, pos, head_index, d_head]",
    "check_head_by_pos": "a tensor of shape [n_layers, n_positions, n_heads]",
    "check_head_inputs": "a tensor of shape [n_layers, n_heads]",
    "check_top_heads": "a list of k (layer, head) pairs",
    "check_attribution_resid": "a tensor of shape [n_layers, n_positions]",
    "check_attribution_heads": "a tensor of shape [n_layers, n_heads]",
    "check_path_to_logits": "a tensor of shape [n_layers, n_heads]",
    "check_path_to_receivers": "a tensor of shape [n_layers, n_heads]",
}
# The checks of patching grids (their candidate mistakes other than a transposition keep the shape).
GRIDS = ("check_residual_patching", "check_head_by_pos", "check_head_inputs", "check_path_to_logits",
         "check_path_to_receivers")
# Checks whose cases exercise separate branches of the learner's code (``which`` = q, k, v, pattern):
# a mistake is named when it explains every wrong case; the right ones need not show it (e.g. the
# head indexed on axis 2 is right for q, k, v and wrong for the pattern only).
SEPARATE_BRANCHES = ("check_head_inputs",)
# The types each check accepts back (a list of pairs is read as a [k, 2] table).
ACCEPTED = {"check_top_heads": ("Tensor", "list", "tuple", "ndarray")}


def loop_patching(model: Any, tokens: Tensor, source_cache: Any, metric: Callable[[Tensor], Tensor], hook: str,
                  sizes: tuple[int, ...], where: Callable[..., tuple]) -> Tensor:
    """A patching loop as a learner may write it, right or not: for every layer and every index of
    ``sizes``, run ``tokens`` with ``activation[where(*index)]`` taken from ``source_cache`` at
    ``hook.format(layer=...)``; the metric of each run, ``[n_layers, *sizes]``."""
    import itertools

    results = torch.zeros(model.cfg.n_layers, *sizes)
    for layer, *index in itertools.product(range(model.cfg.n_layers), *(range(n) for n in sizes)):
        name, selector = hook.format(layer=layer), where(*index)

        def patch(activation: Tensor, hook: Any) -> Tensor:
            activation[selector] = source_cache[name][selector]
            return activation

        results[(layer, *index)] = metric(model.run_with_hooks(tokens, fwd_hooks=[(name, patch)])).item()
    return results


def path_loop(model: Any, tokens: Tensor, base_cache: Any, source_cache: Any, metric: Callable[[Tensor], Tensor],
              receivers: list[tuple[int, int]] | None = None, receiver_input: str = "q", freeze_heads: bool = True,
              freeze_mlps: bool = False, frozen_layers: int | None = None) -> Tensor:
    """A path-patching loop as a learner may write it, right or not: for every sender head, run ``tokens``
    with the sender's ``z`` from ``source_cache`` and, when ``freeze_heads``, the other heads of layers
    ``[:frozen_layers]`` (all by default; -1: all but the last) at ``base_cache``'s output, the MLPs too
    when ``freeze_mlps``; the metric of that run or, with ``receivers``, of a fresh run of ``tokens``
    given the receivers' ``receiver_input`` of that run. ``[n_layers, n_heads]``."""
    import itertools

    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    frozen = range(n_layers)[:frozen_layers]
    inputs = [f"blocks.{layer}.attn.hook_{receiver_input}" for layer, _ in receivers or []]
    results = torch.zeros(n_layers, n_heads)
    for sender_layer, sender_head in itertools.product(range(n_layers), range(n_heads)):

        def patch(z: Tensor, hook: Any, layer: int) -> Tensor:
            if freeze_heads and layer in frozen:
                z[:] = base_cache[hook.name]
            if layer == sender_layer:
                z[:, :, sender_head] = source_cache[hook.name][:, :, sender_head]
            return z

        hooks: list[tuple[str, Callable]] = [
            (hook_name("head_out", layer), lambda z, hook, layer=layer: patch(z, hook, layer)) for layer in range(n_layers)]
        if freeze_mlps:
            hooks += [(f"blocks.{layer}.hook_mlp_out", lambda out, hook: base_cache[hook.name].clone())
                      for layer in range(n_layers)]
        if receivers is None:
            results[sender_layer, sender_head] = metric(model.run_with_hooks(tokens, fwd_hooks=hooks)).item()
            continue
        with model.hooks(fwd_hooks=hooks):
            _, recorded = model.run_with_cache(tokens, names_filter=lambda name: name in inputs)

        def receive(activation: Tensor, hook: Any, head: int) -> Tensor:
            activation[:, :, head] = recorded[hook.name][:, :, head]
            return activation

        logits = model.run_with_hooks(tokens, fwd_hooks=[
            (name, lambda a, hook, head=head: receive(a, hook, head)) for name, (_, head) in zip(inputs, receivers)])
        results[sender_layer, sender_head] = metric(logits).item()
    return results


class References:
    """Trusted references on the grading models, computed once per grading run and kept."""

    def __init__(self, model_names: list[str], device: str = "cpu") -> None:
        self.models = Models(model_names, device)
        self._cache: dict[tuple, Tensor] = {}

    def prompt_set(self, key: dict[str, Any]) -> PromptSet:
        return self.models.prompt_sets(key["model"])[key["set"]]

    def cached(self, what: tuple, compute: Callable[[], Tensor]) -> Tensor:
        if what not in self._cache:
            self.models.model(what[0]).reset_hooks()
            with torch.no_grad():
                self._cache[what] = compute().detach().float().cpu()
        return self._cache[what]

    def grid(self, key: dict[str, Any], variant: str = "reference") -> Tensor:
        """The resid_pre patching grid of a prompt set, or what a known mistake gives."""
        ps = self.prompt_set(key)

        return self.cached((key["model"], key["set"], variant), lambda: residual_variant(
            ps.model, ps.data.clean_tokens, ps.data.corrupted_tokens, ps.clean_cache, ps.corrupted_cache, ps.metric,
            variant))

    def head_grid(self, key: dict[str, Any], component: str, variant: str = "reference") -> Tensor:
        """A head-patching result (``head_out_by_pos``, ``head_q``, ...) of a prompt set, or what a
        known mistake gives: ``wrong_direction``, ``all_heads`` (every head of the layer at once),
        ``head_axis`` (the index taken on the wrong axis of the activation)."""
        ps = self.prompt_set(key)
        model, n_heads, n_pos = ps.model, ps.model.cfg.n_heads, ps.data.clean_tokens.shape[1]
        kind = component.removeprefix("head_").removesuffix("_by_pos")
        hook = f"blocks.{{layer}}.attn.hook_{'z' if kind == 'out' else kind}"
        by_pos = component.endswith("_by_pos")
        run = (ps.data.corrupted_tokens, ps.clean_cache, ps.metric)

        def compute() -> Tensor:
            # patchlab's fast exact patching: reference_patching's numbers (tests/test_fast_patching.py), in
            # a fraction of the ~50 ms per forward pass that a loop over heads and positions costs.
            if variant == "reference":
                return fast_patching(model, *run, component, progress=False)
            if variant == "wrong_direction":
                return fast_patching(model, ps.data.clean_tokens, ps.corrupted_cache, ps.metric, component,
                                     progress=False)
            if variant == "all_heads":  # [n_layers, n_pos] or [n_layers], spread over the heads
                if by_pos:
                    grid = loop_patching(model, *run, hook, (n_pos,), lambda p: (slice(None), p))
                    return grid[:, :, None].expand(-1, -1, n_heads).clone()
                grid = loop_patching(model, *run, hook, (), lambda: (slice(None),))
                return grid[:, None].expand(-1, n_heads).clone()
            if variant == "head_axis":  # z, q, k, v: d_head (dim 3); pattern: the destination (dim 2)
                if by_pos:
                    return loop_patching(model, *run, hook, (n_pos, n_heads),
                                         lambda p, h: (slice(None), p, slice(None), h))
                axis = 2 if kind == "pattern" else 3
                return loop_patching(model, *run, hook, (n_heads,), lambda h: (slice(None),) * axis + (h,))
            raise ValueError(variant)
        return self.cached((key["model"], key["set"], component, variant), compute)

    def path_grid(self, key: dict[str, Any], variant: str = "reference") -> Tensor:
        """Path patching of every sender head to the final residual stream (a case without
        ``receiver_input``) or to ``path_receivers``' input ``receiver_input``, or what a known mistake
        gives: ``wrong_direction``, ``not_frozen`` (plain head patching), ``mlps_frozen``, ``freeze_short``
        (the last layer's heads not frozen), ``to_logits`` (the frozen run's metric, no receivers), or
        another receiver input (``q``, ``k``, ``v``)."""
        ps = self.prompt_set(key)
        which = key.get("receiver_input")
        receivers = None if which is None else path_receivers(ps.model)
        tokens, corrupted = ps.data.corrupted_tokens, ps.corrupted_cache

        def fast(tokens: Tensor, source: Any, receivers: list | None, which: str) -> Tensor:
            return fast_path_patching(ps.model, tokens, source, ps.metric, receivers, which or "q", progress=False)

        def compute() -> Tensor:
            if variant == "reference":
                return fast(tokens, ps.clean_cache, receivers, which)
            if variant == "wrong_direction":
                return fast(ps.data.clean_tokens, corrupted, receivers, which)
            if variant == "to_logits":
                return fast(tokens, ps.clean_cache, None, which)
            if variant in RECEIVER_INPUTS:
                return fast(tokens, ps.clean_cache, receivers, variant)
            if variant == "not_frozen" and receivers is None:
                return fast_patching(ps.model, tokens, ps.clean_cache, ps.metric, "head_out", progress=False)
            options = {"not_frozen": {"freeze_heads": False}, "mlps_frozen": {"freeze_mlps": True},
                       "freeze_short": {"frozen_layers": -1}}[variant]
            return path_loop(ps.model, tokens, corrupted, ps.clean_cache, ps.metric, receivers, which or "q", **options)
        return self.cached((key["model"], key["set"], "path", which, variant), compute)


    def attribution(self, key: dict[str, Any], component: str, variant: str = "reference") -> Tensor:
        """Attribution patching of ``resid_pre`` or ``head_out`` on a prompt set, or what a known mistake
        gives: ``grad_at_clean`` (the expansion around the clean run's gradient), ``terms`` (the
        per-entry terms summed over the batch only: ``[n_layers, *activation axes]``) or ``exact``."""
        ps = self.prompt_set(key)
        model, metric = ps.model, ps.metric

        def compute() -> Tensor:
            if variant == "reference":
                return attribution_patching(model, ps.data.corrupted_tokens, ps.clean_cache, metric, component,
                                            progress=False)
            if variant == "grad_at_clean":  # metric(corrupted) + (clean - corrupted) · gradient at the clean run
                from_clean = attribution_patching(model, ps.data.clean_tokens, ps.corrupted_cache, metric,
                                                  component, progress=False)  # metric(clean) - that term
                return metric(ps.corrupted_logits) + metric(ps.clean_logits) - from_clean
            if variant == "terms":
                value, terms = attribution_terms(model, ps.data.corrupted_tokens, ps.clean_cache, metric, component)
                return value + terms.sum(dim=1)
            if variant == "exact":
                return fast_patching(model, ps.data.corrupted_tokens, ps.clean_cache, metric, component,
                                     progress=False)
            raise ValueError(variant)
        return self.cached((key["model"], key["set"], "attribution", component, variant), compute)


def decode(record: dict[str, Any], check: str) -> tuple[Tensor | None, str | None]:
    """The value a learner function returned, as a float tensor, or the message saying what is wrong
    with it (an exception, None, the wrong type)."""
    expected = RETURNS[check]
    if "error" in record:
        error = str(record["error"])
        if error == "missing":
            return None, "the function is not defined: run the cell that defines it (and keep its name)."
        if error == "NotImplementedError":
            return None, "not implemented yet: replace `raise NotImplementedError()` with your code."
        return None, f"it raised {error}"
    kind = record.get("type")
    if kind == "None":
        return None, f"it returned None: did you forget the `return` statement? It must return {expected}."
    if kind not in ACCEPTED.get(check, ("Tensor",)) or "values" not in record:
        return None, f"it must return {expected}, not a {kind}" + (
            f" ({record['repr']})." if kind in ACCEPTED.get(check, ()) and "repr" in record else ".")
    try:
        values = np.asarray(record["values"], dtype=float).reshape(record["shape"])
    except (KeyError, TypeError, ValueError):
        return None, "its result could not be read back."
    return torch.from_numpy(values).float(), None


def _expected(check: str, key: dict[str, Any], refs: References) -> tuple[Tensor, list[tuple[str, Candidate]], dict]:
    """The reference for one case, the results of the known mistakes, and diagnose() options."""
    ps = refs.prompt_set(key)
    answers = ps.data.answer_tokens
    if check in ("check_logit_diff_per_prompt", "check_mean_logit_diff", "check_normalised_metric"):
        logits = ps.logits(key["logits"])
        per_prompt = logit_diff(logits, answers, per_prompt=True).cpu()
        final = logits[:, -1].cpu()
        second_to_last = lambda: logit_diff(logits[:, :-1], answers, per_prompt=True).cpu()  # noqa: E731
        if check == "check_logit_diff_per_prompt":
            return per_prompt, [
                ("sign_flipped", -per_prompt), ("not_final_position", second_to_last),
                ("reduced_too_early", per_prompt.mean()), ("single_prompt", per_prompt[0]),
                ("broadcast_index", final[:, answers[:, 0].cpu()] - final[:, answers[:, 1].cpu()]),
            ], {"axis_names": ("prompt",), "atol": ATOL_LOGIT_DIFF}
        if check == "check_mean_logit_diff":
            return per_prompt.mean(), [
                ("sign_flipped", -per_prompt.mean()), ("single_prompt", per_prompt[0]),
                ("sum_not_mean", per_prompt.sum()), ("not_reduced", per_prompt),
                ("not_final_position", lambda: second_to_last().mean()),
            ], {"atol": ATOL_LOGIT_DIFF}
        clean, corrupted = ps.clean_logit_diff, ps.corrupted_logit_diff
        raw = per_prompt.mean()
        reference = normalise(raw, clean, corrupted)
        return reference, [
            ("unnormalised", raw), ("normalised_backwards", 1 - reference), ("sign_flipped", -reference),
            ("divided_by_clean", raw / clean), ("single_prompt", normalise(per_prompt[0], clean, corrupted)),
            ("not_reduced", normalise(per_prompt, clean, corrupted)),
        ], {"atol": ATOL_METRIC}
    if check == "check_patch_hook":
        name, position = hook_name("resid_pre", key["layer"]), key["position"]
        clean, corrupted = ps.clean_cache[name].cpu(), ps.corrupted_cache[name].cpu()
        candidates: list[tuple[str, Candidate]] = [
            ("wrong_direction", patch_position(clean.clone(), corrupted, position)),
            ("patched_all_positions", clean), ("not_patched", corrupted),
        ]
        candidates += [("off_by_one_position", patch_position(corrupted.clone(), clean, p))
                       for p in (position - 1, position + 1) if 0 <= p < corrupted.shape[1]]
        return patch_position(corrupted.clone(), clean, position), candidates, {"atol": ATOL_ACTIVATION}
    if check == "check_head_hook":
        name, head, position = hook_name("head_out", key["layer"]), key["head"], key["position"]
        clean, corrupted = ps.clean_cache[name].cpu(), ps.corrupted_cache[name].cpu()

        def patched(base: Tensor, source: Tensor, *where: Any) -> Tensor:
            base = base.clone()
            base[where] = source[where]
            return base

        every = slice(None)
        return patched(corrupted, clean, every, position, head), [
            ("wrong_direction", patched(clean, corrupted, every, position, head)),
            ("wrong_head_axis", patched(corrupted, clean, every, position, every, head)),
            ("patched_all_heads", patched(corrupted, clean, every, position)),
            ("head_all_positions", patched(corrupted, clean, every, every, head)),
            ("head_not_patched", corrupted),
        ], {"atol": ATOL_ACTIVATION}
    if check == "check_top_heads":
        values = head_map_values(ps.model.cfg.n_layers, ps.model.cfg.n_heads, key["set"])
        n_heads, k = values.shape[1], key["k"]

        def pairs(flat: Tensor) -> Tensor:
            return torch.stack([flat // n_heads, flat % n_heads], dim=1).float()

        reference = pairs(values.flatten().abs().argsort(descending=True)[:k])
        return reference, [
            ("top_heads_signed", pairs(values.flatten().argsort(descending=True)[:k])),
            ("top_heads_swapped", reference.flip(1)),
        ], {"atol": 0.0, "axis_names": ("rank", "(layer, head)")}
    if check in ("check_head_by_pos", "check_head_inputs"):
        component = "head_out_by_pos" if check == "check_head_by_pos" else f"head_{key['which']}"
        reference = refs.head_grid(key, component)
        _, *metric_mistakes = grid_mistakes(reference, ps.clean_logit_diff, ps.corrupted_logit_diff)
        mistakes: list[tuple[str, Candidate]] = [
            ("head_transposed_by_pos", reference.permute(0, 2, 1)) if check == "check_head_by_pos" else
            ("head_transposed", reference.T),
            ("wrong_direction", lambda: refs.head_grid(key, component, "wrong_direction")),
            ("patched_all_heads", lambda: refs.head_grid(key, component, "all_heads")),
            ("wrong_head_axis", lambda: refs.head_grid(key, component, "head_axis")),
        ]
        # A loop that skips the first or the last layer (named even where that layer's heads do nothing).
        for skipped in (0, -1):
            short = reference.clone()
            short[skipped] = 0
            mistakes.append(("head_off_by_one_layer", short))
        if check == "check_head_inputs":
            mistakes += [("patched_head_output", lambda: refs.head_grid(key, "head_out"))]
            mistakes += [("wrong_input", lambda other=other: refs.head_grid(key, f"head_{other}"))
                         for other in HEAD_INPUTS if other != key["which"]]
        axis_names = ("layer", "position", "head") if check == "check_head_by_pos" else ("layer", "head")
        return reference, mistakes + metric_mistakes, {
            "off_by_one_axes": {0: "head_off_by_one_layer"}, "axis_names": axis_names, "atol": ATOL_METRIC}
    if check in ATTRIBUTION:
        component = "resid_pre" if check == "check_attribution_resid" else "head_out"
        reference = refs.attribution(key, component)
        start = ps.metric(ps.corrupted_logits).item()  # the corrupted run's metric, where the expansion starts
        n_prompts = ps.data.clean_tokens.shape[0]
        terms = lambda: refs.attribution(key, component, "terms")  # noqa: E731  [layer, pos, d_model] / [layer, pos, head, d_head]
        mistakes = [
            ("transposed" if component == "resid_pre" else "head_transposed", reference.T),
            ("attribution_backwards", 2 * start - reference),
            ("attribution_grad_at_clean", lambda: refs.attribution(key, component, "grad_at_clean")),
            # the same, started from the clean run's metric instead of the corrupted run's
            ("attribution_grad_at_clean", lambda: refs.attribution(key, component, "grad_at_clean")
             + ps.metric(ps.clean_logits).item() - start),
            ("attribution_batch_mean", start + (reference - start) / n_prompts),
            ("attribution_exact", lambda: refs.attribution(key, component, "exact")),
        ]
        if component == "resid_pre":
            mistakes.append(("attribution_not_summed_d_model", terms))
        else:
            mistakes += [("attribution_not_summed_positions", lambda: start + (terms() - start).sum(dim=3)),
                         ("attribution_not_summed_d_head", lambda: start + (terms() - start).sum(dim=1))]
        axis_names = ("layer", "position") if component == "resid_pre" else ("layer", "head")
        return reference, mistakes, {"axis_names": axis_names, "atol": ATOL_METRIC}
    if check in ("check_path_to_logits", "check_path_to_receivers"):
        return _path_expected(key, refs)
    reference = refs.grid(key)
    return reference, *residual_mistakes(reference, lambda variant: refs.grid(key, variant), ps.clean_logit_diff,
                                         ps.corrupted_logit_diff)


def _path_expected(key: dict[str, Any], refs: References) -> tuple[Tensor, list[tuple[str, Candidate]], dict]:
    """Path patching's reference for one case and the known mistakes' results."""
    ps = refs.prompt_set(key)
    reference = refs.path_grid(key)
    _, *metric_mistakes = grid_mistakes(reference, ps.clean_logit_diff, ps.corrupted_logit_diff)
    variant = lambda name: lambda: refs.path_grid(key, name)  # noqa: E731
    mistakes: list[tuple[str, Candidate]] = [
        ("head_transposed", reference.T), ("path_sender_not_patched", torch.zeros_like(reference)),
        ("path_wrong_direction", variant("wrong_direction")), ("path_not_frozen", variant("not_frozen")),
        ("path_mlps_frozen", variant("mlps_frozen")),
    ]
    which = key.get("receiver_input")
    if which is None:
        mistakes.append(("path_freeze_short", variant("freeze_short")))
    else:
        mistakes.append(("path_receivers_not_patched", variant("to_logits")))
        mistakes += [("path_wrong_receiver_input", variant(other)) for other in RECEIVER_INPUTS if other != which]
    for skipped in (0, -1):  # a loop over senders that skips the first or the last layer
        short = reference.clone()
        short[skipped] = 0
        mistakes.append(("head_off_by_one_layer", short))
    return reference, mistakes + metric_mistakes, {
        "off_by_one_axes": {0: "head_off_by_one_layer"}, "axis_names": ("sender layer", "sender head"),
        "atol": ATOL_METRIC}


def _where(key: dict[str, Any], refs: References) -> str:
    return refs.prompt_set(key).label


def judge(check: str, records: list[dict[str, Any]], refs: References) -> str | None:
    """None if every recorded case is right; else what the learner is told."""
    if len(records) == 1 and records[0].get("error") == "missing":
        return decode(records[0], check)[1]
    if check == "check_heatmap":
        return judge_heatmap(records, refs)
    keys = cases(check, refs.models)
    if [r.get("case") for r in records] != keys:
        return "the test did not record every case (did the cell finish?)."
    outcomes = []
    for record, key in zip(records, keys):
        got, problem = decode(record, check)
        if problem:
            return f"on {_where(key, refs)}, {problem}"
        if record.get("cache_mutated"):
            return f"on {_where(key, refs)}: {MESSAGES['cache_mutated']}"
        reference, candidates, options = _expected(check, key, refs)
        if check in GRIDS and got.shape != reference.shape:  # only a transposition changes a grid's shape
            candidates = [c for c in candidates if "transposed" in c[0]]
        diagnosis = diagnose(got, reference, candidates, rtol=RTOL, **options)
        outcomes.append((key, got, reference, candidates, options, diagnosis))
    if all(o[-1] is None for o in outcomes):
        return None
    return summarise(outcomes, records, refs, check)


def summarise(outcomes: list[tuple], records: list[dict[str, Any]], refs: References, check: str = "") -> str:
    """One message for all cases: a known mistake is named only when the learner's values match it on
    every case checked (right cases included, except in ``SEPARATE_BRANCHES``); otherwise where the
    values are off, in words."""
    common: set[str] | None = None
    for key, got, reference, candidates, options, diagnosis in outcomes:
        if diagnosis is None and check in SEPARATE_BRANCHES:
            continue
        here = set(diagnosis.name.split("+")) if diagnosis else set(matches(got, candidates, options["atol"], RTOL))
        common = here if common is None else common & here
    common = (common or set()) - {"mismatch"}
    failed = [o for o in outcomes if o[-1] is not None]
    if common:
        return " Or: ".join(MESSAGES[n] for n in failed[0][-1].name.split("+") if n in common)
    first_model = refs.models.names[0]
    if all(o[0]["model"] != first_model for o in failed):
        other = refs.models.model(failed[0][0]["model"]).cfg
        shape = next((tuple(r["shape"]) for o, r in zip(outcomes, records)
                      if o[-1] is not None and r.get("shape") is not None), None)
        return (f"{MESSAGES['hard_coded_sizes']} The second model has {other.n_layers} layers, {other.n_heads} "
                f"heads and d_model {other.d_model}" + (f" (your result there has shape {shape})." if shape else "."))
    key, got, reference, _, options, _ = failed[0]
    words = mismatch_message(got, reference, options.get("axis_names", ()), options["atol"])
    if all(o[0]["set"] > 0 for o in failed):
        return f"{MESSAGES['uses_globals']} On {_where(key, refs)}: {words}"
    right = len(outcomes) - len(failed)
    return (f"right on {right} of {len(outcomes)} checks, wrong on {_where(key, refs)}" if right else
            f"on {_where(key, refs)}") + f": {words}"


def judge_heatmap(records: list[dict[str, Any]], refs: References) -> str | None:
    """The figure a reader sees: one heatmap with layers as rows in order, every position a distinct
    column labelled with its token, S2 and END marked, a colour scale centred on 0."""
    keys = cases("check_heatmap", refs.models)
    if [r.get("case") for r in records] != keys:
        return "the test did not record every case (did the cell finish?)."
    for record, key in zip(records, keys):
        where = _where(key, refs)
        if "error" in record or record.get("type") != "Figure":
            problem = decode(record, "check_heatmap")[1] or f"it must return a plotly Figure, not a {record.get('type')}."
            return f"on {where}, {problem}"
        problem = heatmap_problem(record["figure"], refs.prompt_set(key))
        if problem:
            return f"on {where}: {problem}"
    return None


def heatmap_problem(figure: dict[str, Any], ps: PromptSet) -> str | None:
    """What is wrong with a figure (plotly JSON) drawn from ``heatmap_values``, or None."""
    n_layers, n_pos = ps.model.cfg.n_layers, ps.data.clean_tokens.shape[1]
    values = heatmap_values(n_layers, n_pos)
    traces = [t for t in figure.get("data", []) if isinstance(t, dict) and t.get("type") == "heatmap"]
    if len(traces) != 1:
        return f"the figure should hold exactly one heatmap trace, it holds {len(traces)}."
    trace = traces[0]
    try:
        z = torch.as_tensor(array(trace.get("z")))
    except (TypeError, ValueError):
        return "the heatmap's values (z) are not a numeric grid."
    diagnosis = diagnose(z, values, [("transposed", values.T)], axis_names=("layer", "position"), atol=1e-6,
                         rtol=1e-6)
    if diagnosis is not None:
        return ("it shows other values than the results it is given: draw `results` as they are, one row "
                f"per layer. {diagnosis.message}")
    labels = [str(x) for x in _listed(trace.get("x"))]
    tokens = ps.data.str_tokens
    if len(labels) != n_pos:
        return (f"label every column: {n_pos} positions need {n_pos} x labels, the figure has {len(labels)} "
                "(e.g. x_labels = position_labels(str_tokens, s2_pos, end_pos)).")
    if len(set(labels)) != n_pos:
        return ("two columns have the same label, so plotly draws them as one column: make every label "
                "distinct, e.g. with the position's index (position_labels does).")
    unlabelled = [i for i, (tok, label) in enumerate(zip(tokens, labels))
                  if tok.strip() not in label and str(i) not in label]
    if unlabelled:
        return (f"the labels of positions {', '.join(map(str, unlabelled[:5]))} name neither their token nor "
                "their index: label each column with its token.")
    if "S2" not in labels[ps.data.s2_pos] or "END" not in labels[ps.data.end_pos]:
        return "mark the S2 and END columns in their labels (position_labels does)."
    rows = None if trace.get("y") is None else _listed(trace.get("y"))
    if rows is not None and [str(r) for r in rows] != [str(r) for r in sorted(rows, key=_layer_number)]:
        return "put the rows in order: the layers in order, 0 first."
    if not _centred(figure, trace):
        return ("centre the colour scale on 0 (e.g. zmid=0), so that positive and negative effects get "
                "opposite colours and 0 is white.")
    return None


TYPED_ARRAYS = {"f4", "f8", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8"}


def array(value: Any) -> np.ndarray:
    """A plotly array as numbers: a (nested) list, or plotly's typed array {dtype, bdata, shape}."""
    if isinstance(value, dict):
        if value.get("dtype") not in TYPED_ARRAYS:
            raise ValueError("not a numeric typed array")
        import base64

        flat = np.frombuffer(base64.b64decode(str(value.get("bdata", ""))), dtype=value["dtype"])
        shape = [int(n) for n in str(value.get("shape", len(flat))).split(",")]
        return flat.reshape(shape).astype(float)
    return np.asarray(value, dtype=float)


def _listed(value: Any) -> list:
    return list(array(value)) if isinstance(value, dict) else list(value or [])


def _layer_number(label: Any) -> float:
    digits = "".join(ch for ch in str(label) if ch.isdigit())
    return float(digits) if digits else float("inf")


def _centred(figure: dict[str, Any], trace: dict[str, Any]) -> bool:
    if trace.get("zmid") == 0 or (trace.get("zmin") is not None and trace.get("zmin") == -(trace.get("zmax") or 0)
                                  and trace.get("zmax")):
        return True
    axis = figure.get("layout", {}).get("coloraxis", {}) or {}
    return axis.get("cmid") == 0 or (axis.get("cmin") is not None and axis.get("cmax")
                                     and axis["cmin"] == -axis["cmax"])


# --- the hidden tests run in-process, for an instructor running a solution notebook by hand --------

_IN_PROCESS: dict[str, Any] = {}


def _in_process(check: str) -> Callable[[Callable[..., Any], Any], None]:
    def run(fn: Callable[..., Any], model: Any = None) -> None:
        """Record ``fn`` on every graded case here, as the sandbox would, and judge it; an
        AssertionError with the learner's message when it is wrong. ``model`` is not used: the
        grading models are."""
        if not _IN_PROCESS:
            _IN_PROCESS["inside"] = Models(["ioi-mini", "ioi-mini-reshaped"])
            _IN_PROCESS["refs"] = References(["ioi-mini", "ioi-mini-reshaped"])
        inside = _IN_PROCESS["inside"]
        records = [{"case": key, **run_case(check, key, fn, inside)} for key in cases(check, inside)]
        message = judge(check, json.loads(json.dumps(records)), _IN_PROCESS["refs"])
        if message:
            raise AssertionError(message)
        print("Passed.")

    run.__name__ = check
    return run


check_logit_diff_per_prompt = _in_process("check_logit_diff_per_prompt")
check_mean_logit_diff = _in_process("check_mean_logit_diff")
check_normalised_metric = _in_process("check_normalised_metric")
check_patch_hook = _in_process("check_patch_hook")
check_residual_patching = _in_process("check_residual_patching")
check_heatmap = _in_process("check_heatmap")
check_head_hook = _in_process("check_head_hook")
check_head_by_pos = _in_process("check_head_by_pos")
check_head_inputs = _in_process("check_head_inputs")
check_top_heads = _in_process("check_top_heads")
check_attribution_resid = _in_process("check_attribution_resid")
check_attribution_heads = _in_process("check_attribution_heads")
check_path_to_logits = _in_process("check_path_to_logits")
check_path_to_receivers = _in_process("check_path_to_receivers")
