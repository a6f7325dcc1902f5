"""Assignment ``attention_heads``: the head-patching hook, heads by position, heads' inputs, the top heads.

The hook is called at two (layer, head, position) triples of each prompt set, never head 0, so that a
hook that patches every head, or the wrong axis, cannot pass by chance; the loops once per prompt set
(head inputs once per input: q, k, v, pattern); the top-k function on a made-up head map.
"""

from __future__ import annotations

import itertools
from functools import partial
from typing import Any, Callable

import torch
from torch import Tensor

from patchlab.check import ATOL_ACTIVATION, ATOL_METRIC, grid_mistakes
from patchlab.patching import fast_patching, hook_name

from ._check import Candidate, Check, Expected, Key
from ._inputs import PromptSet, hook_point
from ._judge import References
from .residual_patching import loop_arguments

HEAD_INPUTS = ("q", "k", "v", "pattern")  # what check_head_inputs patches, by hook_{which}
TOP_K = (3, 5)  # how many heads check_top_heads asks for, on the first and the second prompt set


def loop_patching(
    model: Any,
    tokens: Tensor,
    source_cache: Any,
    metric: Callable[[Tensor], Tensor],
    hook: str,
    sizes: tuple[int, ...],
    where: Callable[..., tuple],
) -> Tensor:
    """A patching loop as a learner may write it, right or not: for every layer and every index of
    ``sizes``, run ``tokens`` with ``activation[where(*index)]`` taken from ``source_cache`` at
    ``hook.format(layer=...)``; the metric of each run, ``[n_layers, *sizes]``."""
    results = torch.zeros(model.cfg.n_layers, *sizes)
    for layer, *index in itertools.product(range(model.cfg.n_layers), *(range(n) for n in sizes)):
        name, selector = hook.format(layer=layer), where(*index)

        def patch(activation: Tensor, hook: Any) -> Tensor:
            activation[selector] = source_cache[name][selector]
            return activation

        results[(layer,) + tuple(index)] = metric(model.run_with_hooks(tokens, fwd_hooks=[(name, patch)])).item()
    return results


def head_grid(refs: References, key: Key, component: str, variant: str = "reference") -> Tensor:
    """A head-patching result (``head_out_by_pos``, ``head_q``, ...) of a prompt set, or what a
    known mistake gives: ``wrong_direction``, ``all_heads`` (every head of the layer at once),
    ``head_axis`` (the index taken on the wrong axis of the activation)."""
    ps = refs.prompt_set(key)
    model, n_heads, n_pos = ps.model, ps.model.cfg.n_heads, ps.data.clean_tokens.shape[1]
    kind = component.removeprefix("head_").removesuffix("_by_pos")
    hook = f"blocks.{{layer}}.attn.hook_{'z' if kind == 'out' else kind}"
    by_pos = component.endswith("_by_pos")
    run = (ps.data.corrupted_tokens, ps.clean_cache, ps.metric)

    def compute() -> Tensor:
        # patchlab's fast exact patching: reference_patching's numbers (tests/unit/test_fast_patching.py), in
        # a fraction of the ~50 ms per forward pass that a loop over heads and positions costs.
        if variant == "reference":
            return fast_patching(model, *run, component, progress=False)
        if variant == "wrong_direction":
            return fast_patching(model, ps.data.clean_tokens, ps.corrupted_cache, ps.metric, component, progress=False)
        if variant == "all_heads":  # [n_layers, n_pos] or [n_layers], spread over the heads
            if by_pos:
                grid = loop_patching(model, *run, hook, (n_pos,), lambda p: (slice(None), p))
                return grid[:, :, None].expand(-1, -1, n_heads).clone()
            grid = loop_patching(model, *run, hook, (), lambda: (slice(None),))
            return grid[:, None].expand(-1, n_heads).clone()
        if variant == "head_axis":  # z, q, k, v: d_head (dim 3); pattern: the destination (dim 2)
            if by_pos:
                return loop_patching(model, *run, hook, (n_pos, n_heads), lambda p, h: (slice(None), p, slice(None), h))
            axis = 2 if kind == "pattern" else 3
            return loop_patching(model, *run, hook, (n_heads,), lambda h: (slice(None),) * axis + (h,))
        raise ValueError(variant)

    return refs.cached((key["model"], key["set"], component, variant), compute)


