"""Metrics: the IOI logit difference and the normalised patching metric."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from jaxtyping import Float, Int
from torch import Tensor

Metric = Callable[[Float[Tensor, "batch pos d_vocab"]], Float[Tensor, ""]]


def logit_diff(
    logits: Float[Tensor, "batch pos d_vocab"],
    answer_tokens: Int[Tensor, "batch 2"],
    per_prompt: bool = False,
) -> Float[Tensor, "*batch"]:
    """Logit of the correct answer minus the incorrect one, at the final position.

    ``answer_tokens[:, 0]`` is correct, ``answer_tokens[:, 1]`` incorrect. Returns the mean over the
    batch, or one value per prompt with ``per_prompt=True``.
    """
    if logits.ndim != 3:
        raise ValueError(f"logits must be [batch, pos, d_vocab], got shape {tuple(logits.shape)}")
    if answer_tokens.ndim != 2 or answer_tokens.shape[1] != 2:
        raise ValueError(f"answer_tokens must be [batch, 2], got shape {tuple(answer_tokens.shape)}")
    if answer_tokens.shape[0] != logits.shape[0]:
        raise ValueError(
            f"{logits.shape[0]} prompts of logits but {answer_tokens.shape[0]} answer pairs: give one "
            "(correct, incorrect) pair per prompt"
        )
    final = logits[:, -1, :]
    picked = final.gather(-1, answer_tokens.to(final.device))
    diffs = picked[:, 0] - picked[:, 1]
    return diffs if per_prompt else diffs.mean()


def normalise(value: Float[Tensor, ...], clean_value: float, corrupted_value: float) -> Float[Tensor, ...]:
    """Rescale so that the corrupted run scores 0 and the clean run 1."""
    gap = float(clean_value) - float(corrupted_value)
    if abs(gap) < 1e-6:
        raise ValueError(
            "clean and corrupted logit differences are equal, so the patching metric is undefined: "
            "check that the corrupted prompts really change the answer"
        )
    return (value - corrupted_value) / gap


@dataclass(frozen=True)
class PatchingMetric:
    """The normalised patching metric: mean logit difference, 0 = corrupted run, 1 = clean run.

    It reads only the two answer logits at the final position, which fast patching exploits.
    """

    answer_tokens: Int[Tensor, "batch 2"]
    clean_logit_diff: float
    corrupted_logit_diff: float

    def __call__(self, logits: Float[Tensor, "batch pos d_vocab"]) -> Float[Tensor, ""]:
        return normalise(logit_diff(logits, self.answer_tokens), self.clean_logit_diff, self.corrupted_logit_diff)


def patching_metric(
    answer_tokens: Int[Tensor, "batch 2"], clean_logit_diff: float, corrupted_logit_diff: float
) -> PatchingMetric:
    """The normalised patching metric for these answers and baseline logit differences."""
    return PatchingMetric(answer_tokens, float(clean_logit_diff), float(corrupted_logit_diff))


def metric_from_runs(
    clean_logits: Float[Tensor, "batch pos d_vocab"],
    corrupted_logits: Float[Tensor, "batch pos d_vocab"],
    answer_tokens: Int[Tensor, "batch 2"],
) -> PatchingMetric:
    """The normalised patching metric whose baselines are these clean and corrupted runs."""
    return patching_metric(
        answer_tokens,
        logit_diff(clean_logits, answer_tokens).item(),
        logit_diff(corrupted_logits, answer_tokens).item(),
    )


@torch.no_grad()
def ioi_accuracy(model, tokens: Int[Tensor, "batch pos"], answer_tokens: Int[Tensor, "batch 2"]) -> float:
    """Share of prompts whose correct-answer logit beats the incorrect one at the final position."""
    return (logit_diff(model(tokens), answer_tokens, per_prompt=True) > 0).float().mean().item()
