"""Per-prompt patching and bootstrap intervals (patchlab.uncertainty): per-prompt logit differences
against a hooked run of each prompt alone, their normalised mean against the batch's fast patching,
and the interval against the bootstrap distribution of two prompts, enumerated by hand."""

from __future__ import annotations

import pytest
import torch

from patchlab.metrics import logit_diff
from patchlab.patching import fast_patching, hook_name
from patchlab.uncertainty import bootstrap_interval, normalised, per_prompt_patching


def test_per_prompt_patching_matches_hooked_runs_and_the_batch(model, classic, classic_run):
    clean_logits, cache, corrupted_logits, metric = classic_run
    per_prompt = per_prompt_patching(model, classic.corrupted_tokens, cache, classic.answer_tokens, "resid_pre")
    n_layers, n_pos = model.cfg.n_layers, classic.clean_tokens.shape[1]
    assert per_prompt.shape == (classic.n_prompts, n_layers, n_pos)
    for i, layer, pos in [(0, 0, classic.s2_pos), (3, 2, classic.end_pos), (5, 1, classic.s2_pos), (7, 3, 4)]:
        name = hook_name("resid_pre", layer)

        def patch(resid, hook):
            resid[:, pos] = cache[name][i:i + 1, pos]
            return resid

        with torch.no_grad():
            logits = model.run_with_hooks(classic.corrupted_tokens[i:i + 1], fwd_hooks=[(name, patch)])
        expected = logit_diff(logits, classic.answer_tokens[i:i + 1]).item()
        assert abs(per_prompt[i, layer, pos].item() - expected) < 1e-4
    clean = logit_diff(clean_logits, classic.answer_tokens, per_prompt=True)
    corrupted = logit_diff(corrupted_logits, classic.answer_tokens, per_prompt=True)
    batch = fast_patching(model, classic.corrupted_tokens, cache, metric, "resid_pre", progress=False)
    assert torch.allclose(normalised(per_prompt, clean, corrupted), batch, atol=1e-4)
    assert batch.abs().max() > 0.5  # the comparison can fail


def test_bootstrap_interval_of_two_prompts_is_their_enumerated_distribution():
    # Two prompts: resamples aa, ab, ba, bb with probability 1/4, 1/2, 1/4. The mean of a = 0, b = 1
    # is 0, 0.5 or 1, so the 95% interval is [0, 1] and the 40% interval (30th to 70th percentile) is [0.5, 0.5].
    values = torch.tensor([0.0, 1.0])
    mean = lambda prompts: values[prompts].mean()  # noqa: E731
    low, high = bootstrap_interval(mean, 2, n_resamples=4000, level=0.95)
    assert (low.item(), high.item()) == (0.0, 1.0)
    low, high = bootstrap_interval(mean, 2, n_resamples=4000, level=0.4)
    assert (low.item(), high.item()) == (0.5, 0.5)


def test_bootstrap_interval_of_identical_prompts_is_a_point_and_keeps_shapes():
    patched = torch.tensor([[2.0, 4.0]]).repeat(5, 1)
    clean, corrupted = torch.full((5,), 4.0), torch.zeros(5)
    low, high = bootstrap_interval(lambda p: normalised(patched, clean, corrupted, p), 5, n_resamples=50)
    assert low.shape == (2,) and torch.equal(low, high) and torch.allclose(low, torch.tensor([0.5, 1.0]))


def test_bootstrap_interval_rejects_bad_input():
    with pytest.raises(ValueError, match="at least 2 prompts"):
        bootstrap_interval(lambda p: p.float().mean(), 1)
    with pytest.raises(ValueError, match="level"):
        bootstrap_interval(lambda p: p.float().mean(), 4, level=1.5)