def skipped_layers(reference: Tensor) -> list[tuple[str, Candidate]]:
    """A loop that skips the first or the last layer (named even where that layer's heads do nothing)."""
    mistakes: list[tuple[str, Candidate]] = []
    for skipped in (0, -1):
        short = reference.clone()
        short[skipped] = 0
        mistakes.append(("head_off_by_one_layer", short))
    return mistakes


def _head_hook_cases(ps: PromptSet, model_index: int, set_index: int) -> list[Key]:
    n_layers, n_heads = ps.model.cfg.n_layers, ps.model.cfg.n_heads
    return [
        {"layer": layer, "head": head, "position": pos}
        for layer, head, pos in ((0, n_heads - 1, ps.data.s2_pos), (n_layers - 1, 1, ps.data.end_pos))
    ]


def _head_hook_arguments(ps: PromptSet, key: Key) -> tuple[tuple, dict]:
    name = hook_name("head_out", key["layer"])
    return (ps.corrupted_cache[name].clone(),), {
        "hook": hook_point(ps.model, name),
        "head": key["head"],
        "position": key["position"],
        "clean_cache": ps.clean_cache,
    }


def _expected_head_hook(refs: References, key: Key) -> Expected:
    ps = refs.prompt_set(key)
    name, head, position = hook_name("head_out", key["layer"]), key["head"], key["position"]
    clean, corrupted = ps.clean_cache[name].cpu(), ps.corrupted_cache[name].cpu()

    def patched(base: Tensor, source: Tensor, *where: Any) -> Tensor:
        base = base.clone()
        base[where] = source[where]
        return base

    every = slice(None)
    return (
        patched(corrupted, clean, every, position, head),
        [
            ("wrong_direction", patched(clean, corrupted, every, position, head)),
            ("wrong_head_axis", patched(corrupted, clean, every, position, every, head)),
            ("patched_all_heads", patched(corrupted, clean, every, position)),
            ("head_all_positions", patched(corrupted, clean, every, every, head)),
            ("head_not_patched", corrupted),
        ],
        {"atol": ATOL_ACTIVATION},
    )


def _head_mistakes(
    refs: References, key: Key, component: str
) -> tuple[Tensor, list[tuple[str, Candidate]], list[tuple[str, Candidate]]]:
    """A head-patching grid's reference, the mistakes of every head loop (the axes' order apart), and
    those of the metric (last in the list, where they were)."""
    ps = refs.prompt_set(key)
    reference = head_grid(refs, key, component)
    _, *grid_metric = grid_mistakes(reference, ps.clean_logit_diff, ps.corrupted_logit_diff)
    metric_mistakes: list[tuple[str, Candidate]] = [*grid_metric]
    return (
        reference,
        [
            ("wrong_direction", lambda: head_grid(refs, key, component, "wrong_direction")),
            ("patched_all_heads", lambda: head_grid(refs, key, component, "all_heads")),
            ("wrong_head_axis", lambda: head_grid(refs, key, component, "head_axis")),
            *skipped_layers(reference),
        ],
        metric_mistakes,
    )


def _expected_by_pos(refs: References, key: Key) -> Expected:
    reference, mistakes, metric = _head_mistakes(refs, key, "head_out_by_pos")
    return (
        reference,
        [("head_transposed_by_pos", reference.permute(0, 2, 1)), *mistakes, *metric],
        {
            "off_by_one_axes": {0: "head_off_by_one_layer"},
            "axis_names": ("layer", "position", "head"),
            "atol": ATOL_METRIC,
        },
    )


