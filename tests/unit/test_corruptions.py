"""Other corruptions (patchlab.corruptions): the embedding noise lands where and how large it should,
patch_sets agrees with fast patching on single cells, and the name swap flips every mention."""

from __future__ import annotations

import pytest
import torch

from patchlab.corruptions import add_to_embeddings, embedding_noise, patch_sets, swap_names
from patchlab.ioi import classic_prompts
from patchlab.metrics import metric_from_runs
from patchlab.patching import fast_patching, hook_name


def test_noise_is_where_asked_and_three_embedding_stds(model, classic):
    noise = embedding_noise(model, classic.clean_tokens, [2, 10], factor=3.0, seed=0)
    assert noise[:, [0, 1, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14]].abs().max() == 0
    std = model.tl_parameters()["embed.W_E"].std().item()
    assert abs(noise[:, [2, 10]].std().item() / (3 * std) - 1) < 0.05  # 8 * 2 * 128 draws
    assert torch.equal(noise, embedding_noise(model, classic.clean_tokens, [2, 10], seed=0))
    with pytest.raises(ValueError, match="positions"):
        embedding_noise(model, classic.clean_tokens, [15])


def test_noised_run_differs_by_the_noise_and_layer0_patch_removes_it(model, classic, classic_run):
    clean_logits, cache, _, _ = classic_run
    noise = embedding_noise(model, classic.clean_tokens, [classic.s2_pos])
    seen = {}

    def keep(resid, hook):
        seen["resid"] = resid.clone()
        return resid

    with torch.no_grad():
        noised_logits = model.run_with_hooks(classic.clean_tokens, fwd_hooks=[add_to_embeddings(noise),
                                                                             ("blocks.0.hook_resid_pre", keep)])
    assert torch.allclose(seen["resid"] - cache["blocks.0.hook_resid_pre"], noise, atol=1e-5)
    metric = metric_from_runs(clean_logits, noised_logits, classic.answer_tokens)
    assert abs(metric.clean_logit_diff - metric.corrupted_logit_diff) > 1  # the noise matters
    name = hook_name("resid_pre", 0)
    values = patch_sets(model, classic.clean_tokens, cache, metric, [[(name, classic.s2_pos)], [(name, 3)]],
                        [add_to_embeddings(noise)])
    assert abs(values[0].item() - 1) < 1e-4  # the noise was only there: patching it back restores all
    assert abs(values[1].item()) < 1e-4  # nothing was noised there


def test_patch_sets_equal_fast_patching_on_single_cells_and_add_up_for_a_window(model, classic, classic_run):
    _, cache, _, metric = classic_run
    fast = fast_patching(model, classic.corrupted_tokens, cache, metric, "attn_out", progress=False)
    cells = [(layer, pos) for layer in range(model.cfg.n_layers) for pos in (classic.s2_pos, classic.end_pos)]
    ours = patch_sets(model, classic.corrupted_tokens, cache, metric,
                      [[(hook_name("attn_out", layer), pos)] for layer, pos in cells])
    assert torch.allclose(ours, torch.stack([fast[c] for c in cells]), atol=1e-4)
    assert ours.abs().max() > 0.1
    every = [(hook_name("resid_pre", layer), pos) for layer in range(model.cfg.n_layers)
             for pos in range(classic.clean_tokens.shape[1])]
    assert abs(patch_sets(model, classic.corrupted_tokens, cache, metric, [every])[0].item() - 1) < 1e-4


def test_swap_names_exchanges_every_mention():
    prompt = classic_prompts()[0]
    swapped = swap_names([prompt])[0]
    assert swapped.count(prompt.io) == prompt.text.count(prompt.s)
    assert swapped.count(prompt.s) == prompt.text.count(prompt.io)
    assert swap_names([type(prompt)(swapped, prompt.io, prompt.s, prompt.template)])[0] == prompt.text
