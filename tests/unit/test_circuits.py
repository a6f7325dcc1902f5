"""Mean ablation (patchlab.ablation) against a hand-written hook on the attention output, and the
circuit scores of patchlab.circuits at their known end points."""

from __future__ import annotations

import pytest
import torch

from patchlab.ablation import all_heads, mean_z, run_ablated, run_ablated_with_cache
from patchlab.circuits import completeness, faithfulness, minimality, outside, score
from patchlab.metrics import logit_diff


@pytest.fixture(scope="module")
def means(model, classic):
    from patchlab.ioi import abc_ioi

    return mean_z(model, abc_ioi(model).corrupted_tokens)


def by_attn_out(model, tokens, heads, means):
    """Mean ablation written independently: add (mean z - z) @ W_O of each head to hook_attn_out."""
    params = model.tl_parameters()
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens)
    hooks = []
    for layer in sorted({l for l, _ in heads}):
        chosen = [h for l, h in heads if l == layer]
        change = means[layer, :, chosen] - cache[f"blocks.{layer}.attn.hook_z"][:, :, chosen]
        delta = torch.einsum("bphd,hdm->bpm", change, params[f"blocks.{layer}.attn.W_O"][chosen])
        hooks.append((f"blocks.{layer}.hook_attn_out", lambda out, hook, delta=delta: out + delta))
    return model.run_with_hooks(tokens, fwd_hooks=hooks)


def test_mean_ablation_equals_an_edit_of_the_attention_output(model, classic, means):
    heads = [(0, 1), (1, 0), (1, 2)]
    ours = run_ablated(model, classic.clean_tokens, heads, means)
    theirs = by_attn_out(model, classic.clean_tokens, heads[:1], means)  # one layer: later z unchanged
    single = run_ablated(model, classic.clean_tokens, heads[:1], means)
    assert torch.allclose(single, theirs, atol=1e-4)
    assert not torch.allclose(ours, single, atol=1e-2)
    logits, cache = run_ablated_with_cache(model, classic.clean_tokens, heads, means)
    assert torch.equal(logits, ours)
    assert torch.equal(cache["blocks.1.attn.hook_z"][:, :, 0], means[1, :, 0].expand(classic.n_prompts, -1, -1))


def test_means_are_per_position_over_the_reference(model, classic):
    tokens = classic.corrupted_tokens
    means = mean_z(model, tokens)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens)
    assert means.shape == (model.cfg.n_layers, tokens.shape[1], model.cfg.n_heads, model.cfg.d_head)
    assert torch.allclose(means[2], cache["blocks.2.attn.hook_z"].mean(0))


def test_length_mismatch_is_explained(model, classic, means):
    with pytest.raises(ValueError, match="same template and length"):
        run_ablated(model, classic.clean_tokens[:, :-1], [(0, 0)], means)


def test_scores_at_their_end_points(model, classic, classic_run, means):
    clean_logits = classic_run[0]
    tokens, answers = classic.clean_tokens, classic.answer_tokens
    everything = all_heads(model)
    result = faithfulness(model, tokens, answers, means, everything)
    assert result.model_score == pytest.approx(logit_diff(clean_logits, answers).item(), abs=1e-4)
    assert result.fraction == pytest.approx(1.0) and result.normalised == pytest.approx(1.0)
    # every head ablated: each attention output is the mean heads' output plus b_O, whatever the prompt
    params = model.tl_parameters()
    written = [torch.einsum("phd,hdm->pm", means[layer], params[f"blocks.{layer}.attn.W_O"])
               + params[f"blocks.{layer}.attn.b_O"] for layer in range(model.cfg.n_layers)]
    hooks = [(f"blocks.{layer}.hook_attn_out", lambda out, hook, layer=layer: written[layer].expand_as(out))
             for layer in range(model.cfg.n_layers)]
    with torch.no_grad():
        by_hand = logit_diff(model.run_with_hooks(tokens, fwd_hooks=hooks), answers).item()
    assert result.empty_score == pytest.approx(by_hand, abs=1e-4)
    assert outside(model, everything) == [] and len(outside(model, [(0, 0)])) == len(everything) - 1
    circuit = [(1, 0), (2, 3)]
    (c_k, m_k), = completeness(model, tokens, answers, means, circuit, [[(1, 0)]])
    assert c_k == pytest.approx(score(model, tokens, answers, means, [(2, 3)]))
    assert m_k == pytest.approx(score(model, tokens, answers, means, [h for h in everything if h != (1, 0)]))
    with pytest.raises(ValueError, match="not a subset"):
        completeness(model, tokens, answers, means, circuit, [[(0, 0)]])


def test_minimality_takes_the_largest_gap_over_contexts(model, classic, means):
    tokens, answers = classic.clean_tokens, classic.answer_tokens
    circuit = [(0, 1), (1, 0), (2, 3)]
    scores = minimality(model, tokens, answers, means, circuit)
    assert set(scores) == set(circuit)
    f = lambda kept: score(model, tokens, answers, means, kept)  # noqa: E731
    alone = abs(f([(0, 1), (2, 3)]) - f(circuit))
    gap, context = scores[(1, 0)]
    assert gap >= alone - 1e-5 and (1, 0) not in context
    without_context = [lh for lh in circuit if lh not in context]
    expected = abs(f([lh for lh in without_context if lh != (1, 0)]) - f(without_context))
    assert gap == pytest.approx(expected, abs=1e-5)
