"""The trusted half of the hidden tests: judge what a learner's functions returned.

The learner's kernel ran each learner function, inside the sandbox, on the graded cases: two models
of different shape (the course model and ``ioi-mini-reshaped``: 5 layers, 8 heads, width 256; with
``--model gpt2-small``, GPT-2 small and the course model), each with the classic prompts (the second
model their first pair) and a second prompt set (other names, another template, another length).
Here, outside the sandbox, the same inputs are rebuilt, the references computed with ``patchlab``
(once per grading run, by each check's ``expected``), and each returned value compared with its
reference within explicit tolerances. :func:`judge` returns None when every case is right, else the
message the learner sees: a known mistake is named only when it explains every case that was
checked; otherwise the message says in words where the values are off.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from patchlab.check import MESSAGES, RTOL, diagnose, matches, mismatch_message

from ._check import Check, Key, cases, messages
from ._inputs import Models, PromptSet


class References:
    """Trusted references on the grading models, computed once per grading run and kept."""

    def __init__(self, model_names: list[str], device: str = "cpu") -> None:
        self.models = Models(model_names, device)
        self._cache: dict[tuple, Tensor] = {}

    def prompt_set(self, key: Key) -> PromptSet:
        return self.models.prompt_sets(key["model"])[key["set"]]

    def cached(self, what: tuple, compute: Callable[[], Tensor]) -> Tensor:
        """``compute()`` once per ``what`` (its first item the model's name), with no hooks and no gradients."""
        if what not in self._cache:
            self.models.model(what[0]).reset_hooks()
            with torch.no_grad():
                self._cache[what] = compute().detach().float().cpu()
        return self._cache[what]


def decode(record: dict[str, Any], check: Check) -> tuple[Tensor | None, str | None]:
    """The value a learner function returned, as a float tensor, or the message saying what is wrong
    with it (an exception, None, the wrong type)."""
    expected = check.returns
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
    if kind not in check.accepted or "values" not in record:
        return None, f"it must return {expected}, not a {kind}" + (
            f" ({record['repr']})." if kind in check.accepted and "repr" in record else "."
        )
    try:
        values = np.asarray(record["values"], dtype=float).reshape(record["shape"])
    except (KeyError, TypeError, ValueError):
        return None, "its result could not be read back."
    return torch.from_numpy(values).float(), None


def _where(key: Key, refs: References) -> str:
    return refs.prompt_set(key).label


def judge(check: Check, records: list[dict[str, Any]], refs: References) -> str | None:
    """None if every recorded case is right; else what the learner is told."""
    if len(records) == 1 and records[0].get("error") == "missing":
        return decode(records[0], check)[1]
    if check.judge is not None:
        return check.judge(check, records, refs)
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
        assert got is not None and check.expected is not None  # decode gave no problem; a judged check declares it
        reference, candidates, options = check.expected(refs, key)
        if check.grid and got.shape != reference.shape:  # only a transposition changes a grid's shape
            candidates = [c for c in candidates if "transposed" in c[0]]
        diagnosis = diagnose(got, reference, candidates, rtol=RTOL, messages=messages(check), **options)
        outcomes.append((key, got, reference, candidates, options, diagnosis))
    if all(o[-1] is None for o in outcomes):
        return None
    return summarise(outcomes, records, refs, check)


def summarise(outcomes: list[tuple], records: list[dict[str, Any]], refs: References, check: Check) -> str:
    """One message for all cases: a known mistake is named only when the learner's values match it on
    every case checked (right cases included, unless the check has ``separate_branches``); otherwise
    where the values are off, in words."""
    common: set[str] | None = None
    for _key, got, _reference, candidates, options, diagnosis in outcomes:
        if diagnosis is None and check.separate_branches:
            continue
        here = set(diagnosis.name.split("+")) if diagnosis else set(matches(got, candidates, options["atol"], RTOL))
        common = here if common is None else common & here
    common = (common or set()) - {"mismatch"}
    failed = [o for o in outcomes if o[-1] is not None]
    if common:
        return " Or: ".join(messages(check)[n] for n in failed[0][-1].name.split("+") if n in common)
    first_model = refs.models.names[0]
    if all(o[0]["model"] != first_model for o in failed):
        other = refs.models.model(failed[0][0]["model"]).cfg
        shape = next(
            (tuple(r["shape"]) for o, r in zip(outcomes, records) if o[-1] is not None and r.get("shape") is not None),
            None,
        )
        return (
            f"{MESSAGES['hard_coded_sizes']} The second model has {other.n_layers} layers, {other.n_heads} "
            f"heads and d_model {other.d_model}" + (f" (your result there has shape {shape})." if shape else ".")
        )
    key, got, reference, _, options, _ = failed[0]
    words = mismatch_message(got, reference, options.get("axis_names", ()), options["atol"])
    if all(o[0]["set"] > 0 for o in failed):
        return f"{MESSAGES['uses_globals']} On {_where(key, refs)}: {words}"
    right = len(outcomes) - len(failed)
    return (
        f"right on {right} of {len(outcomes)} checks, wrong on {_where(key, refs)}"
        if right
        else f"on {_where(key, refs)}"
    ) + f": {words}"
