"""IOI data: the classic prompts, their tokenization, corrupted twins, the generator and bad input."""

from __future__ import annotations

import pytest
import torch

from patchlab import ioi

# The prompts and answers of TransformerLens's Exploratory Analysis demo, written out independently.
DEMO_PROMPTS = [
    "When John and Mary went to the shops, John gave the bag to",
    "When John and Mary went to the shops, Mary gave the bag to",
    "When Tom and James went to the park, James gave the ball to",
    "When Tom and James went to the park, Tom gave the ball to",
    "When Dan and Sid went to the shops, Sid gave an apple to",
    "When Dan and Sid went to the shops, Dan gave an apple to",
    "After Martin and Amy went to the park, Amy gave a drink to",
    "After Martin and Amy went to the park, Martin gave a drink to",
]
DEMO_ANSWERS = [
    (" Mary", " John"), (" John", " Mary"), (" Tom", " James"), (" James", " Tom"),
    (" Dan", " Sid"), (" Sid", " Dan"), (" Martin", " Amy"), (" Amy", " Martin"),
]
GPT2_TOKENS = ["<|endoftext|>", "When", " John", " and", " Mary", " went", " to", " the", " shops", ",",
               " John", " gave", " the", " bag", " to"]


def test_classic_prompts_are_the_demo_prompts():
    prompts = ioi.classic_prompts()
    assert [p.text for p in prompts] == DEMO_PROMPTS
    assert [(p.io, p.s) for p in prompts] == DEMO_ANSWERS


def test_corrupted_prompts_are_the_pairs_swapped():
    prompts = ioi.classic_prompts()
    swapped = [DEMO_PROMPTS[i + 1 if i % 2 == 0 else i - 1] for i in range(8)]
    assert [p.corrupted_text for p in prompts] == swapped


def test_classic_tokens_have_gpt2_positions(model, classic):
    assert classic.clean_tokens.shape == (8, 15)
    assert classic.str_tokens == GPT2_TOKENS
    assert (classic.s2_pos, classic.end_pos) == (10, 14)
    differs = (classic.clean_tokens != classic.corrupted_tokens).any(0)
    assert differs.nonzero().flatten().tolist() == [10], "only S2 may differ between clean and corrupted"
    order = [i + 1 if i % 2 == 0 else i - 1 for i in range(8)]
    assert torch.equal(classic.corrupted_tokens, classic.clean_tokens[order])
    for row, (io, s) in zip(classic.answer_tokens.tolist(), DEMO_ANSWERS):
        assert model.to_str_tokens(torch.tensor(row)) == [io, s]


def test_first_is_a_batch_of_the_first_prompts_and_leaves_the_whole_as_it_was(classic):
    two = classic.first(2)
    assert (two.n_prompts, two.prompts) == (2, classic.prompts[:2])
    for name in ("clean_tokens", "corrupted_tokens", "answer_tokens"):
        assert torch.equal(getattr(two, name), getattr(classic, name)[:2]), name
    assert (two.str_tokens, two.s2_pos, two.end_pos) == (classic.str_tokens, classic.s2_pos, classic.end_pos)
    assert classic.n_prompts == 8 and classic.first(100).n_prompts == 8


def test_generate_ioi_is_reproducible_and_consistent(model):
    a = ioi.generate_ioi(model, 12, seed=3)
    b = ioi.generate_ioi(model, 12, seed=3)
    c = ioi.generate_ioi(model, 12, seed=4)
    assert torch.equal(a.clean_tokens, b.clean_tokens)
    assert not torch.equal(a.clean_tokens, c.clean_tokens)
    assert a.clean_tokens.shape[0] == 12
    n_abba = sum(p.template != ioi.DEMO_BABA_TEMPLATES[0] for p in a.prompts)
    assert n_abba == 6
    for p, tokens, answers in zip(a.prompts, a.clean_tokens, a.answer_tokens):
        strs = model.to_str_tokens(tokens)
        assert strs[a.s2_pos] == p.s and strs.count(p.s) == 2 and strs.count(p.io) == 1
        assert model.to_str_tokens(answers) == [p.io, p.s]
    diff_positions = (a.clean_tokens != a.corrupted_tokens).any(0).nonzero().flatten().tolist()
    assert diff_positions == [a.s2_pos]


def test_sample_prompts_fill_every_slot():
    for p in ioi.sample_prompts(200, seed=1):
        assert "[" not in p.text and p.text.count(p.s) == 2 and p.text.count(p.io) == 1


