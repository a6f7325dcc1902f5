"""The hidden tests' two halves on the grading models: ``harvest`` records what a learner function
returns (as it does inside the sandbox, here in-process), ``checks.judge`` judges the records against
its own references. Right functions pass, each typical mistake gets its message, a mistake is named
only when it explains every case, and hard-coded sizes or copied numbers are told apart."""

from __future__ import annotations

import json
import sys
import warnings

import pytest
import torch

from autograder import checks, harvest
from patchlab.check import MESSAGES
from patchlab.metrics import normalise
from patchlab.patching import fast_patching, reference_patching
from patchlab.patching.components import patch_position
from patchlab.plots import heatmap, position_labels

MODELS = ["ioi-mini", "ioi-mini-reshaped"]
# Every check harvested and judged on both grading models takes minutes: `make test-fast` leaves this
# module out (tests/unit/test_check_registry.py grades each check once, on the course model).
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def verdict(check: str, fn, refs: checks.References, inside: harvest.Models) -> str | None:
    records = [{"case": key, **harvest.run_case(check, key, fn, inside)} for key in harvest.cases(check, inside)]
    return checks.judge(check, json.loads(json.dumps(records)), refs)  # as it crosses the sandbox's wall


@pytest.fixture
def judged(refs, inside):
    return lambda check, fn: verdict(check, fn, refs, inside)


def names(message: str | None, mistake: str) -> bool:
    return message is not None and MESSAGES[mistake] in message


# --- logit differences ----------------------------------------------------------------------------

def per_prompt(logits, answer_tokens):
    picked = logits[:, -1].gather(-1, answer_tokens)
    return picked[:, 0] - picked[:, 1]


def test_per_prompt_logit_difference(judged):
    check = "check_logit_diff_per_prompt"
    assert judged(check, per_prompt) is None
    assert names(judged(check, lambda lg, a: -per_prompt(lg, a)), "sign_flipped")
    assert names(judged(check, lambda lg, a: per_prompt(lg[:, :-1], a)), "not_final_position")
    assert names(judged(check, lambda lg, a: per_prompt(lg, a).mean()), "reduced_too_early")
    assert names(judged(check, lambda lg, a: lg[:, -1, a[:, 0]] - lg[:, -1, a[:, 1]]), "broadcast_index")


def test_mean_logit_difference(judged):
    check = "check_mean_logit_diff"
    assert judged(check, lambda lg, a: per_prompt(lg, a).mean()) is None
    assert names(judged(check, lambda lg, a: per_prompt(lg, a)[0]), "single_prompt")
    assert names(judged(check, lambda lg, a: per_prompt(lg, a).sum()), "sum_not_mean")
    assert names(judged(check, per_prompt), "not_reduced")


def test_a_float_is_refused_with_the_type_asked_for(judged):
    message = judged("check_mean_logit_diff", lambda lg, a: per_prompt(lg, a).mean().item())
    assert "must return a 0-dimensional tensor, not a float" in message


def test_normalised_metric(judged):
    check = "check_normalised_metric"
    assert judged(check, lambda lg, a, c, k: (per_prompt(lg, a).mean() - k) / (c - k)) is None
    assert names(judged(check, lambda lg, a, c, k: per_prompt(lg, a).mean()), "unnormalised")
    assert names(judged(check, lambda lg, a, c, k: (c - per_prompt(lg, a).mean()) / (c - k)), "normalised_backwards")
    assert names(judged(check, lambda lg, a, c, k: per_prompt(lg, a).mean() / c), "divided_by_clean")
    assert names(judged(check, lambda lg, a, c, k: normalise(per_prompt(lg, a)[0], c, k)), "single_prompt")


def test_learner_errors_become_messages(judged):
    def not_done(logits, answer_tokens):
        raise NotImplementedError()

    assert "not implemented yet" in judged("check_logit_diff_per_prompt", not_done)
    assert "returned None" in judged("check_logit_diff_per_prompt", lambda lg, a: None)
    assert "raised IndexError" in judged("check_logit_diff_per_prompt", lambda lg, a: lg[99])
    missing = checks.judge("check_logit_diff_per_prompt", [{"error": "missing"}], None)
    assert "not defined" in missing


