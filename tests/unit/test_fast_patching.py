"""Fast exact patching against independent computations.

Fast patching must give the reference loop's numbers (and TransformerLens's) on the course model and
on a tiny random GPT-2 (the ``mini`` and ``tiny`` fixtures of conftest.py), for every component and for
the edge cases of its shortcuts. Attribution patching: test_attribution.py.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from patching_setups import Setup, random_setup, slow_by_pos  # tests/unit/patching_setups.py
from tl_functions import TL_FUNCTIONS  # tests/unit/tl_functions.py

from patchlab import patching
from patchlab.patching import (
    COMPONENTS, METHODS, FastPatchingFallback, attribution_patching, fast_patching, patch_ioi, reference_patching,
)

TOLERANCE = 1e-4  # max |fast - reference| of the normalised metric


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.cpu() - b.cpu()).abs().max().item()


@pytest.mark.parametrize("component", slow_by_pos(COMPONENTS))
def test_fast_equals_reference_on_the_course_model(mini: Setup, component: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", FastPatchingFallback)
        fast = mini.run(fast_patching, component)
    reference = mini.run(reference_patching, component)
    assert fast.shape == reference.shape
    assert max_diff(fast, reference) <= TOLERANCE
    if component == "resid_pre":  # and the same as TransformerLens's own sweep
        tl = TL_FUNCTIONS[component](mini.model, mini.corrupted, mini.cache, mini.metric)
        assert max_diff(fast, tl) <= TOLERANCE


@pytest.mark.parametrize("component", slow_by_pos(COMPONENTS))
@pytest.mark.parametrize("differ", ["every position", "only the last token", "only the first token",
                                    "from a different position per prompt"])
def test_fast_equals_reference_on_a_random_gpt2(tiny: Any, component: str, differ: str) -> None:
    setup = random_setup(tiny, batch=3, n_pos=7, differ=differ)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FastPatchingFallback)
        fast = setup.run(fast_patching, component)
    reference = setup.run(reference_patching, component)
    assert max_diff(fast, reference) <= TOLERANCE
    assert reference.std() > 1e-3  # the patches really do change the metric: the test can fail


@pytest.mark.parametrize("component", slow_by_pos(COMPONENTS))
def test_fast_equals_transformer_lens_for_a_batch_of_one(tiny: Any, component: str) -> None:
    setup = random_setup(tiny, batch=1, n_pos=6, differ="every position", seed=1)
    fast = setup.run(fast_patching, component)
    tl = TL_FUNCTIONS[component](tiny, setup.corrupted, setup.cache, setup.metric)
    assert max_diff(fast, tl) <= TOLERANCE
    # The corners: position 0 and the last layer.
    reference = setup.run(reference_patching, component)
    assert max_diff(fast[-1], reference[-1]) <= TOLERANCE and max_diff(fast[:, 0], reference[:, 0]) <= TOLERANCE


def test_fast_is_exact_for_any_final_position_metric(tiny: Any) -> None:
    setup = random_setup(tiny, batch=2, n_pos=6, differ="every position", seed=2)
    rows = torch.arange(2)

    def answer_log_prob(logits: torch.Tensor) -> torch.Tensor:
        return logits[:, -1].log_softmax(-1)[rows, setup.metric.answer_tokens[:, 0]].mean()

    with warnings.catch_warnings():
        warnings.simplefilter("error", FastPatchingFallback)
        fast = setup.run(fast_patching, "resid_pre", answer_log_prob)
    reference = setup.run(reference_patching, "resid_pre", answer_log_prob)
    assert max_diff(fast, reference) <= TOLERANCE


@pytest.mark.parametrize("position", [0, -2])
def test_fast_falls_back_for_a_metric_of_other_positions(tiny: Any, position: int) -> None:
    setup = random_setup(tiny, batch=2, n_pos=5, differ="every position", seed=3)

    def top_logit(logits: torch.Tensor) -> torch.Tensor:
        return logits[:, position].max(-1).values.mean()

    with pytest.warns(FastPatchingFallback, match="falling back to the reference loop because the metric"):
        fast = setup.run(fast_patching, "mlp_out", top_logit)
    assert torch.equal(fast, setup.run(reference_patching, "mlp_out", top_logit))


def test_fast_falls_back_for_an_unsupported_model(tiny: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    setup = random_setup(tiny, batch=2, n_pos=5, differ="every position", seed=4)
    monkeypatch.setattr(tiny.cfg, "positional_embedding_type", "rotary")
    with pytest.warns(FastPatchingFallback, match="not a GPT-2-style transformer"):
        fast = setup.run(fast_patching, "resid_pre")
    assert torch.equal(fast, setup.run(reference_patching, "resid_pre"))


def test_fast_checks_its_kernel_against_the_model(tiny: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    setup = random_setup(tiny, batch=2, n_pos=5, differ="every position", seed=5)
    monkeypatch.setitem(patching.kernel.ACTIVATIONS, "gelu_new", F.relu)  # a kernel that computes the wrong thing
    with pytest.warns(FastPatchingFallback, match="does not reproduce the model's logits"):
        fast = setup.run(fast_patching, "attn_out")
    assert torch.equal(fast, setup.run(reference_patching, "attn_out"))


def test_fast_rejects_bad_input(tiny: Any) -> None:
    setup = random_setup(tiny, batch=2, n_pos=5, differ="every position")
    with pytest.raises(ValueError, match="unknown component"):
        setup.run(fast_patching, "resid_post")
    with pytest.raises(ValueError, match="batches must match"):
        fast_patching(tiny, setup.corrupted[:1], setup.cache, setup.metric, progress=False)


@pytest.mark.parametrize("method", [fast_patching, attribution_patching])
def test_patches_that_change_nothing_score_as_the_corrupted_run(tiny: Any, method: Any) -> None:
    """Only the last token differs: patching any earlier position changes nothing (metric 0)."""
    setup = random_setup(tiny, batch=2, n_pos=5, differ="only the last token", seed=7)
    values = setup.run(method, "mlp_out")
    assert values[:, :-1].abs().max() <= 1e-6
    assert values[:, -1].abs().max() > 1e-3


def test_every_method_is_registered_and_interchangeable(mini: Setup, classic: Any) -> None:
    assert set(METHODS) == {"reference", "fast", "attribution"}
    for method in METHODS:
        result = patch_ioi(mini.model, classic, "head_out", method, progress=False)
        assert result.method == method
        assert result.values.shape == (mini.model.cfg.n_layers, mini.model.cfg.n_heads)