def test_name_that_is_not_one_token_is_rejected(model):
    bad = ioi.IOIPrompt("When Mary-Jane and John went to the shops, Mary-Jane gave the bag to", " John",
                        " Mary-Jane", "")
    with pytest.raises(ioi.IOIInputError, match="single tokens"):
        ioi.make_ioi_data(model, [bad])


def test_unknown_word_is_rejected(model):
    bad = ioi.IOIPrompt("When Zyxwv and Mary went to the shops, Zyxwv gave the bag to", " Mary", " Zyxwv", "")
    with pytest.raises(ioi.IOIInputError, match="not in this model's vocabulary"):
        ioi.make_ioi_data(model, [bad])


def test_prompts_of_different_lengths_are_rejected(model):
    prompts = ioi.classic_prompts()[:2]
    longer = ioi.IOIPrompt("When John and Mary went to the big shops, John gave the bag to", " Mary", " John", "")
    with pytest.raises(ioi.IOIInputError, match="same number of tokens"):
        ioi.make_ioi_data(model, [prompts[0], longer])
    with pytest.raises(ioi.IOIInputError, match="tokens"):
        ioi.make_ioi_data(model, prompts, corrupted=[DEMO_PROMPTS[1] + " the", DEMO_PROMPTS[0] + " the"])


def test_mismatched_batch_sizes_are_rejected(model):
    with pytest.raises(ioi.IOIInputError, match="one corrupted prompt per clean prompt"):
        ioi.make_ioi_data(model, ioi.classic_prompts()[:4], corrupted=DEMO_PROMPTS[:3])


def test_unknown_template_is_rejected(model):
    with pytest.raises(ioi.IOIInputError, match="unknown template"):
        ioi.generate_ioi(model, 4, template="[B] met [A]. [B] waved at [A]")


def test_abc_corruption_puts_a_third_name_at_s2_only(model):
    prompts = ioi.classic_prompts()
    texts = ioi.abc_corruption(prompts, seed=0)
    assert texts == ioi.abc_corruption(prompts, seed=0)
    assert texts != ioi.abc_corruption(prompts, seed=1)
    for prompt, text in zip(prompts, texts):
        head, _, tail = prompt.text.rpartition(prompt.s)
        assert text.startswith(head) and text.endswith(tail)
        third = text[len(head): len(text) - len(tail)]
        assert third.strip() in ioi.NAMES and third not in (prompt.io, prompt.s)
    data = ioi.abc_ioi(model)
    assert (data.clean_tokens != data.corrupted_tokens).any(0).nonzero().flatten().tolist() == [data.s2_pos]
    assert torch.equal(data.answer_tokens, ioi.classic_ioi(model).answer_tokens)
    clean_rows = {tuple(r) for r in data.clean_tokens.tolist()}
    assert not clean_rows & {tuple(r) for r in data.corrupted_tokens.tolist()}, "ABC twins are no clean prompts"


def test_abc_corruption_needs_a_third_name():
    with pytest.raises(ioi.IOIInputError, match="third name"):
        ioi.abc_corruption(ioi.classic_prompts()[:1], names=["John", "Mary"])


def _head_sweep(model, run_tokens, source_cache, metric):
    """metric of ``run_tokens`` with each head's z (all positions) from ``source_cache``: hand-written hooks."""
    values = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
    for layer in range(model.cfg.n_layers):
        name = f"blocks.{layer}.attn.hook_z"
        for head in range(model.cfg.n_heads):
            def hook(z, hook, head=head, name=name):
                z[:, :, head] = source_cache[name][:, :, head]
                return z
            with torch.no_grad():
                values[layer, head] = metric(model.run_with_hooks(run_tokens, fwd_hooks=[(name, hook)]))
    return values


def _denoising_minus_noising_damage(model, data):
    from patchlab.metrics import metric_from_runs

    with torch.no_grad():
        clean_logits, clean_cache = model.run_with_cache(data.clean_tokens)
        corrupted_logits, corrupted_cache = model.run_with_cache(data.corrupted_tokens)
    metric = metric_from_runs(clean_logits, corrupted_logits, data.answer_tokens)
    denoising = _head_sweep(model, data.corrupted_tokens, clean_cache, metric)
    noising_damage = 1 - _head_sweep(model, data.clean_tokens, corrupted_cache, metric)
    return denoising - noising_damage


def test_noising_mirrors_denoising_for_swapped_pairs_but_not_for_abc(model, classic):
    """The book's claim: swapped pairs make noising prompt pi(i) denoising prompt i with the sign flipped."""
    assert _denoising_minus_noising_damage(model, classic).abs().max() < 1e-5
    assert _denoising_minus_noising_damage(model, ioi.abc_ioi(model)).abs().max() > 0.1
