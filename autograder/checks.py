"""The checks that the hidden test cells of the exercises call.

Each check runs a learner's function on the notebook's model, on the classic prompts and on a
second prompt set (other names, another template and length, so that copied numbers fail), and
compares it with the reference that ``patchlab`` computes on the same inputs, within explicit
tolerances. When they differ it raises ``AssertionError`` with the diagnosis of
:mod:`autograder.diagnose` (the message only: the feedback never shows the test's source).

Graded cells must write nothing to stderr, so learner code runs with stderr and warnings captured.
"""

from __future__ import annotations

import contextlib
import io
import types
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import Tensor

from autograder.diagnose import MESSAGES, Candidate, Diagnosis, diagnose, grid_mistakes
from patchlab.ioi import BABA_TEMPLATES, IOIData, classic_ioi, generate_ioi
from patchlab.metrics import PatchingMetric, logit_diff, normalise, patching_metric
from patchlab.patching import hook_name, patch_position, reference_patching

# Tolerances. Logit differences are O(1-10) logits; the normalised metric is O(1) but divides by
# (clean - corrupted), which amplifies float32 rounding when that gap is small.
ATOL_LOGIT_DIFF = 1e-3
ATOL_METRIC = 1e-3
RTOL = 1e-4
ATOL_ACTIVATION = 1e-6  # a patched activation is a copy of cached values: equal up to rounding

# The second prompt set: its own names and template, 16 tokens where the classic prompts have 15.
SECOND_SET_SIZE = 8
SECOND_SET_SEED = 20240607
SECOND_SET_TEMPLATE = BABA_TEMPLATES[0]


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """No gradients, no warnings, nothing on stderr (nbgrader fails a graded cell that writes there)."""
    with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


@dataclass
class PromptSet:
    """A batch of IOI prompts run through the model, with the reference results computed lazily."""

    label: str
    model: Any
    data: IOIData
    _alternatives: dict[str, Tensor] = field(default_factory=dict, repr=False)

    @cached_property
    def _clean_run(self) -> tuple[Tensor, Any]:
        with quiet():
            return self.model.run_with_cache(self.data.clean_tokens)

    @cached_property
    def _corrupted_run(self) -> tuple[Tensor, Any]:
        with quiet():
            return self.model.run_with_cache(self.data.corrupted_tokens)

    @property
    def clean_logits(self) -> Tensor:
        return self._clean_run[0]

    @property
    def clean_cache(self) -> Any:
        return self._clean_run[1]

    @property
    def corrupted_logits(self) -> Tensor:
        return self._corrupted_run[0]

    @property
    def corrupted_cache(self) -> Any:
        return self._corrupted_run[1]

    @cached_property
    def clean_logit_diff(self) -> float:
        return logit_diff(self.clean_logits, self.data.answer_tokens).item()

    @cached_property
    def corrupted_logit_diff(self) -> float:
        return logit_diff(self.corrupted_logits, self.data.answer_tokens).item()

    @cached_property
    def metric(self) -> PatchingMetric:
        return patching_metric(self.data.answer_tokens, self.clean_logit_diff, self.corrupted_logit_diff)

    @cached_property
    def reference(self) -> Tensor:
        """The residual-stream patching grid [n_layers, n_positions], by patchlab."""
        self.model.reset_hooks()
        with quiet():
            return reference_patching(self.model, self.data.corrupted_tokens, self.clean_cache, self.metric,
                                      progress=False).cpu()

    def wrong_direction(self) -> Tensor:
        """The grid when corrupted activations are patched into the clean run."""
        if "wrong_direction" not in self._alternatives:
            self.model.reset_hooks()
            with quiet():
                self._alternatives["wrong_direction"] = reference_patching(
                    self.model, self.data.clean_tokens, self.corrupted_cache, self.metric, progress=False
                ).cpu()
        return self._alternatives["wrong_direction"]

    def wrong_hook(self, activation: str) -> Tensor:
        """The grid when ``activation`` (e.g. ``resid_mid``) is patched instead of ``resid_pre``,
        computed independently with ``transformer_lens.patching``."""
        if activation not in self._alternatives:
            from transformer_lens.patching import generic_activation_patch, layer_pos_patch_setter

            self.model.reset_hooks()
            with quiet():
                self._alternatives[activation] = generic_activation_patch(
                    self.model, self.data.corrupted_tokens, self.clean_cache, self.metric,
                    patch_setter=layer_pos_patch_setter, activation_name=activation,
                    index_axis_names=("layer", "pos"),
                ).cpu()
        return self._alternatives[activation]