def _expected_inputs(refs: References, key: Key) -> Expected:
    reference, mistakes, metric = _head_mistakes(refs, key, f"head_{key['which']}")
    inputs: list[tuple[str, Candidate]] = [("patched_head_output", lambda: head_grid(refs, key, "head_out"))]
    inputs += [
        ("wrong_input", partial(head_grid, refs, key, f"head_{other}"))
        for other in HEAD_INPUTS
        if other != key["which"]
    ]
    return (
        reference,
        [("head_transposed", reference.T), *mistakes, *inputs, *metric],
        {"off_by_one_axes": {0: "head_off_by_one_layer"}, "axis_names": ("layer", "head"), "atol": ATOL_METRIC},
    )


def head_map_values(n_layers: int, n_heads: int, seed: int) -> Tensor:
    """A [n_layers, n_heads] map a top-k function is checked with: distinct magnitudes, the largest
    ones of both signs, so that ranking by value and by magnitude disagree."""
    n = n_layers * n_heads
    generator = torch.Generator().manual_seed(seed)
    magnitudes = torch.linspace(0.05, 1.0, n)[torch.randperm(n, generator=generator)]
    signs = torch.where(torch.arange(n) % 3 == 1, -1.0, 1.0)[torch.randperm(n, generator=generator)]
    values = magnitudes * signs
    top = values.abs().argsort(descending=True)
    values[top[0]], values[top[1]] = -values[top[0]].abs(), values[top[1]].abs()  # the largest is negative
    return values.reshape(n_layers, n_heads)


def _top_heads_arguments(ps: PromptSet, key: Key) -> tuple[tuple, dict]:
    return (head_map_values(ps.model.cfg.n_layers, ps.model.cfg.n_heads, key["set"]), key["k"]), {}


def _expected_top_heads(refs: References, key: Key) -> Expected:
    ps = refs.prompt_set(key)
    values = head_map_values(ps.model.cfg.n_layers, ps.model.cfg.n_heads, key["set"])
    n_heads, k = values.shape[1], key["k"]

    def pairs(flat: Tensor) -> Tensor:
        return torch.stack([flat // n_heads, flat % n_heads], dim=1).float()

    reference = pairs(values.flatten().abs().argsort(descending=True)[:k])
    return (
        reference,
        [
            ("top_heads_signed", pairs(values.flatten().argsort(descending=True)[:k])),
            ("top_heads_swapped", reference.flip(1)),
        ],
        {"atol": 0.0, "axis_names": ("rank", "(layer, head)")},
    )


head_hook = Check(
    name="check_head_hook",
    returns="the patched activation, a tensor of shape [batch, pos, head_index, d_head]",
    variants=_head_hook_cases,
    arguments=_head_hook_arguments,
    expected=_expected_head_hook,
    lent=lambda ps, key: ps.clean_cache[hook_name("head_out", key["layer"])],
)

head_by_pos = Check(
    name="check_head_by_pos",
    returns="a tensor of shape [n_layers, n_positions, n_heads]",
    arguments=loop_arguments,
    expected=_expected_by_pos,
    loop=True,
    grid=True,
)

head_inputs = Check(
    name="check_head_inputs",
    returns="a tensor of shape [n_layers, n_heads]",
    variants=lambda ps, model_index, set_index: [{"which": which} for which in HEAD_INPUTS],
    arguments=lambda ps, key: ((*loop_arguments(ps, key)[0], key["which"]), {}),
    expected=_expected_inputs,
    grid=True,
    separate_branches=True,
)

top_heads = Check(
    name="check_top_heads",
    returns="a list of k (layer, head) pairs",
    variants=lambda ps, model_index, set_index: [{"k": TOP_K[set_index % len(TOP_K)]}],
    arguments=_top_heads_arguments,
    expected=_expected_top_heads,
    accepted=("Tensor", "list", "tuple", "ndarray"),
)
