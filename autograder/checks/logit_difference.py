"""Assignment ``logit_difference``: the logit difference per prompt, its mean, the normalised metric.

Each is called on the clean and the corrupted logits of every prompt set (the normalised metric also
on their mean, halfway between: the logit difference is linear in the logits).
"""

from __future__ import annotations

from typing import Callable

from torch import Tensor

from patchlab.check import ATOL_LOGIT_DIFF, ATOL_METRIC
from patchlab.metrics import logit_diff, normalise

from ._check import Check, Expected, Key
from ._inputs import PromptSet
from ._judge import References


def _on(*which: str) -> Callable[[PromptSet, int, int], list[Key]]:
    """One case per logits of ``which`` (``clean``, ``corrupted``, ``halfway``)."""
    return lambda ps, model_index, set_index: [{"logits": logits} for logits in which]


def _logits_and_answers(ps: PromptSet, key: Key) -> tuple[tuple, dict]:
    return (ps.logits(key["logits"]).clone(), ps.data.answer_tokens.clone()), {}


def _per_prompt(refs: References, key: Key) -> tuple[PromptSet, Tensor, Callable[[], Tensor], Tensor]:
    """The right per-prompt logit differences of a case, and two ways to get them wrong."""
    ps = refs.prompt_set(key)
    logits, answers = ps.logits(key["logits"]), ps.data.answer_tokens
    per_prompt = logit_diff(logits, answers, per_prompt=True).cpu()
    second_to_last = lambda: logit_diff(logits[:, :-1], answers, per_prompt=True).cpu()  # noqa: E731
    final = logits[:, -1].cpu()
    broadcast = final[:, answers[:, 0].cpu()] - final[:, answers[:, 1].cpu()]
    return ps, per_prompt, second_to_last, broadcast


def _expected_per_prompt(refs: References, key: Key) -> Expected:
    _, per_prompt, second_to_last, broadcast = _per_prompt(refs, key)
    return (
        per_prompt,
        [
            ("sign_flipped", -per_prompt),
            ("not_final_position", second_to_last),
            ("reduced_too_early", per_prompt.mean()),
            ("single_prompt", per_prompt[0]),
            ("broadcast_index", broadcast),
        ],
        {"axis_names": ("prompt",), "atol": ATOL_LOGIT_DIFF},
    )


def _expected_mean(refs: References, key: Key) -> Expected:
    _, per_prompt, second_to_last, _ = _per_prompt(refs, key)
    return (
        per_prompt.mean(),
        [
            ("sign_flipped", -per_prompt.mean()),
            ("single_prompt", per_prompt[0]),
            ("sum_not_mean", per_prompt.sum()),
            ("not_reduced", per_prompt),
            ("not_final_position", lambda: second_to_last().mean()),
        ],
        {"atol": ATOL_LOGIT_DIFF},
    )


def _expected_normalised(refs: References, key: Key) -> Expected:
    ps, per_prompt, _, _ = _per_prompt(refs, key)
    clean, corrupted = ps.clean_logit_diff, ps.corrupted_logit_diff
    raw = per_prompt.mean()
    reference = normalise(raw, clean, corrupted)
    return (
        reference,
        [
            ("unnormalised", raw),
            ("normalised_backwards", 1 - reference),
            ("sign_flipped", -reference),
            ("divided_by_clean", raw / clean),
            ("single_prompt", normalise(per_prompt[0], clean, corrupted)),
            ("not_reduced", normalise(per_prompt, clean, corrupted)),
        ],
        {"atol": ATOL_METRIC},
    )


logit_diff_per_prompt = Check(
    name="check_logit_diff_per_prompt",
    returns="a tensor of shape [batch]",
    variants=_on("clean", "corrupted"),
    arguments=_logits_and_answers,
    expected=_expected_per_prompt,
)

mean_logit_diff = Check(
    name="check_mean_logit_diff",
    returns="a 0-dimensional tensor",
    variants=_on("clean", "corrupted"),
    arguments=_logits_and_answers,
    expected=_expected_mean,
)

normalised_metric = Check(
    name="check_normalised_metric",
    returns="a 0-dimensional tensor",
    variants=_on("clean", "corrupted", "halfway"),
    arguments=lambda ps, key: ((*_logits_and_answers(ps, key)[0], ps.clean_logit_diff, ps.corrupted_logit_diff), {}),
    expected=_expected_normalised,
)