_PROMPT_SETS: dict[int, tuple[Any, list[PromptSet]]] = {}


def prompt_sets(model: Any) -> list[PromptSet]:
    """The classic prompts and the second prompt set for ``model`` (built once per model)."""
    if id(model) not in _PROMPT_SETS or _PROMPT_SETS[id(model)][0] is not model:
        device = model.cfg.device
        with quiet():
            second = generate_ioi(model, SECOND_SET_SIZE, seed=SECOND_SET_SEED, template=SECOND_SET_TEMPLATE)
            _PROMPT_SETS[id(model)] = (model, [
                PromptSet("the classic prompts", model, classic_ioi(model).to(device)),
                PromptSet("a second prompt set (other names, another template)", model, second.to(device)),
            ])
    return _PROMPT_SETS[id(model)][1]


def _name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__name__", "your function")


def call_learner(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run the learner's ``fn`` quietly; an exception in it fails the check with its message."""
    name = _name(fn)
    try:
        with quiet():
            return fn(*args, **kwargs)
    except NotImplementedError:
        raise AssertionError(
            f"{name} is not implemented yet: replace `raise NotImplementedError()` with your code."
        ) from None
    except Exception as err:  # learner code may raise anything; report it, do not crash the check
        raise AssertionError(f"{name} raised {type(err).__name__}: {err}") from None


def as_tensor(value: Any, name: str) -> Tensor:
    """The learner's result as a float tensor on the CPU, or a failed check saying what came back."""
    if value is None:
        raise AssertionError(f"{name} returned None: did you forget the `return` statement?")
    try:
        return torch.as_tensor(value).detach().float().cpu()
    except (TypeError, ValueError, RuntimeError):
        raise AssertionError(f"{name} should return a tensor, got a {type(value).__name__}") from None


def fail_if_wrong(diagnosis: Diagnosis | None, index: int, prompt_set: PromptSet, what: str) -> None:
    """Raise the learner-facing AssertionError for a diagnosis on the ``index``-th prompt set."""
    if diagnosis is None:
        return
    message = diagnosis.message
    if index > 0 and diagnosis.name == "mismatch":
        message = f"{MESSAGES['uses_globals']} ({message})"
    raise AssertionError(f"{what}, on {prompt_set.label}: {message}")


def _checked_sets(model: Any) -> list[tuple[int, PromptSet]]:
    """The numbered prompt sets, after removing any hook the learner's code left on the model."""
    model.reset_hooks()
    return list(enumerate(prompt_sets(model)))


def check_logit_diff_per_prompt(fn: Callable[..., Any], model: Any) -> None:
    """``fn(logits, answer_tokens)`` is the logit difference of each prompt (patchlab's
    ``logit_diff(..., per_prompt=True)``), on clean and corrupted logits of both prompt sets."""
    for index, ps in _checked_sets(model):
        answers = ps.data.answer_tokens
        for logits in (ps.clean_logits, ps.corrupted_logits):
            got = as_tensor(call_learner(fn, logits.clone(), answers.clone()), _name(fn))
            reference = logit_diff(logits, answers, per_prompt=True).cpu()
            final = logits[:, -1].cpu()
            candidates: list[tuple[str, Candidate]] = [
                ("sign_flipped", -reference),
                ("not_final_position", lambda: logit_diff(logits[:, :-1], answers, per_prompt=True)),
                ("reduced_too_early", reference.mean()),
                ("single_prompt", reference[0]),
                ("broadcast_index", final[:, answers[:, 0].cpu()] - final[:, answers[:, 1].cpu()]),
            ]
            fail_if_wrong(diagnose(got, reference, candidates, axis_names=("prompt",), atol=ATOL_LOGIT_DIFF,
                                   rtol=RTOL), index, ps, _name(fn))


def check_mean_logit_diff(fn: Callable[..., Any], model: Any) -> None:
    """``fn(logits, answer_tokens)`` is the mean logit difference over the batch."""
    for index, ps in _checked_sets(model):
        answers = ps.data.answer_tokens
        for logits in (ps.clean_logits, ps.corrupted_logits):
            got = as_tensor(call_learner(fn, logits.clone(), answers.clone()), _name(fn))
            per_prompt = logit_diff(logits, answers, per_prompt=True).cpu()
            candidates: list[tuple[str, Candidate]] = [
                ("sign_flipped", -per_prompt.mean()),
                ("single_prompt", per_prompt[0]),
                ("sum_not_mean", per_prompt.sum()),
                ("not_reduced", per_prompt),
                ("not_final_position", lambda: logit_diff(logits[:, :-1], answers)),
            ]
            fail_if_wrong(diagnose(got, per_prompt.mean(), candidates, atol=ATOL_LOGIT_DIFF, rtol=RTOL),
                          index, ps, _name(fn))


def check_normalised_metric(fn: Callable[..., Any], model: Any) -> None:
    """``fn(logits, answer_tokens, clean_logit_diff, corrupted_logit_diff)`` is patchlab's
    normalised metric: 1 on the clean logits, 0 on the corrupted ones, linear in between."""
    for index, ps in _checked_sets(model):
        answers = ps.data.answer_tokens
        clean, corrupted = ps.clean_logit_diff, ps.corrupted_logit_diff
        halfway = (ps.clean_logits + ps.corrupted_logits) / 2  # the logit difference is linear in the logits
        for logits in (ps.clean_logits, ps.corrupted_logits, halfway):
            got = as_tensor(call_learner(fn, logits.clone(), answers.clone(), clean, corrupted), _name(fn))
            per_prompt = logit_diff(logits, answers, per_prompt=True).cpu()
            raw = per_prompt.mean()
            reference = normalise(raw, clean, corrupted)
            candidates: list[tuple[str, Candidate]] = [
                ("unnormalised", raw),
                ("normalised_backwards", 1 - reference),
                ("sign_flipped", -reference),
                ("divided_by_clean", raw / clean),
                ("single_prompt", normalise(per_prompt[0], clean, corrupted)),
                ("not_reduced", normalise(per_prompt, clean, corrupted)),
            ]
            fail_if_wrong(diagnose(got, reference, candidates, atol=ATOL_METRIC, rtol=RTOL), index, ps,
                          _name(fn))


def _hook_point(model: Any, name: str) -> Any:
    """The model's hook point called ``name`` (what TransformerLens passes a hook as ``hook``)."""
    hooks = getattr(model, "hook_dict", {})
    return hooks[name] if name in hooks else types.SimpleNamespace(name=name)


def check_patch_hook(fn: Callable[..., Any], model: Any) -> None:
    """``fn(resid_pre, hook, position, clean_cache)`` overwrites ``position`` of the corrupted
    activation with the clean one (patchlab's ``patch_position``) and leaves the cache alone."""
    for index, ps in _checked_sets(model):
        n_layers = model.cfg.n_layers
        for layer, position in ((min(1, n_layers - 1), ps.data.s2_pos), (n_layers - 1, ps.data.end_pos)):
            name = hook_name("resid_pre", layer)
            clean = ps.clean_cache[name]
            clean_before, corrupted = clean.clone(), ps.corrupted_cache[name].clone()
            activation = corrupted.clone()
            returned = call_learner(fn, activation, hook=_hook_point(model, name), position=position,
                                    clean_cache=ps.clean_cache)
            if not torch.equal(clean, clean_before):
                clean.copy_(clean_before)  # repair the cache for the checks that follow
                raise AssertionError(f"{_name(fn)}, on {ps.label}: {MESSAGES['cache_mutated']}")
            got = as_tensor(activation if returned is None else returned, _name(fn))
            expected = patch_position(corrupted.clone(), clean_before, position)
            candidates: list[tuple[str, Candidate]] = [
                ("wrong_direction", patch_position(clean_before.clone(), corrupted, position)),
                ("patched_all_positions", clean_before),
                ("not_patched", corrupted),
            ]
            candidates += [("off_by_one_position", patch_position(corrupted.clone(), clean_before, p))
                           for p in (position - 1, position + 1) if 0 <= p < corrupted.shape[1]]
            fail_if_wrong(diagnose(got, expected, candidates, atol=ATOL_ACTIVATION, rtol=RTOL), index, ps,
                          _name(fn))


def check_residual_patching(fn: Callable[..., Any], model: Any) -> None:
    """``fn(model, clean_tokens, corrupted_tokens, metric)`` is the residual-stream patching grid
    [n_layers, n_positions] of ``patchlab.patching.reference_patching``."""
    for index, ps in _checked_sets(model):
        returned = call_learner(fn, model, ps.data.clean_tokens.clone(), ps.data.corrupted_tokens.clone(),
                                ps.metric)
        model.reset_hooks()  # hooks the learner left behind must not change the references
        got = as_tensor(returned, _name(fn))
        transposed, *metric_mistakes = grid_mistakes(ps.reference, ps.clean_logit_diff, ps.corrupted_logit_diff)
        candidates: list[tuple[str, Candidate]] = [
            transposed,
            ("wrong_direction", ps.wrong_direction),
            ("resid_mid", lambda: ps.wrong_hook("resid_mid")),
            ("resid_post", lambda: ps.wrong_hook("resid_post")),
            *metric_mistakes,
        ]
        if got.shape != ps.reference.shape:
            candidates = [transposed]  # the other mistakes keep the shape: do not compute them
        diagnosis = diagnose(got, ps.reference, candidates, off_by_one_axes={0: "off_by_one_layer",
                             1: "off_by_one_position"}, axis_names=("layer", "position"), atol=ATOL_METRIC,
                             rtol=RTOL)
        fail_if_wrong(diagnosis, index, ps, _name(fn))


def check_heatmap(fn: Callable[..., Any], model: Any) -> None:
    """``fn(results, str_tokens, s2_pos, end_pos)`` returns a plotly heatmap with layers as rows,
    one labelled column per token and a colour scale centred on 0."""
    for index, ps in _checked_sets(model):
        n_layers, n_pos = model.cfg.n_layers, ps.data.clean_tokens.shape[1]
        values = torch.linspace(-0.4, 1.0, n_layers * n_pos).reshape(n_layers, n_pos)  # all distinct
        figure = call_learner(fn, values.clone(), list(ps.data.str_tokens), ps.data.s2_pos, ps.data.end_pos)
        traces = [t for t in getattr(figure, "data", ()) if getattr(t, "type", None) == "heatmap"]
        if not traces:
            raise AssertionError(f"{_name(fn)} should return a plotly figure with a heatmap, got "
                                 f"{type(figure).__name__}")
        trace = traces[0]
        z = torch.as_tensor(np.asarray(trace.z, dtype=float))
        diagnosis = diagnose(z, values, [("transposed", values.T)], axis_names=("layer", "position"),
                             atol=1e-6, rtol=1e-6)
        fail_if_wrong(diagnosis, 0, ps, _name(fn))  # the values are given: no notebook globals involved
        labels = [str(x) for x in (trace.x if trace.x is not None else ())]
        tokens = ps.data.str_tokens
        if len(labels) != n_pos or not all(tok.strip() in label for tok, label in zip(tokens, labels)):
            raise AssertionError(
                f"{_name(fn)}, on {ps.label}: label each column with its token (and index), e.g. "
                "x_labels = position_labels(str_tokens, s2_pos, end_pos)."
            )
        if not _centred(figure, trace):
            raise AssertionError(
                f"{_name(fn)}, on {ps.label}: centre the colour scale on 0 (e.g. zmid=0), so that "
                "positive and negative effects get opposite colours and 0 is white."
            )


def _centred(figure: Any, trace: Any) -> bool:
    if trace.zmid == 0 or (trace.zmin is not None and trace.zmax is not None and trace.zmin == -trace.zmax):
        return True
    axis = getattr(figure.layout, "coloraxis", None)
    return axis is not None and (axis.cmid == 0 or (axis.cmin is not None and axis.cmin == -axis.cmax))
