"""Head roles (patchlab.heads): copy scores against the heads' values read from a hooked run, the
attention check against a softmax of the hooked queries and keys, and the answer-logit split against
the direct effects on the logit difference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from patchlab.direct import direct_effects
from patchlab.heads import answer_logit_effects, attention_to, copy_scores


def name_positions(data):
    """Per prompt, the positions of IO and S1 (the first mention of each name)."""
    tokens = data.clean_tokens
    io = (tokens == data.answer_tokens[:, :1]).int().argmax(1)
    s1 = (tokens == data.answer_tokens[:, 1:]).int().argmax(1)
    return torch.stack([io, s1], dim=1)


def hooked_copy_scores(model, cache, tokens, positions, k, negative):
    """The copy score with the head's values taken from a run whose stream entering the head's layer
    is replaced by the state the copy score reads, then ranked with ``torch.topk``."""
    params, cfg = model.tl_parameters(), model.cfg
    rows = torch.arange(tokens.shape[0])[:, None]
    names = tokens[rows, positions].flatten()
    scores = torch.zeros(cfg.n_layers, cfg.n_heads)
    for layer in range(cfg.n_layers):
        state = cache[f"blocks.{min(layer, 1)}.hook_resid_pre"]
        kept = {}

        def replace(resid, hook):
            return state.clone()

        def keep(v, hook):
            kept["v"] = v.clone()
            return v

        with torch.no_grad():
            model.run_with_hooks(tokens, fwd_hooks=[(f"blocks.{layer}.hook_resid_pre", replace),
                                                    (f"blocks.{layer}.attn.hook_v", keep)])
        values = kept["v"][rows, positions].flatten(0, 1)  # [n, head, d_head]
        for head in range(cfg.n_heads):
            out = values[:, head] @ params[f"blocks.{layer}.attn.W_O"][head]
            final = F.layer_norm(out, (cfg.d_model,), params["ln_final.w"], params["ln_final.b"], cfg.eps)
            logits = final @ params["unembed.W_U"] + params["unembed.b_U"]
            top = torch.topk(-logits if negative else logits, k, dim=-1).indices
            scores[layer, head] = (top == names[:, None]).any(-1).float().mean()
    return scores


@pytest.mark.parametrize("at_s2", [False, True])
def test_copy_scores_match_the_hooked_values(model, classic, classic_run, at_s2):
    _, cache, _, _ = classic_run
    positions = torch.full((classic.n_prompts, 1), classic.s2_pos) if at_s2 else name_positions(classic)
    ours = copy_scores(model, cache, classic.clean_tokens, positions, k=5)
    assert ours.shape == (2, model.cfg.n_layers, model.cfg.n_heads)
    for row, negative in ((0, False), (1, True)):
        theirs = hooked_copy_scores(model, cache, classic.clean_tokens, positions, 5, negative)
        assert torch.equal(ours[row], theirs)
        assert 0 < theirs.sum() < theirs.numel()  # neither all 0 nor all 1: the comparison can fail
    some = copy_scores(model, cache, classic.clean_tokens, positions, heads=[(1, 0), (2, 3)])
    assert torch.equal(some[:, [1, 2], [0, 3]], ours[:, [1, 2], [0, 3]])
    assert some.isnan().sum() == 2 * (model.cfg.n_layers * model.cfg.n_heads - 2)


def test_copy_scores_reject_bad_input(model, classic, classic_run):
    _, cache, _, _ = classic_run
    with pytest.raises(ValueError, match="positions must be"):
        copy_scores(model, cache, classic.clean_tokens, name_positions(classic)[:, 0])
    with pytest.raises(ValueError, match="k must be"):
        copy_scores(model, cache, classic.clean_tokens, name_positions(classic), k=0)


def test_attention_to_matches_a_softmax_of_queries_and_keys(model, classic, classic_run):
    _, cache, _, _ = classic_run
    n = classic.n_prompts
    query = torch.full((n,), classic.end_pos)
    key = name_positions(classic)[:, 0]
    ours = attention_to(cache, model.cfg.n_layers, query, key)
    for layer in range(model.cfg.n_layers):
        q, k = cache[f"blocks.{layer}.attn.hook_q"], cache[f"blocks.{layer}.attn.hook_k"]  # [b, pos, h, d]
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / model.cfg.d_head ** 0.5
        pos = scores.shape[-1]
        scores = scores.masked_fill(torch.ones(pos, pos, dtype=torch.bool).triu(1), float("-inf"))
        pattern = scores.softmax(-1)
        theirs = torch.stack([pattern[b, :, query[b], key[b]] for b in range(n)]).mean(0)
        assert torch.allclose(ours[layer], theirs, atol=1e-5)


def test_answer_logit_effects_differ_by_the_direct_effect(model, classic, classic_run):
    _, cache, _, _ = classic_run
    io, s = answer_logit_effects(model, cache, classic.answer_tokens)
    heads = direct_effects(model, cache, classic.answer_tokens).heads.mean(-1)
    assert torch.allclose(io - s, heads, atol=1e-4)
    assert not torch.allclose(io, heads, atol=1e-2)  # the split is not the difference itself


def test_the_course_models_leading_heads_are_s_suppression_heads(model):
    """What chapters 8, 9 and 11 say of ioi-mini's heads 1.0 and 2.3: END -> S2, a negative copy score at
    S2, the S logit lowered far more than the IO logit; and the layer-0 heads 0.1 and 0.3 copy names."""
    from patchlab.ioi import generate_ioi

    data = generate_ioi(model, 64, seed=1)
    with torch.no_grad():
        _, cache = model.run_with_cache(data.clean_tokens)
    n = data.n_prompts
    s2, end = torch.full((n,), data.s2_pos), torch.full((n,), data.end_pos)
    leading = [(1, 0), (2, 3)]
    at_s2 = copy_scores(model, cache, data.clean_tokens, s2[:, None], heads=leading + [(0, 1), (0, 3)])
    to_s2 = attention_to(cache, model.cfg.n_layers, end, s2)
    io, s = answer_logit_effects(model, cache, data.answer_tokens)
    for l, h in leading:
        assert to_s2[l, h] > 0.9 and at_s2[1, l, h] > 0.9 and at_s2[0, l, h] < 0.1
        assert s[l, h] < 3 * min(io[l, h].item(), 0.0) - 1
    assert (at_s2[0, 0, [1, 3]] > 0.9).all()
