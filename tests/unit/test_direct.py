"""Direct logit attribution and the logit lens (patchlab.direct) against TransformerLens's own
``ActivationCache`` decompositions, and the parts summing to the logit difference."""

from __future__ import annotations

import torch

from patchlab.direct import (
    direct_effects, final_scale, leading_heads, logit_diff_constant, logit_diff_directions, logit_lens, ranked_heads,
)
from patchlab.metrics import logit_diff


def tl_direction(model, answer_tokens):
    """TransformerLens's logit difference direction (its LN gain is folded into ``W_U``)."""
    directions = model.tokens_to_residual_directions(answer_tokens)
    return directions[:, 0] - directions[:, 1]


def tl_read(cache, stack, direction, **kwargs):
    """Project a TransformerLens residual stack through its frozen final LayerNorm onto ``direction``."""
    normed = cache.apply_ln_to_stack(stack, layer=-1, pos_slice=-1, **kwargs)
    return (normed * direction).sum(-1)


def test_parts_sum_to_the_logit_difference(model, classic, classic_run):
    clean_logits, cache, _, _ = classic_run
    effects = direct_effects(model, cache, classic.answer_tokens)
    actual = logit_diff(clean_logits, classic.answer_tokens, per_prompt=True)
    assert torch.allclose(effects.logit_diff, actual, atol=1e-4)
    assert torch.allclose(effects.total(), actual, atol=1e-4)
    assert effects.heads.shape == (model.cfg.n_layers, model.cfg.n_heads, classic.n_prompts)


def test_heads_equal_transformer_lens_stack_head_results(model, classic, classic_run):
    _, cache, _, _ = classic_run
    effects = direct_effects(model, cache, classic.answer_tokens)
    stack = cache.stack_head_results(layer=-1, pos_slice=-1)  # [layer*head, batch, d_model]
    theirs = tl_read(cache, stack, tl_direction(model, classic.answer_tokens))
    assert torch.allclose(effects.heads.flatten(0, 1), theirs, atol=1e-4)
    assert effects.heads.abs().max() > 1.0  # some head matters, so the comparison can fail


def test_layers_equal_transformer_lens_decompose_resid(model, classic, classic_run):
    _, cache, _, _ = classic_run
    effects = direct_effects(model, cache, classic.answer_tokens)
    stack, labels = cache.decompose_resid(layer=-1, pos_slice=-1, return_labels=True)
    theirs = dict(zip(labels, tl_read(cache, stack, tl_direction(model, classic.answer_tokens))))
    for layer in range(model.cfg.n_layers):
        assert torch.allclose(effects.attn_layers[layer], theirs[f"{layer}_attn_out"], atol=1e-4)
        assert torch.allclose(effects.mlps[layer], theirs[f"{layer}_mlp_out"], atol=1e-4)
    assert torch.allclose(effects.embed, theirs["embed"], atol=1e-5)
    assert torch.allclose(effects.pos_embed, theirs["pos_embed"], atol=1e-5)


def test_logit_lens_equals_transformer_lens_accumulated_resid(model, classic, classic_run):
    clean_logits, cache, _, _ = classic_run
    stack = cache.accumulated_resid(layer=None, incl_mid=False, pos_slice=-1)  # [layer+1, batch, d_model]
    assert stack.shape[0] == model.cfg.n_layers + 1
    direction = tl_direction(model, classic.answer_tokens)
    frozen, own = logit_lens(model, cache, classic.answer_tokens, True), logit_lens(model, cache, classic.answer_tokens)
    # TransformerLens reads no constant: the final LN's bias through W_U, and b_U (ours: logit_diff_constant)
    constant = logit_diff_constant(model, classic.answer_tokens)
    assert torch.allclose(frozen["resid_pre"], tl_read(cache, stack, direction)[:-1] + constant, atol=1e-4)
    assert torch.allclose(own["resid_pre"], tl_read(cache, stack, direction, recompute_ln=True)[:-1] + constant,
                          atol=1e-4)
    assert torch.allclose(own["resid_post"][:-1], own["resid_pre"][1:])
    # the lens of the final stream is the model's own logit difference, whichever scale
    actual = logit_diff(clean_logits, classic.answer_tokens, per_prompt=True)
    assert torch.allclose(own["resid_post"][-1], actual, atol=1e-4)
    assert torch.allclose(frozen["resid_post"][-1], actual, atol=1e-4)


def test_frozen_scale_of_another_run_changes_the_parts_not_their_linearity(model, classic, classic_run):
    _, cache, _, _ = classic_run
    with torch.no_grad():
        _, corrupted_cache = model.run_with_cache(classic.corrupted_tokens)
    effects = direct_effects(model, corrupted_cache, classic.answer_tokens, scale=final_scale(cache))
    # with another run's scale the parts still add up, to that run's stream read at this scale
    final = corrupted_cache[f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"][:, -1]
    centred = final - final.mean(-1, keepdim=True)
    expected = (centred / final_scale(cache) * logit_diff_directions(model, classic.answer_tokens)).sum(-1)
    assert torch.allclose(effects.total(), expected + effects.constant, atol=1e-4)


def test_parts_sum_on_a_model_of_another_shape():
    from patchlab.ioi import classic_ioi
    from patchlab.models import load_model

    other = load_model("ioi-mini-reshaped", device="cpu", verbose=False)
    data = classic_ioi(other)
    with torch.no_grad():
        logits, cache = other.run_with_cache(data.clean_tokens)
    effects = direct_effects(other, cache, data.answer_tokens)
    assert effects.heads.shape == (5, 8, 8)
    assert torch.allclose(effects.total(), logit_diff(logits, data.answer_tokens, per_prompt=True), atol=1e-3)


def test_ranking_helpers():
    values = torch.tensor([[0.1, 3.0], [-2.0, 1.0]])
    assert ranked_heads(values) == [(0, 1), (1, 1), (0, 0), (1, 0)]
    assert leading_heads(values, 0.3) == [(0, 1)]  # 1.0 < 0.3 * 4.1
    assert leading_heads(values, 0.1) == [(0, 1), (1, 1)]  # 0.1 < 0.41
    assert leading_heads(-values.abs()) == [(0, 0)]  # no positive value: the largest one alone
