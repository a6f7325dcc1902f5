"""Fast exact patching and attribution patching against independent computations.

Fast patching must give the reference loop's numbers (and TransformerLens's) on the course model and
on a tiny random GPT-2, for every component and for the edge cases of its shortcuts. Attribution
patching must be exactly the gradient-times-difference it claims, computed here per cell through
a separate autograd path.
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tl_functions import TL_FUNCTIONS  # tests/tl_functions.py

from patchlab import patching
from patchlab.metrics import PatchingMetric, logit_diff, patching_metric
from patchlab.models import _finish, load_course_tokenizer
from patchlab.patching import (
    COMPONENTS, METHODS, FastPatchingFallback, agreement, attribution_patching, fast_patching, hook_name,
    patch_ioi, reference_patching,
)

TOLERANCE = 1e-4  # max |fast - reference| of the normalised metric


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


@pytest.fixture(scope="module")
def mini(model: Any, classic: Any, classic_run: Any) -> Setup:
    """The course model on the 8 classic prompts (the session fixtures of conftest.py)."""
    _, cache, _, metric = classic_run
    return Setup(model, classic.corrupted_tokens, cache, metric)


@pytest.fixture(scope="module")
def tiny() -> Any:
    """A 2-layer GPT-2 with random weights (large enough that logits differ clearly between inputs)."""
    from transformer_lens.model_bridge.sources._bridge_builder import build_bridge_from_module
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = load_course_tokenizer()
    config = GPT2Config(n_layer=2, n_embd=64, n_head=4, n_positions=32, vocab_size=len(tokenizer),
                        initializer_range=0.2, attn_implementation="eager")
    torch.manual_seed(0)
    hf_model = GPT2LMHeadModel(config).eval()
    bridge = build_bridge_from_module(hf_model, "GPT2LMHeadModel", hf_config=config, tokenizer=tokenizer,
                                      model_name="tiny-gpt2")
    return _finish(bridge, "tiny-gpt2")


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


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.cpu() - b.cpu()).abs().max().item()


@pytest.mark.parametrize("component", COMPONENTS)
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


@pytest.mark.parametrize("component", COMPONENTS)
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


@pytest.mark.parametrize("component", COMPONENTS)
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


def alpha_gradient(setup: Setup, component: str, layer: int, index: tuple[int, ...]) -> float:
    """metric + d metric / d alpha at alpha = 0, patching ``corrupted + alpha * (clean - corrupted)``
    into one cell (a position, a head at every position, or a head at one position), through its own
    forward pass."""
    name = hook_name(component, layer)
    alpha = torch.zeros((), requires_grad=True)
    clean = setup.cache[name]

    def hook(activation: torch.Tensor, hook: Any) -> torch.Tensor:
        where = torch.zeros_like(activation)
        where[patching.component(component).selector(index)] = 1
        return activation + alpha * where * (clean - activation)

    with torch.enable_grad():
        value = setup.metric(setup.model.run_with_hooks(setup.corrupted, fwd_hooks=[(name, hook)]))
        (slope,) = torch.autograd.grad(value, alpha)
    return value.item() + slope.item()


@pytest.mark.parametrize("component", COMPONENTS)
def test_attribution_is_the_gradient_times_the_difference(tiny: Any, component: str) -> None:
    setup = random_setup(tiny, batch=2, n_pos=5, differ="from a different position per prompt", seed=6)
    attribution = setup.run(attribution_patching, component)
    sizes = patching.component(component).sizes(tiny, 5)
    assert attribution.shape == (tiny.cfg.n_layers, *sizes)
    cells = list(itertools.product(range(tiny.cfg.n_layers), *(range(size) for size in sizes)))
    expected = torch.tensor([alpha_gradient(setup, component, layer, tuple(index)) for layer, *index in cells])
    expected = expected.view(attribution.shape)
    assert torch.allclose(attribution, expected, rtol=1e-4, atol=1e-4)
    assert expected.std() > 1e-3


@pytest.mark.parametrize("method", [fast_patching, attribution_patching])
def test_patches_that_change_nothing_score_as_the_corrupted_run(tiny: Any, method: Any) -> None:
    """Only the last token differs: patching any earlier position changes nothing (metric 0)."""
    setup = random_setup(tiny, batch=2, n_pos=5, differ="only the last token", seed=7)
    values = setup.run(method, "mlp_out")
    assert values[:, :-1].abs().max() <= 1e-6
    assert values[:, -1].abs().max() > 1e-3


def test_agreement_is_pearson_r_and_max_error() -> None:
    a, b = torch.tensor([[0.0, 1.0], [2.0, 4.0]]), torch.tensor([[0.1, 0.9], [2.5, 3.0]])
    result = agreement(a, b)
    assert result["pearson_r"] == pytest.approx(np.corrcoef(a.flatten(), b.flatten())[0, 1])
    assert result["max_abs_error"] == pytest.approx(1.0)


def test_attribution_agreement_with_exact_on_the_course_model(mini: Setup) -> None:
    """Reports (does not assert) how well attribution tracks exact patching on ioi-mini."""
    for component in ("resid_pre", "head_out"):
        stats = agreement(mini.run(attribution_patching, component), mini.run(fast_patching, component))
        assert -1.0 <= stats["pearson_r"] <= 1.0 and stats["max_abs_error"] >= 0
        print(f"ioi-mini {component}: attribution vs exact {stats}")


def test_every_method_is_registered_and_interchangeable(mini: Setup, classic: Any) -> None:
    assert set(METHODS) == {"reference", "fast", "attribution"}
    for method in METHODS:
        result = patch_ioi(mini.model, classic, "head_out", method, progress=False)
        assert result.method == method
        assert result.values.shape == (mini.model.cfg.n_layers, mini.model.cfg.n_heads)
