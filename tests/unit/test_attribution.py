"""Attribution patching (patchlab.patching.attribution) against independent computations: plain
attribution is exactly the gradient-times-difference it claims, computed here per cell through a
separate autograd path on a tiny random GPT-2; the QK fix of AtP* (attribution_patching_qk_fix) on the
course model against the patched attention pattern from a hooked run, the change of later scores from a
double backward pass (not forward-mode), and the first-order terms as derivatives along one scalar."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
import torch
from patching_setups import Setup, random_setup  # tests/unit/patching_setups.py

from patchlab import patching
from patchlab.hooks import act_name
from patchlab.patching import (
    COMPONENTS, agreement, attribution_patching, attribution_patching_qk_fix, fast_patching, hook_name,
)

TOLERANCE = 2e-4


@pytest.fixture(scope="module")
def setup(model: Any, classic: Any, classic_run: Any) -> tuple[Any, torch.Tensor, Any, Any]:
    _, cache, _, metric = classic_run
    return model, classic.corrupted_tokens, cache, metric


def slope(model: Any, tokens: torch.Tensor, metric: Any, hooks: Any) -> float:
    """metric + d metric / d alpha at alpha = 0, for hooks built from a scalar alpha."""
    alpha = torch.zeros((), requires_grad=True)
    with torch.enable_grad():
        value = metric(model.run_with_hooks(tokens, fwd_hooks=hooks(alpha)))
        (derivative,) = torch.autograd.grad(value, alpha)
    return value.item() + derivative.item()


@pytest.mark.parametrize("kind", ["q", "k"])
def test_queries_and_keys_linearise_only_after_the_exact_pattern(setup: Any, kind: str) -> None:
    model, tokens, cache, metric = setup
    fixed = attribution_patching_qk_fix(model, tokens, cache, metric, f"head_{kind}", progress=False)
    expected = torch.zeros_like(fixed)
    for layer in range(model.cfg.n_layers):
        for head in range(model.cfg.n_heads):
            name, pattern_name = f"blocks.{layer}.attn.hook_{kind}", act_name("pattern", layer)
            seen: dict[str, torch.Tensor] = {}

            def patch(activation: torch.Tensor, hook: Any) -> torch.Tensor:
                activation = activation.clone()
                activation[:, :, head] = cache[name][:, :, head]
                return activation

            def keep(pattern: torch.Tensor, hook: Any) -> torch.Tensor:
                seen["pattern"] = pattern
                return pattern

            with torch.no_grad():
                model.run_with_hooks(tokens, fwd_hooks=[(name, patch), (pattern_name, keep)])
                _, corrupted = model.run_with_cache(tokens, names_filter=pattern_name)
            before = corrupted[pattern_name]
            change = seen["pattern"] - before  # the exact change of the pattern (this head's only)

            def hooks(alpha: torch.Tensor) -> list:
                return [(pattern_name, lambda pattern, hook: pattern + alpha * change)]

            expected[layer, head] = slope(model, tokens, metric, hooks)
    assert torch.allclose(fixed, expected, atol=TOLERANCE)
    assert expected.std() > 1e-3


def test_head_outputs_linearise_the_scores_and_take_the_softmax_exactly(setup: Any) -> None:
    """Later patterns are frozen at the corrupted run; the head's output moves along alpha; each later
    pattern moves along beta towards softmax(scores + delta_scores), delta_scores from a double backward."""
    model, tokens, cache, metric = setup
    n_layers = model.cfg.n_layers
    fixed = attribution_patching_qk_fix(model, tokens, cache, metric, "head_out", progress=False)
    with torch.no_grad():
        _, corrupted = model.run_with_cache(tokens)
    expected = torch.zeros_like(fixed)
    for layer in range(n_layers):
        z_name = act_name("z", layer)
        for head in range(model.cfg.n_heads):
            delta = torch.zeros_like(corrupted[z_name])
            delta[:, :, head] = cache[z_name][:, :, head] - corrupted[z_name][:, :, head]
            alpha = torch.zeros((), requires_grad=True)
            scores: dict[str, torch.Tensor] = {}

            def keep(activation: torch.Tensor, hook: Any) -> torch.Tensor:
                scores[hook.name] = activation
                return activation

            later = [act_name("attn_scores", l) for l in range(layer + 1, n_layers)]
            targets = {}
            with torch.enable_grad():
                model.run_with_hooks(tokens, fwd_hooks=[(z_name, lambda z, hook: z + alpha * delta)]
                                     + [(name, keep) for name in later])
                for l, name in zip(range(layer + 1, n_layers), later):
                    finite = torch.isfinite(corrupted[name])
                    value = torch.where(finite, scores[name], 0.0)
                    dummy = torch.zeros_like(value, requires_grad=True)
                    (first,) = torch.autograd.grad(value, alpha, grad_outputs=dummy, create_graph=True)
                    (change,) = torch.autograd.grad(first, dummy)  # d scores / d alpha
                    moved = torch.where(finite, corrupted[name] + change, corrupted[name]).softmax(-1)
                    targets[act_name("pattern", l)] = moved - corrupted[act_name("pattern", l)]

            def hooks(step: torch.Tensor) -> list:
                frozen = [(act_name("pattern", l),
                           lambda p, hook: corrupted[hook.name] + step * targets.get(hook.name, 0.0))
                          for l in range(n_layers)]
                return [(z_name, lambda z, hook: z + step * delta), *frozen]

            expected[layer, head] = slope(model, tokens, metric, hooks)
    assert torch.allclose(fixed, expected, atol=TOLERANCE)
    assert expected.std() > 1e-2


def test_the_fix_moves_the_estimates_towards_exact_patching(setup: Any) -> None:
    """On the course model the QK fix is closer to exact patching than plain attribution, per component."""
    model, tokens, cache, metric = setup
    for component in ("head_q", "head_k", "head_out"):
        exact = fast_patching(model, tokens, cache, metric, component, progress=False)
        plain = attribution_patching(model, tokens, cache, metric, component, progress=False)
        fixed = attribution_patching_qk_fix(model, tokens, cache, metric, component, progress=False)
        assert agreement(fixed, exact)["pearson_r"] > agreement(plain, exact)["pearson_r"]
        assert not torch.allclose(fixed, plain, atol=1e-3)


def test_other_components_are_refused(setup: Any) -> None:
    with pytest.raises(ValueError, match="QK fix"):
        attribution_patching_qk_fix(*setup, "resid_pre", progress=False)


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
