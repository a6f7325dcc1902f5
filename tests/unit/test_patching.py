"""The reference patching loop equals TransformerLens's own patching functions."""

from __future__ import annotations

import pytest
import torch
from patching_setups import slow_by_pos  # tests/unit/patching_setups.py
from tl_functions import TL_FUNCTIONS  # tests/unit/tl_functions.py

from patchlab.patching import COMPONENTS, hook_name, reference_cells, reference_patching

# head_out is checked on its own below, with its shape.
SWEPT = sorted(set(TL_FUNCTIONS) - {"head_out"})

# [n_layers, *shape] of each component's table on the classic prompts (15 tokens) of ioi-mini (4 heads).
SHAPES = {"pos": (15,), "head": (4,), "by_pos": (15, 4), "pattern_by_pos": (4, 15)}


def expected_shape(component: str) -> tuple[int, ...]:
    if component.endswith("pattern_by_pos"):
        return SHAPES["pattern_by_pos"]
    if component.endswith("_by_pos"):
        return SHAPES["by_pos"]
    return SHAPES["head"] if component.startswith("head_") else SHAPES["pos"]


def test_every_component_is_checked_against_transformer_lens():
    assert set(SWEPT) | {"head_out"} == set(COMPONENTS)


@pytest.mark.parametrize("component", slow_by_pos(SWEPT))
def test_reference_equals_transformer_lens(model, classic, classic_run, component):
    _, cache, _, metric = classic_run
    ours = reference_patching(model, classic.corrupted_tokens, cache, metric, component, progress=False)
    theirs = TL_FUNCTIONS[component](model, classic.corrupted_tokens, cache, metric)
    assert ours.shape == (model.cfg.n_layers, *expected_shape(component))
    assert torch.allclose(ours, theirs.cpu().float(), atol=1e-5, rtol=0)
    # Some patch changes the metric, so the comparison can fail (keys matter least on ioi-mini: ~2e-3).
    assert ours.abs().max() > 1e-3


def test_reference_head_out_equals_transformer_lens(model, classic, classic_run):
    _, cache, _, metric = classic_run
    ours = reference_patching(model, classic.corrupted_tokens, cache, metric, "head_out", progress=False)
    theirs = TL_FUNCTIONS["head_out"](model, classic.corrupted_tokens, cache, metric)
    assert ours.shape == (model.cfg.n_layers, model.cfg.n_heads)
    assert torch.allclose(ours, theirs.cpu().float(), atol=1e-5, rtol=0)


def test_patch_before_s2_changes_nothing_and_full_patch_restores_clean(model, classic, classic_run):
    _, cache, _, metric = classic_run
    values = reference_patching(model, classic.corrupted_tokens, cache, metric, progress=False)
    assert torch.all(values[:, : classic.s2_pos] == 0)
    # Patching the whole residual stream at layer 0 turns the corrupted run into the clean run.
    name = hook_name("resid_pre", 0)
    logits = model.run_with_hooks(classic.corrupted_tokens, fwd_hooks=[(name, lambda act, hook: cache[name])])
    assert metric(logits).item() == pytest.approx(1.0, abs=1e-5)


def test_clean_cache_is_not_modified(model, classic, classic_run):
    _, cache, _, metric = classic_run
    name = hook_name("resid_pre", 1)
    before = cache[name].clone()
    reference_patching(model, classic.corrupted_tokens, cache, metric, progress=False)
    assert torch.equal(cache[name], before)


def test_bad_component_and_mismatched_batch(model, classic, classic_run):
    _, cache, _, metric = classic_run
    with pytest.raises(ValueError, match="unknown component"):
        reference_patching(model, classic.corrupted_tokens, cache, metric, "resid_middle", progress=False)
    with pytest.raises(ValueError, match="batches must match"):
        reference_patching(model, classic.corrupted_tokens[:3], cache, metric, progress=False)


@pytest.mark.parametrize("component", slow_by_pos(["head_out_by_pos", "head_pattern_by_pos", "resid_pre"]))
def test_reference_cells_are_transformer_lenss_cells(model, classic, classic_run, component):
    """A spot check of some cells equals TransformerLens's whole sweep at those cells."""
    _, clean_cache, _, metric = classic_run
    with torch.no_grad():
        expected = TL_FUNCTIONS[component](model, classic.corrupted_tokens, clean_cache, metric)
    generator = torch.Generator().manual_seed(0)
    flat = torch.randperm(expected.numel(), generator=generator)[:6]
    cells = [tuple(int(i) for i in torch.unravel_index(f, expected.shape)) for f in flat]
    with torch.no_grad():
        got = reference_cells(model, classic.corrupted_tokens, clean_cache, metric, component, cells)
    torch.testing.assert_close(got, torch.stack([expected[c].float().cpu() for c in cells]), atol=1e-5, rtol=1e-4)