def test_a_mistake_on_some_cases_only_is_described_not_named(judged):
    """Sign flipped on the classic prompts only: no single known mistake explains every case."""
    def sometimes_flipped(logits, answer_tokens):
        value = per_prompt(logits, answer_tokens)
        return -value if logits.shape[1] == 15 else value

    message = judged("check_logit_diff_per_prompt", sometimes_flipped)
    assert not names(message, "sign_flipped")
    assert "right on 4 of 8 checks" in message and "every prompt" in message


# --- the patching hook ----------------------------------------------------------------------------

def test_patching_hook(judged):
    check = "check_patch_hook"

    def right(resid_pre, hook, position, clean_cache):
        return patch_position(resid_pre, clean_cache[hook.name], position)

    def in_place_only(resid_pre, hook, position, clean_cache):
        resid_pre[:, position] = clean_cache[hook.name][:, position]

    def into_the_cache(resid_pre, hook, position, clean_cache):
        clean_cache[hook.name][:, position] = resid_pre[:, position]
        return resid_pre

    assert judged(check, right) is None
    assert "returned None" in judged(check, in_place_only)  # the instructions ask for the activation back
    assert names(judged(check, into_the_cache), "cache_mutated")
    assert judged(check, right) is None  # the cache lent was repaired
    assert names(judged(check, lambda r, hook, position, clean_cache: patch_position(
        clean_cache[hook.name].clone(), r, position)), "wrong_direction")
    assert names(judged(check, lambda r, hook, position, clean_cache: clean_cache[hook.name].clone()),
                 "patched_all_positions")
    assert names(judged(check, lambda r, hook, position, clean_cache: r), "not_patched")
    assert names(judged(check, lambda r, hook, position, clean_cache: right(r, hook, position - 1, clean_cache)),
                 "off_by_one_position")


# --- the patching loop and the heatmap ------------------------------------------------------------

def loop(model, clean_tokens, corrupted_tokens, metric):
    _, clean_cache = model.run_with_cache(clean_tokens)
    return reference_patching(model, corrupted_tokens, clean_cache, metric, progress=True)


def test_patching_loop_passes_quietly(judged, capfd):
    def noisy(*args):
        print("progress", file=sys.stderr)
        warnings.warn("a learner's warning")
        return loop(*args)  # with a tqdm bar on stderr

    assert judged("check_residual_patching", noisy) is None
    assert capfd.readouterr().err == ""


def test_copied_numbers_fail_on_the_second_prompt_set(judged, refs):
    copied = {}

    def copies(model, clean_tokens, corrupted_tokens, metric):
        key = model.cfg.n_layers
        copied.setdefault(key, loop(model, clean_tokens, corrupted_tokens, metric))
        return copied[key]

    message = judged("check_residual_patching", copies)
    assert names(message, "uses_globals") and "second prompt set" in message


def test_hard_coded_sizes_fail_on_the_second_model(judged):
    def four_layers(model, clean_tokens, corrupted_tokens, metric):
        _, clean_cache = model.run_with_cache(clean_tokens)
        results = torch.zeros(4, corrupted_tokens.shape[1])
        for layer in range(4):
            for position in range(corrupted_tokens.shape[1]):
                def hook(act, hook, p=position):
                    act[:, p] = clean_cache[hook.name][:, p]
                    return act
                logits = model.run_with_hooks(corrupted_tokens, fwd_hooks=[(f"blocks.{layer}.hook_resid_pre", hook)])
                results[layer, position] = metric(logits)
        return results

    message = judged("check_residual_patching", four_layers)
    assert names(message, "hard_coded_sizes") and "5 layers" in message and "(4, 15)" in message


def test_patching_loop_mistakes(judged):
    check = "check_residual_patching"
    assert names(judged(check, lambda *args: loop(*args).T), "transposed")
    assert names(judged(check, lambda m, clean, corrupted, metric: loop(m, corrupted, clean, metric)),
                 "wrong_direction")


def right_heatmap(results, str_tokens, s2_pos, end_pos):
    return heatmap(results, position_labels(str_tokens, s2_pos, end_pos), "title")


