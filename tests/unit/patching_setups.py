"""What the patching tests (test_fast_patching.py, test_attribution.py) run a method on: a model with
its corrupted tokens, clean cache and metric, on the course model or on random prompts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import torch

from patchlab.metrics import PatchingMetric, logit_diff, patching_metric

# Sweeps by position patch every (layer, position, head) cell: minutes on the course model, so `make
# test-fast` leaves them out (they are marked slow) and `make test` runs them.
SLOW_CHECKS = {"check_head_inputs", "check_path_to_receivers", "check_path_to_logits", "check_attribution_heads"}


def slow_by_pos(names: Any) -> list[Any]:
    """``names`` as pytest parameters, those of sweeps by position (``*_by_pos``) marked slow."""
    return [pytest.param(n, marks=pytest.mark.slow) if str(n).endswith("_by_pos") else n for n in names]


@dataclass
class Setup:
    """A model, corrupted tokens, the clean cache and the normalised metric."""

    model: Any
    corrupted: torch.Tensor
    cache: Any
    metric: PatchingMetric

    @classmethod
    def build(cls, model: Any, clean: torch.Tensor, corrupted: torch.Tensor, answers: torch.Tensor) -> "Setup":
        with torch.no_grad():
            clean_logits, cache = model.run_with_cache(clean)
            corrupted_logits = model(corrupted)
        return cls(model, corrupted, cache, patching_metric(answers, logit_diff(clean_logits, answers).item(),
                                                            logit_diff(corrupted_logits, answers).item()))

    def run(self, method: Any, component: str, metric: Any = None) -> torch.Tensor:
        return method(self.model, self.corrupted, self.cache, metric or self.metric, component, progress=False)


def random_setup(model: Any, batch: int, n_pos: int, differ: str, seed: int = 0) -> Setup:
    """Random prompts whose corrupted twins differ at the positions ``differ`` names."""
    gen = torch.Generator().manual_seed(seed)
    vocab = model.cfg.d_vocab
    clean = torch.randint(0, vocab, (batch, n_pos), generator=gen)
    changed = (clean + torch.randint(1, vocab, (batch, n_pos), generator=gen)) % vocab
    pos = torch.arange(n_pos)
    where = {
        "every position": torch.ones(batch, n_pos, dtype=torch.bool),
        "only the last token": (pos == n_pos - 1).expand(batch, n_pos),
        "only the first token": (pos == 0).expand(batch, n_pos),
        "from a different position per prompt": pos >= torch.randint(0, n_pos, (batch, 1), generator=gen),
    }[differ]
    corrupted = torch.where(where, changed, clean)
    # Score each prompt on its clean run's top token against its corrupted run's top other token, so
    # that the clean and corrupted logit differences are far apart (a well-conditioned metric).
    with torch.no_grad():
        right = model(clean)[:, -1].argmax(-1)
        ranked = model(corrupted)[:, -1].topk(2, dim=-1).indices
    wrong = torch.where(ranked[:, 0] == right, ranked[:, 1], ranked[:, 0])
    return Setup.build(model, clean, corrupted, torch.stack([right, wrong], dim=1))
