"""How much a patching number depends on the prompts: per-prompt results and bootstrap intervals.

The normalised metric of a batch is a ratio of means over prompts,
``(mean patched LD - mean corrupted LD) / (mean clean LD - mean corrupted LD)``. Resampling the prompts
with replacement (each prompt keeps its clean, corrupted and patched logit differences together) and
recomputing the ratio gives a bootstrap distribution; its percentiles are the interval. With eight
prompts the interval is rough, and it says nothing about prompts unlike these, but it shows how much
a number could move with the choice of prompts, and so which differences between cells to trust.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch
from jaxtyping import Float, Int
from torch import Tensor

from patchlab.metrics import patching_metric
from patchlab.patching.fast import fast_patching

if TYPE_CHECKING:
    from patchlab.types import Cache, Model


class _OnePrompt:
    """A view of a cache that holds only prompt ``index`` (batch of one)."""

    def __init__(self, cache: Cache, index: int) -> None:
        self.cache, self.index = cache, index

    def __contains__(self, name: str) -> bool:
        return name in self.cache

    def __getitem__(self, name: str) -> Tensor:
        return self.cache[name][self.index : self.index + 1]


def per_prompt_patching(
    model: Model,
    corrupted_tokens: Int[Tensor, "batch pos"],
    clean_cache: Cache,
    answer_tokens: Int[Tensor, "batch 2"],
    component: str = "resid_pre",
    method: Callable[..., Tensor] = fast_patching,
) -> Float[Tensor, "batch layer ..."]:
    """The patched logit difference of every prompt on its own (not normalised): ``method`` run on each
    prompt with its raw logit difference as the metric."""
    if answer_tokens.shape[0] != corrupted_tokens.shape[0]:
        raise ValueError(f"{corrupted_tokens.shape[0]} prompts but {answer_tokens.shape[0]} answer pairs")
    rows = []
    for i in range(corrupted_tokens.shape[0]):
        raw = patching_metric(answer_tokens[i : i + 1], 1.0, 0.0)  # (LD - 0) / (1 - 0): the logit difference
        rows.append(
            method(model, corrupted_tokens[i : i + 1], _OnePrompt(clean_cache, i), raw, component, progress=False)
        )
    return torch.stack(rows)


def normalised(
    patched: Float[Tensor, "batch ..."],
    clean: Float[Tensor, " batch"],
    corrupted: Float[Tensor, " batch"],
    prompts: Int[Tensor, " n"] | None = None,
) -> Float[Tensor, ...]:
    """The batch's normalised metric from per-prompt logit differences (of ``prompts``, repeats allowed)."""
    if prompts is not None:
        patched, clean, corrupted = patched[prompts], clean[prompts], corrupted[prompts]
    low, high = corrupted.mean(), clean.mean()
    return (patched.mean(0) - low) / (high - low)


def bootstrap_interval(
    statistic: Callable[[Int[Tensor, " n"]], Tensor],
    n_prompts: int,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """The percentile bootstrap interval of ``statistic(prompts)`` (a tensor of any shape) over
    ``n_resamples`` draws of ``n_prompts`` prompt indices with replacement."""
    if n_prompts < 2 or n_resamples < 1 or not 0 < level < 1:
        raise ValueError(
            f"need at least 2 prompts, 1 resample and a level in (0, 1); got {n_prompts}, {n_resamples}, {level}"
        )
    generator = torch.Generator().manual_seed(seed)
    draws = torch.randint(0, n_prompts, (n_resamples, n_prompts), generator=generator)
    values = torch.stack([statistic(prompts).detach().double().cpu() for prompts in draws])
    tails = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.double)
    low, high = torch.quantile(values, tails, dim=0)
    return low.float(), high.float()
