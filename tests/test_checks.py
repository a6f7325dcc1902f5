"""autograder.checks on ioi-mini: right learner functions pass, each typical mistake gets its message,
and a check writes nothing to stderr even when the learner's code does."""

from __future__ import annotations

import sys
import warnings

import pytest
import torch

from autograder import checks
from autograder.diagnose import MESSAGES
from patchlab.metrics import logit_diff, normalise
from patchlab.patching import patch_position, reference_patching
from patchlab.plots import heatmap, position_labels


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """A tiny model on a shared CPU runs several times faster on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def fails_with(check, fn, model, mistake: str) -> str:
    with pytest.raises(AssertionError) as info:
        check(fn, model)
    message = str(info.value)
    assert MESSAGES[mistake] in message, message
    return message


# --- logit differences ----------------------------------------------------------------------------

def per_prompt(logits, answer_tokens):
    picked = logits[:, -1].gather(-1, answer_tokens)
    return picked[:, 0] - picked[:, 1]


def test_per_prompt_logit_difference(model):
    checks.check_logit_diff_per_prompt(per_prompt, model)
    check = checks.check_logit_diff_per_prompt
    fails_with(check, lambda lg, a: -per_prompt(lg, a), model, "sign_flipped")
    fails_with(check, lambda lg, a: per_prompt(lg[:, :-1], a), model, "not_final_position")
    fails_with(check, lambda lg, a: per_prompt(lg, a).mean(), model, "reduced_too_early")
    fails_with(check, lambda lg, a: lg[:, -1, a[:, 0]] - lg[:, -1, a[:, 1]], model, "broadcast_index")


def test_mean_logit_difference(model):
    checks.check_mean_logit_diff(lambda lg, a: per_prompt(lg, a).mean(), model)
    check = checks.check_mean_logit_diff
    fails_with(check, lambda lg, a: per_prompt(lg, a)[0], model, "single_prompt")
    fails_with(check, lambda lg, a: per_prompt(lg, a).sum(), model, "sum_not_mean")
    fails_with(check, per_prompt, model, "not_reduced")


def test_normalised_metric(model):
    def right(lg, a, clean, corrupted):
        return (per_prompt(lg, a).mean() - corrupted) / (clean - corrupted)

    checks.check_normalised_metric(right, model)
    check = checks.check_normalised_metric
    fails_with(check, lambda lg, a, c, k: per_prompt(lg, a).mean(), model, "unnormalised")
    fails_with(check, lambda lg, a, c, k: (c - per_prompt(lg, a).mean()) / (c - k), model, "normalised_backwards")
    fails_with(check, lambda lg, a, c, k: per_prompt(lg, a).mean() / c, model, "divided_by_clean")
    fails_with(check, lambda lg, a, c, k: normalise(per_prompt(lg, a)[0], c, k), model, "single_prompt")


def test_learner_errors_become_messages(model):
    def not_done(logits, answer_tokens):
        raise NotImplementedError()

    with pytest.raises(AssertionError, match="not_done is not implemented yet"):
        checks.check_logit_diff_per_prompt(not_done, model)
    with pytest.raises(AssertionError, match="returned None"):
        checks.check_logit_diff_per_prompt(lambda lg, a: None, model)
    with pytest.raises(AssertionError, match="raised IndexError"):
        checks.check_logit_diff_per_prompt(lambda lg, a: lg[99], model)


# --- the patching hook ----------------------------------------------------------------------------

def test_patching_hook(model):
    def right(resid_pre, hook, position, clean_cache):
        return patch_position(resid_pre, clean_cache[hook.name], position)

    def in_place_only(resid_pre, hook, position, clean_cache):
        resid_pre[:, position] = clean_cache[hook.name][:, position]  # TransformerLens accepts None

    def into_the_cache(resid_pre, hook, position, clean_cache):
        clean_cache[hook.name][:, position] = resid_pre[:, position]
        return resid_pre

    checks.check_patch_hook(right, model)
    checks.check_patch_hook(in_place_only, model)
    check = checks.check_patch_hook
    fails_with(check, into_the_cache, model, "cache_mutated")
    checks.check_patch_hook(right, model)  # the check repaired the cache it lent
    fails_with(check, lambda r, hook, position, clean_cache: patch_position(
        clean_cache[hook.name].clone(), r, position), model, "wrong_direction")
    fails_with(check, lambda r, hook, position, clean_cache: clean_cache[hook.name].clone(), model,
               "patched_all_positions")
    fails_with(check, lambda r, hook, position, clean_cache: r, model, "not_patched")
    fails_with(check, lambda r, hook, position, clean_cache: right(r, hook, position + 1, clean_cache), model,
               "off_by_one_position")


# --- the patching loop and the heatmap ------------------------------------------------------------

def loop(model, clean_tokens, corrupted_tokens, metric):
    _, clean_cache = model.run_with_cache(clean_tokens)
    return reference_patching(model, corrupted_tokens, clean_cache, metric, progress=True)


def test_patching_loop_is_compared_on_two_prompt_sets_quietly(model, capfd):
    def noisy(*args):
        print("progress", file=sys.stderr)
        warnings.warn("a learner's warning")
        return loop(*args)  # with a tqdm bar on stderr

    checks.check_residual_patching(noisy, model)
    assert capfd.readouterr().err == ""


def test_copied_numbers_fail_on_the_second_prompt_set(model):
    classic = checks.prompt_sets(model)[0]
    copied = classic.reference.clone()
    message = fails_with(checks.check_residual_patching, lambda *args: copied, model, "uses_globals")
    assert "second prompt set" in message


def test_patching_loop_mistakes(model):
    check = checks.check_residual_patching
    fails_with(check, lambda *args: loop(*args).T, model, "transposed")
    fails_with(check, lambda m, clean, corrupted, metric: loop(m, corrupted, clean, metric), model,
               "wrong_direction")


def test_heatmap(model):
    def right(results, str_tokens, s2_pos, end_pos):
        return heatmap(results, position_labels(str_tokens, s2_pos, end_pos), "title")

    checks.check_heatmap(right, model)
    fails_with(checks.check_heatmap, lambda r, t, s, e: heatmap(r.T, list(range(r.shape[0])), "t"), model,
               "transposed")
    with pytest.raises(AssertionError, match="label each column"):
        checks.check_heatmap(lambda r, t, s, e: heatmap(r, [str(i) for i in range(r.shape[1])], "t"), model)
    with pytest.raises(AssertionError, match="centre the colour scale"):
        checks.check_heatmap(lambda r, t, s, e: right(r, t, s, e).update_traces(zmid=None, zmin=-1, zmax=2), model)


def test_prompt_sets_differ(model):
    classic, second = checks.prompt_sets(model)
    assert classic.data.clean_tokens.shape != second.data.clean_tokens.shape
    assert classic.clean_logit_diff == pytest.approx(logit_diff(classic.clean_logits,
                                                                classic.data.answer_tokens).item())