def test_heatmap(judged):
    check = "check_heatmap"
    assert judged(check, right_heatmap) is None
    assert "one row per layer" in judged(check, lambda r, t, s, e: heatmap(r.T, list(range(r.shape[0])), "t"))
    assert "S2 and END" in judged(check, lambda r, t, s, e: heatmap(r, [f"{i}: {x}" for i, x in enumerate(t)], "t"))
    merged = judged(check, lambda r, t, s, e: heatmap(r, [x + (" (S2)" if i == s else " (END)" if i == e else "")
                                                          for i, x in enumerate(t)], "t"))
    assert "same label" in merged  # two " John" columns would be drawn as one
    assert "centre the colour scale" in judged(
        check, lambda r, t, s, e: right_heatmap(r, t, s, e).update_traces(zmid=None, zmin=-1, zmax=2))
    reversed_rows = judged(check, lambda r, t, s, e: right_heatmap(r, t, s, e).update_traces(
        y=[f"layer {i}" for i in reversed(range(r.shape[0]))]))
    assert "layers in order" in reversed_rows


def test_plotly_typed_arrays_are_read():
    typed = {"dtype": "f4", "bdata": "AACAPwAAAEA=", "shape": "1, 2"}
    assert checks.array(typed).tolist() == [[1.0, 2.0]]
    with pytest.raises(ValueError):
        checks.array({"dtype": "O", "bdata": ""})


def test_prompt_sets_differ(refs):
    classic, second = refs.models.prompt_sets("ioi-mini")
    assert classic.data.clean_tokens.shape != second.data.clean_tokens.shape
    other = refs.models.model("ioi-mini-reshaped").cfg
    assert (other.n_layers, other.n_heads, other.d_model) == (5, 8, 256)


# --- attention heads -------------------------------------------------------------------------------

def head_hook(z, hook, head, position, clean_cache):
    z[:, position, head] = clean_cache[hook.name][:, position, head]
    return z


def test_head_hook(judged):
    check = "check_head_hook"

    def patched(base, source, *where):
        base = base.clone()
        base[where] = source[where]
        return base

    def into_the_cache(z, hook, head, position, clean_cache):
        clean_cache[hook.name][:, position, head] = z[:, position, head]
        return z

    every = slice(None)
    assert judged(check, head_hook) is None
    assert names(judged(check, into_the_cache), "cache_mutated")
    assert judged(check, head_hook) is None  # the cache lent was repaired
    assert names(judged(check, lambda z, hook, head, position, clean_cache: patched(
        clean_cache[hook.name], z, every, position, head)), "wrong_direction")
    assert names(judged(check, lambda z, hook, head, position, clean_cache: patched(
        z, clean_cache[hook.name], every, position, every, head)), "wrong_head_axis")
    assert names(judged(check, lambda z, hook, head, position, clean_cache: patched(
        z, clean_cache[hook.name], every, position)), "patched_all_heads")
    assert names(judged(check, lambda z, hook, head, position, clean_cache: patched(
        z, clean_cache[hook.name], every, every, head)), "head_all_positions")
    assert names(judged(check, lambda z, hook, head, position, clean_cache: z), "head_not_patched")


def head_loop(component):
    def run(model, clean_tokens, corrupted_tokens, metric, which=None):
        _, clean_cache = model.run_with_cache(clean_tokens)
        name = component if which is None else f"head_{which}"
        return fast_patching(model, corrupted_tokens, clean_cache, metric, name, progress=False)
    return run


