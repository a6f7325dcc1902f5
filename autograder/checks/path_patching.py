"""Assignment ``path_patching``: path patching of every sender head to the logits and to receiver heads.

Both loops are called once per prompt set; the receivers' version with the receivers' queries on the
first prompt set of the first model, and their values (larger effects) everywhere.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable

import torch
from torch import Tensor

from patchlab.check import ATOL_METRIC, grid_mistakes
from patchlab.patching import fast_path_patching, fast_patching, hook_name
from patchlab.patching.paths import RECEIVER_INPUTS

from ._check import Candidate, Check, Expected, Key
from ._inputs import PromptSet
from ._judge import References
from .attention_heads import skipped_layers
from .residual_patching import loop_arguments


def path_receivers(model: Any) -> list[tuple[int, int]]:
    """The receiver heads of the path-patching checks: every head of the layers between the first (no
    sender reaches it) and the last, so that senders of several layers reach them."""
    return [(layer, head) for layer in range(1, max(2, model.cfg.n_layers - 1)) for head in range(model.cfg.n_heads)]


def path_loop(
    model: Any,
    tokens: Tensor,
    base_cache: Any,
    source_cache: Any,
    metric: Callable[[Tensor], Tensor],
    receivers: list[tuple[int, int]] | None = None,
    receiver_input: str = "q",
    freeze_heads: bool = True,
    freeze_mlps: bool = False,
    frozen_layers: int | None = None,
) -> Tensor:
    """A path-patching loop as a learner may write it, right or not: for every sender head, run ``tokens``
    with the sender's ``z`` from ``source_cache`` and, when ``freeze_heads``, the other heads of layers
    ``[:frozen_layers]`` (all by default; -1: all but the last) at ``base_cache``'s output, the MLPs too
    when ``freeze_mlps``; the metric of that run or, with ``receivers``, of a fresh run of ``tokens``
    given the receivers' ``receiver_input`` of that run. ``[n_layers, n_heads]``."""
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    frozen = range(n_layers)[:frozen_layers]
    inputs = [f"blocks.{layer}.attn.hook_{receiver_input}" for layer, _ in receivers or []]
    results = torch.zeros(n_layers, n_heads)
    for sender_layer, sender_head in itertools.product(range(n_layers), range(n_heads)):

        def patch(z: Tensor, hook: Any, layer: int) -> Tensor:
            if freeze_heads and layer in frozen:
                z[:] = base_cache[hook.name]
            if layer == sender_layer:
                z[:, :, sender_head] = source_cache[hook.name][:, :, sender_head]
            return z

        hooks: list[tuple[str, Callable]] = [
            (hook_name("head_out", layer), lambda z, hook, layer=layer: patch(z, hook, layer))
            for layer in range(n_layers)
        ]
        if freeze_mlps:
            hooks += [
                (f"blocks.{layer}.hook_mlp_out", lambda out, hook: base_cache[hook.name].clone())
                for layer in range(n_layers)
            ]
        if receivers is None:
            results[sender_layer, sender_head] = metric(model.run_with_hooks(tokens, fwd_hooks=hooks)).item()
            continue
        with model.hooks(fwd_hooks=hooks):
            _, recorded = model.run_with_cache(tokens, names_filter=lambda name: name in inputs)

        def receive(activation: Tensor, hook: Any, head: int) -> Tensor:
            activation[:, :, head] = recorded[hook.name][:, :, head]
            return activation

        logits = model.run_with_hooks(
            tokens,
            fwd_hooks=[
                (name, lambda a, hook, head=head: receive(a, hook, head)) for name, (_, head) in zip(inputs, receivers)
            ],
        )
        results[sender_layer, sender_head] = metric(logits).item()
    return results


