"""Path patching: the hook-based reference against independent constructions, and fast against the reference.

The reference freezes every other head's ``hook_z``. Independently, the same frozen run is built here by
freezing each block's whole attention output (``hook_attn_out``) and adding the sender's write
``(clean z - corrupted z) @ W_O`` by hand; its receivers' inputs are then patched by TransformerLens's
own ``get_act_patch_attn_head_{q,k,v}_all_pos``.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
import transformer_lens.patching as tl_patching

from patchlab.metrics import logit_diff, patching_metric
from patchlab.models import _finish, load_course_tokenizer
from patchlab.patching import FastPatchingFallback, fast_path_patching, hook_name, reference_path_patching

TOLERANCE = 1e-4
PATH_METHODS = {"reference": reference_path_patching, "fast": fast_path_patching}
TL_INPUT_PATCHING = {"q": tl_patching.get_act_patch_attn_head_q_all_pos,
                     "k": tl_patching.get_act_patch_attn_head_k_all_pos,
                     "v": tl_patching.get_act_patch_attn_head_v_all_pos}


@pytest.fixture(scope="module")
def tiny3() -> Any:
    """A 3-layer GPT-2 with 3 heads and random weights (a shape unlike the course model's)."""
    from transformer_lens.model_bridge.sources._bridge_builder import build_bridge_from_module
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = load_course_tokenizer()
    config = GPT2Config(n_layer=3, n_embd=48, n_head=3, n_positions=32, vocab_size=len(tokenizer),
                        initializer_range=0.2, attn_implementation="eager")
    torch.manual_seed(1)
    bridge = build_bridge_from_module(GPT2LMHeadModel(config).eval(), "GPT2LMHeadModel", hf_config=config,
                                      tokenizer=tokenizer, model_name="tiny3-gpt2")
    return _finish(bridge, "tiny3-gpt2")


def random_case(model: Any, batch: int = 3, n_pos: int = 7, seed: int = 0) -> tuple[torch.Tensor, Any, Any]:
    """Corrupted tokens, clean cache and metric: prompts that differ from a random position per prompt on."""
    gen = torch.Generator().manual_seed(seed)
    vocab = model.cfg.d_vocab
    clean = torch.randint(0, vocab, (batch, n_pos), generator=gen)
    changed = (clean + torch.randint(1, vocab, (batch, n_pos), generator=gen)) % vocab
    corrupted = torch.where(torch.arange(n_pos) >= torch.randint(1, n_pos, (batch, 1), generator=gen), changed, clean)
    with torch.no_grad():
        clean_logits, cache = model.run_with_cache(clean)
        corrupted_logits = model(corrupted)
    right = clean_logits[:, -1].argmax(-1)
    ranked = corrupted_logits[:, -1].topk(2, dim=-1).indices
    answers = torch.stack([right, torch.where(ranked[:, 0] == right, ranked[:, 1], ranked[:, 0])], dim=1)
    metric = patching_metric(answers, logit_diff(clean_logits, answers).item(),
                             logit_diff(corrupted_logits, answers).item())
    return corrupted, cache, metric


@pytest.fixture(scope="module")
def cases(model: Any, classic: Any, classic_run: Any, tiny3: Any) -> dict[str, tuple]:
    """``ioi-mini-noising`` is Wang et al.'s direction: the IOI run, the senders' outputs from ABC prompts."""
    from patchlab.ioi import abc_ioi
    from patchlab.metrics import metric_from_runs

    clean_logits, cache, _, metric = classic_run
    with torch.no_grad():
        abc_logits, abc_cache = model.run_with_cache(abc_ioi(model).corrupted_tokens)
    noising = metric_from_runs(clean_logits, abc_logits, classic.answer_tokens)
    return {"ioi-mini": (model, classic.corrupted_tokens, cache, metric), "tiny3": (tiny3, *random_case(tiny3)),
            "ioi-mini-noising": (model, classic.clean_tokens, abc_cache, noising)}


def frozen_by_attn_out(model: Any, corrupted: torch.Tensor, clean_cache: Any, layer: int, head: int) -> list:
    """Hooks that freeze every block's attention output to the corrupted one, plus the sender's clean
    write at its own block, computed by hand from ``W_O``."""
    names = [hook_name("attn_out", l) for l in range(model.cfg.n_layers)]
    z = hook_name("head_out", layer)
    with torch.no_grad():
        _, corrupted_cache = model.run_with_cache(corrupted, names_filter=lambda name: name in names or name == z)
        write = (clean_cache[z][:, :, head] - corrupted_cache[z][:, :, head]) @ model.blocks[layer].attn.W_O[head]

    def freeze(attn_out: torch.Tensor, hook: Any) -> torch.Tensor:
        frozen = corrupted_cache[hook.name].clone()
        return frozen + write if hook.name == names[layer] else frozen

    return [(name, freeze) for name in names]


@pytest.mark.parametrize("case", ["ioi-mini", "tiny3", "ioi-mini-noising"])
def test_reference_to_the_final_residual_freezes_everything_but_the_path(cases: dict, case: str) -> None:
    model, corrupted, cache, metric = cases[case]
    ours = reference_path_patching(model, corrupted, cache, metric, progress=False)
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    assert ours.shape == (n_layers, n_heads)
    expected = torch.zeros(n_layers, n_heads)
    for layer in range(n_layers):
        for head in range(n_heads):
            with torch.no_grad():
                logits = model.run_with_hooks(corrupted, fwd_hooks=frozen_by_attn_out(model, corrupted, cache, layer, head))
            expected[layer, head] = metric(logits).item()
    assert (ours - expected).abs().max() <= TOLERANCE
    assert expected.abs().max() > 1e-2  # some sender matters: the comparison can fail
    # A last-layer sender has no later head to freeze: its path is the whole head (TransformerLens's patch).
    heads = tl_patching.get_act_patch_attn_head_out_all_pos(model, corrupted, cache, metric).cpu()
    assert (ours[-1] - heads[-1]).abs().max() <= TOLERANCE


@pytest.mark.parametrize("receiver_input", ["q", "k", "v"])
def test_reference_to_a_receiver_patches_its_input_from_the_frozen_run(cases: dict, receiver_input: str) -> None:
    model, corrupted, cache, metric = cases["tiny3"]
    receiver = (2, 1)
    ours = reference_path_patching(model, corrupted, cache, metric, [receiver], receiver_input, progress=False)
    for layer, head in [(0, 0), (1, 2)]:
        model.reset_hooks()
        try:
            for name, hook in frozen_by_attn_out(model, corrupted, cache, layer, head):
                model.add_hook(name, hook)
            with torch.no_grad():
                _, frozen_cache = model.run_with_cache(corrupted)
        finally:
            model.reset_hooks()  # hooks added with add_hook outlive run_with_cache
        theirs = TL_INPUT_PATCHING[receiver_input](model, corrupted, frozen_cache, metric)
        assert abs(ours[layer, head].item() - theirs[receiver].item()) <= TOLERANCE
    assert ours[2:].abs().max() <= 1e-6  # senders in or after the receiver's block do not reach its input
    assert ours[:2].abs().max() > 1e-3


# (case, receivers, receiver_input, the least largest effect expected, so that the comparison can fail).
# On ioi-mini heads 0.1 and 0.3 act through the values of head 1.0; queries and keys carry ~1e-3.
PATH_CASES = [
    ("ioi-mini", None, "q", 0.1),
    ("ioi-mini", [(1, 0)], "v", 0.1),
    ("ioi-mini", [(1, 0), (2, 3), (3, 1)], "v", 0.1),  # receivers in several blocks
    ("ioi-mini", [(1, 0), (2, 0)], "q", 1e-3),
    ("ioi-mini", [(1, 0), (2, 3)], "k", 1e-5),
    ("ioi-mini-noising", None, "q", 0.1),
    ("ioi-mini-noising", [(1, 0), (2, 3)], "v", 0.1),
    ("tiny3", None, "q", 0.01),
    ("tiny3", [(2, 1)], "q", 1e-3),
    ("tiny3", [(1, 0), (2, 2)], "q", 1e-3),
    ("tiny3", [(1, 2), (2, 0)], "k", 1e-3),
    ("tiny3", [(2, 0), (2, 1)], "v", 1e-3),
]


@pytest.mark.parametrize("case,receivers,receiver_input,least", PATH_CASES)
def test_fast_path_patching_equals_the_reference(cases: dict, case: str, receivers: Any, receiver_input: str,
                                                 least: float) -> None:
    model, corrupted, cache, metric = cases[case]
    with warnings.catch_warnings():
        warnings.simplefilter("error", FastPatchingFallback)
        fast = fast_path_patching(model, corrupted, cache, metric, receivers, receiver_input, progress=False)
    reference = reference_path_patching(model, corrupted, cache, metric, receivers, receiver_input, progress=False)
    assert fast.shape == reference.shape == (model.cfg.n_layers, model.cfg.n_heads)
    assert (fast - reference).abs().max() <= TOLERANCE
    assert reference.abs().max() > least


def test_fast_path_patching_falls_back_for_an_unsupported_model(cases: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    model, corrupted, cache, metric = cases["tiny3"]
    monkeypatch.setattr(model.cfg, "positional_embedding_type", "rotary")
    with pytest.warns(FastPatchingFallback, match="not a GPT-2-style transformer"):
        fast = fast_path_patching(model, corrupted, cache, metric, progress=False)
    monkeypatch.undo()
    assert torch.equal(fast, reference_path_patching(model, corrupted, cache, metric, progress=False))


@pytest.mark.parametrize("method", sorted(PATH_METHODS))
def test_path_patching_rejects_bad_input(cases: dict, method: str) -> None:
    model, corrupted, cache, metric = cases["tiny3"]
    run = PATH_METHODS[method]
    with pytest.raises(ValueError, match="receivers must be"):
        run(model, corrupted, cache, metric, [(3, 0)], progress=False)
    with pytest.raises(ValueError, match="choose q, k or v"):
        run(model, corrupted, cache, metric, [(1, 0)], "z", progress=False)
    with pytest.raises(ValueError, match="batches must match"):
        run(model, corrupted[:1], cache, metric, progress=False)