def test_head_by_position(judged):
    check = "check_head_by_pos"
    right = head_loop("head_out_by_pos")
    assert judged(check, right) is None
    assert names(judged(check, lambda *args: right(*args).permute(0, 2, 1)), "head_transposed_by_pos")
    assert names(judged(check, lambda m, clean, corrupted, metric: right(m, corrupted, clean, metric)),
                 "wrong_direction")

    def shifted(*args):
        results = right(*args)
        results[0] = 0  # a loop over range(1, n_layers)
        return results

    assert names(judged(check, shifted), "head_off_by_one_layer")

    def every_head(model, clean_tokens, corrupted_tokens, metric):
        _, cache = model.run_with_cache(clean_tokens)
        grid = checks.loop_patching(model, corrupted_tokens, cache, metric, "blocks.{layer}.attn.hook_z",
                                    (corrupted_tokens.shape[1],), lambda p: (slice(None), p))
        return grid[:, :, None].expand(-1, -1, model.cfg.n_heads)

    assert names(judged(check, every_head), "patched_all_heads")

    def four_heads(model, clean_tokens, corrupted_tokens, metric):
        _, cache = model.run_with_cache(clean_tokens)
        return checks.loop_patching(model, corrupted_tokens, cache, metric, "blocks.{layer}.attn.hook_z",
                                    (corrupted_tokens.shape[1], 4), lambda p, h: (slice(None), p, h))

    message = judged(check, four_heads)
    assert names(message, "hard_coded_sizes") and "8 heads" in message


def test_head_inputs(judged):
    check = "check_head_inputs"
    right = head_loop(None)
    assert judged(check, right) is None
    assert names(judged(check, lambda *args: right(*args).T), "head_transposed")
    assert names(judged(check, lambda m, clean, corrupted, metric, which: right(m, clean, corrupted, metric, "q")),
                 "wrong_input")
    assert names(judged(check, lambda *args: head_loop("head_out")(*args[:4])), "patched_head_output")

    def pattern_on_dest_axis(model, clean_tokens, corrupted_tokens, metric, which):
        if which != "pattern":
            return right(model, clean_tokens, corrupted_tokens, metric, which)
        _, cache = model.run_with_cache(clean_tokens)
        return checks.loop_patching(model, corrupted_tokens, cache, metric, "blocks.{layer}.attn.hook_pattern",
                                    (model.cfg.n_heads,), lambda h: (slice(None), slice(None), h))

    assert names(judged(check, pattern_on_dest_axis), "wrong_head_axis")