def path_grid(refs: References, key: Key, variant: str = "reference") -> Tensor:
    """Path patching of every sender head to the final residual stream (a case without
    ``receiver_input``) or to ``path_receivers``' input ``receiver_input``, or what a known mistake
    gives: ``wrong_direction``, ``not_frozen`` (plain head patching), ``mlps_frozen``, ``freeze_short``
    (the last layer's heads not frozen), ``to_logits`` (the frozen run's metric, no receivers), or
    another receiver input (``q``, ``k``, ``v``)."""
    ps = refs.prompt_set(key)
    which = key.get("receiver_input")
    receivers = None if which is None else path_receivers(ps.model)
    tokens, corrupted = ps.data.corrupted_tokens, ps.corrupted_cache

    def fast(tokens: Tensor, source: Any, receivers: list | None, which: str | None) -> Tensor:
        return fast_path_patching(ps.model, tokens, source, ps.metric, receivers, which or "q", progress=False)

    def compute() -> Tensor:
        if variant == "reference":
            return fast(tokens, ps.clean_cache, receivers, which)
        if variant == "wrong_direction":
            return fast(ps.data.clean_tokens, corrupted, receivers, which)
        if variant == "to_logits":
            return fast(tokens, ps.clean_cache, None, which)
        if variant in RECEIVER_INPUTS:
            return fast(tokens, ps.clean_cache, receivers, variant)
        if variant == "not_frozen" and receivers is None:
            return fast_patching(ps.model, tokens, ps.clean_cache, ps.metric, "head_out", progress=False)
        variants: dict[str, dict[str, Any]] = {
            "not_frozen": {"freeze_heads": False},
            "mlps_frozen": {"freeze_mlps": True},
            "freeze_short": {"frozen_layers": -1},
        }
        return path_loop(
            ps.model, tokens, corrupted, ps.clean_cache, ps.metric, receivers, which or "q", **variants[variant]
        )

    return refs.cached((key["model"], key["set"], "path", which, variant), compute)


def _expected(refs: References, key: Key) -> Expected:
    """Path patching's reference for one case and the known mistakes' results."""
    ps = refs.prompt_set(key)
    reference = path_grid(refs, key)
    _, *metric_mistakes = grid_mistakes(reference, ps.clean_logit_diff, ps.corrupted_logit_diff)
    variant = lambda name: lambda: path_grid(refs, key, name)  # noqa: E731
    mistakes: list[tuple[str, Candidate]] = [
        ("head_transposed", reference.T),
        ("path_sender_not_patched", torch.zeros_like(reference)),
        ("path_wrong_direction", variant("wrong_direction")),
        ("path_not_frozen", variant("not_frozen")),
        ("path_mlps_frozen", variant("mlps_frozen")),
    ]
    which = key.get("receiver_input")
    if which is None:
        mistakes.append(("path_freeze_short", variant("freeze_short")))
    else:
        mistakes.append(("path_receivers_not_patched", variant("to_logits")))
        mistakes += [("path_wrong_receiver_input", variant(other)) for other in RECEIVER_INPUTS if other != which]
    return (
        reference,
        mistakes + skipped_layers(reference) + metric_mistakes,
        {
            "off_by_one_axes": {0: "head_off_by_one_layer"},
            "axis_names": ("sender layer", "sender head"),
            "atol": ATOL_METRIC,
        },
    )


def _receiver_cases(ps: PromptSet, model_index: int, set_index: int) -> list[Key]:
    """The queries once; the values, larger, everywhere."""
    return [{"receiver_input": which} for which in (("q", "v") if model_index == set_index == 0 else ("v",))]


def _receiver_arguments(ps: PromptSet, key: Key) -> tuple[tuple, dict]:
    return (*loop_arguments(ps, key)[0], path_receivers(ps.model), key["receiver_input"]), {}


path_to_logits = Check(
    name="check_path_to_logits",
    returns="a tensor of shape [n_layers, n_heads]",
    arguments=loop_arguments,
    expected=_expected,
    loop=True,
    grid=True,
)

path_to_receivers = Check(
    name="check_path_to_receivers",
    returns="a tensor of shape [n_layers, n_heads]",
    variants=_receiver_cases,
    arguments=_receiver_arguments,
    expected=_expected,
    loop=True,
    grid=True,
)
