"""Metrics: logit difference against a hand computation, the normalised metric's anchors."""

from __future__ import annotations

import pytest
import torch

from patchlab.metrics import ioi_accuracy, logit_diff, normalise, patching_metric


def test_logit_diff_matches_hand_computation():
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 11)
    answers = torch.tensor([[1, 2], [4, 0], [10, 3]])
    expected = [logits[b, -1, answers[b, 0]] - logits[b, -1, answers[b, 1]] for b in range(3)]
    assert torch.allclose(logit_diff(logits, answers, per_prompt=True), torch.stack(expected))
    assert torch.isclose(logit_diff(logits, answers), torch.stack(expected).mean())


def test_logit_diff_rejects_bad_shapes():
    with pytest.raises(ValueError, match="one \\(correct, incorrect\\) pair per prompt"):
        logit_diff(torch.zeros(2, 3, 4), torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[batch, 2\]"):
        logit_diff(torch.zeros(2, 3, 4), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[batch, pos, d_vocab\]"):
        logit_diff(torch.zeros(2, 4), torch.zeros(2, 2, dtype=torch.long))


def test_normalise_anchors_and_degenerate_baselines():
    values = torch.tensor([3.0, -1.0, 1.0])
    assert torch.allclose(normalise(values, 3.0, -1.0), torch.tensor([1.0, 0.0, 0.5]))
    with pytest.raises(ValueError, match="undefined"):
        normalise(values, 2.0, 2.0)


def test_patching_metric_is_one_on_clean_and_zero_on_corrupted(classic_run):
    clean_logits, _, corrupted_logits, metric = classic_run
    assert metric(clean_logits).item() == pytest.approx(1.0, abs=1e-6)
    assert metric(corrupted_logits).item() == pytest.approx(0.0, abs=1e-6)


def test_ioi_accuracy_counts_positive_logit_diffs(model, classic, classic_run):
    clean_logits = classic_run[0]
    expected = (logit_diff(clean_logits, classic.answer_tokens, per_prompt=True) > 0).float().mean().item()
    assert ioi_accuracy(model, classic.clean_tokens, classic.answer_tokens) == pytest.approx(expected)
    # Swapping correct and incorrect answers turns every win into a loss.
    flipped = ioi_accuracy(model, classic.clean_tokens, classic.answer_tokens.flip(-1))
    assert flipped == pytest.approx(1 - expected)


def test_patching_metric_keeps_its_baselines():
    m = patching_metric(torch.tensor([[0, 1]]), 2.5, -1.5)
    assert (m.clean_logit_diff, m.corrupted_logit_diff) == (2.5, -1.5)