def top_heads(results, k):
    flat = results.abs().flatten().argsort(descending=True)[:k]
    return [(int(i) // results.shape[1], int(i) % results.shape[1]) for i in flat]


def test_top_heads(judged):
    check = "check_top_heads"
    assert judged(check, top_heads) is None
    assert judged(check, lambda r, k: torch.tensor(top_heads(r, k))) is None
    assert names(judged(check, lambda r, k: top_heads(r.clamp(min=0), k)), "top_heads_signed")
    assert names(judged(check, lambda r, k: [(h, layer) for layer, h in top_heads(r, k)]), "top_heads_swapped")
    assert "not a set" in judged(check, lambda r, k: set(top_heads(r, k)))


# --- attribution patching -------------------------------------------------------------------------

def attribution(hook: str, sums: tuple[int, ...], backwards: bool = False, at_clean: bool = False,
                batch_mean: bool = False):
    """Attribution patching as a learner writes it (hooks and torch.autograd.grad), right or with one
    mistake: ``sums`` are the activation axes summed (batch excluded), the difference taken
    corrupted - clean, the gradient taken at the clean run, or the batch averaged."""
    def fn(model, clean_tokens, corrupted_tokens, metric):
        cached_tokens, run_tokens = (corrupted_tokens, clean_tokens) if at_clean else (clean_tokens, corrupted_tokens)
        _, cache = model.run_with_cache(cached_tokens)
        names = [hook.format(layer=layer) for layer in range(model.cfg.n_layers)]
        kept = {}

        def start(activation, hook):
            return activation.detach().requires_grad_(True)

        def keep(activation, hook, name):
            kept[name] = activation
            return activation

        with torch.enable_grad():
            hooks = [("hook_embed", start)] + [(name, lambda a, hook, name=name: keep(a, hook, name)) for name in names]
            value = metric(model.run_with_hooks(run_tokens, fwd_hooks=hooks))
            grads = torch.autograd.grad(value, [kept[name] for name in names])
        rows = []
        for name, grad in zip(names, grads):
            difference = kept[name] - cache[name]  # run - cached: clean - corrupted when the gradient is at the clean run
            if not at_clean:
                difference = -difference
            term = (-difference if backwards else difference) * grad
            term = term.mean(0) if batch_mean else term.sum(0)
            rows.append(term.sum(dim=tuple(d - 1 for d in sums)) if sums else term)
        return (value + torch.stack(rows)).detach()
    return fn


def test_attribution_of_the_residual_stream(judged):
    check, hook = "check_attribution_resid", "blocks.{layer}.hook_resid_pre"
    assert judged(check, attribution(hook, (2,))) is None
    assert names(judged(check, attribution(hook, (2,), backwards=True)), "attribution_backwards")
    assert names(judged(check, attribution(hook, (2,), at_clean=True)), "attribution_grad_at_clean")
    assert names(judged(check, attribution(hook, (2,), batch_mean=True)), "attribution_batch_mean")
    assert names(judged(check, attribution(hook, ())), "attribution_not_summed_d_model")
    assert names(judged(check, lambda *args: attribution(hook, (2,))(*args).T), "transposed")

    def exact(model, clean_tokens, corrupted_tokens, metric):
        _, cache = model.run_with_cache(clean_tokens)
        return reference_patching(model, corrupted_tokens, cache, metric, progress=False)

    assert names(judged(check, exact), "attribution_exact")


def test_attribution_of_head_outputs(judged):
    check, hook = "check_attribution_heads", "blocks.{layer}.attn.hook_z"
    assert judged(check, attribution(hook, (1, 3))) is None
    assert names(judged(check, attribution(hook, (1, 3), backwards=True)), "attribution_backwards")
    assert names(judged(check, attribution(hook, (1, 3), at_clean=True)), "attribution_grad_at_clean")
    assert names(judged(check, attribution(hook, (1, 3), batch_mean=True)), "attribution_batch_mean")
    assert names(judged(check, attribution(hook, (3,))), "attribution_not_summed_positions")
    assert names(judged(check, attribution(hook, (1,))), "attribution_not_summed_d_head")
    assert names(judged(check, lambda *args: attribution(hook, (1, 3))(*args).T), "head_transposed")
# --- path patching ---------------------------------------------------------------------------------

def path_patching(source: str = "clean", **options):
    """A learner's path patching of every sender (to the final residual stream, or with ``receivers`` and
    ``receiver_input`` to those heads' input), with ``checks.path_loop``'s ``options`` (its mistakes);
    ``source="corrupted"`` gives the sender its corrupted z, ``"swapped"`` runs the clean prompts."""
    def run(model, clean_tokens, corrupted_tokens, metric, receivers=None, receiver_input="q"):
        if source == "swapped":
            clean_tokens, corrupted_tokens = corrupted_tokens, clean_tokens
        _, clean_cache = model.run_with_cache(clean_tokens)
        _, corrupted_cache = model.run_with_cache(corrupted_tokens)
        sender = corrupted_cache if source == "corrupted" else clean_cache
        return checks.path_loop(model, corrupted_tokens, corrupted_cache, sender, metric, receivers, receiver_input,
                                **options)
    return run


def test_path_to_logits(judged):
    check = "check_path_to_logits"
    assert judged(check, path_patching()) is None
    assert names(judged(check, lambda *args: path_patching()(*args).T), "head_transposed")
    for learner, mistake in ((path_patching(freeze_heads=False), "path_not_frozen"),
                             (path_patching(freeze_mlps=True), "path_mlps_frozen"),
                             (path_patching(frozen_layers=-1), "path_freeze_short"),
                             (path_patching("swapped"), "path_wrong_direction"),
                             (path_patching("corrupted"), "path_sender_not_patched")):
        assert names(judged(check, learner), mistake), mistake


def test_path_to_receivers(judged):
    check = "check_path_to_receivers"
    right = path_patching()
    assert judged(check, right) is None
    keys = lambda model, clean, corrupted, metric, receivers, which: right(  # noqa: E731
        model, clean, corrupted, metric, receivers, "k")
    assert names(judged(check, keys), "path_wrong_receiver_input")
    assert names(judged(check, lambda *args: right(*args[:4])), "path_receivers_not_patched")
    for learner, mistake in ((path_patching(freeze_heads=False), "path_not_frozen"),
                             (path_patching(freeze_mlps=True), "path_mlps_frozen"),
                             (path_patching("swapped"), "path_wrong_direction")):
        assert names(judged(check, learner), mistake), mistake
