"""Path patching (Wang et al. 2022): a sender head's clean output, along one path only.

For each sender head, the corrupted run gets the sender's clean output (``hook_z``, all positions)
while every other attention head is frozen to its corrupted output; the MLPs are recomputed, so
paths through MLPs count (as in Wang et al. and ARENA's replication). Then either

- **to the final residual stream** (``receivers=None``): the metric of that run, whose logits only
  see the sender directly and through MLPs; or
- **to receiver heads' queries** (or keys or values, ``receiver_input``): the receivers' inputs are
  recorded in that run, and a fresh corrupted run (nothing frozen) gets just those inputs; its
  metric is the result.

Both return ``[n_layers, n_heads]`` over senders. A sender at or after the last receiver's layer
reaches no receiver: its run is the corrupted run.

"Clean" and "corrupted" name roles, not data sets: the run is ``corrupted_tokens`` and the sender's
output comes from ``clean_cache``, a run of any prompts of the same shape. Wang et al. path-patch in
the noising direction: the run is the IOI prompts, the cache a run of their ABC twins, and the effect
is the metric's drop.
"""

from __future__ import annotations

import itertools
import warnings
from typing import TYPE_CHECKING, Any, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor
from patchlab.hooks import act_name
from patchlab.runtime import progress as progress_bar

from patchlab.metrics import Metric
from patchlab.patching.components import check_batch
from patchlab.patching.fast import CorruptedRun, FastPatchingFallback, Unsupported
from patchlab.patching.kernel import Kernel, Trace

if TYPE_CHECKING:
    from patchlab.types import Cache, FwdHook, HookPoint, Model

Receivers = Sequence[tuple[int, int]]
RECEIVER_INPUTS = ("q", "k", "v")


def _check(
    model: Model, corrupted_tokens: Tensor, clean_cache: Cache, receivers: Receivers | None, receiver_input: str
) -> list[tuple[int, int]] | None:
    check_batch(corrupted_tokens, clean_cache, act_name("z", 0))
    if receiver_input not in RECEIVER_INPUTS:
        raise ValueError(f"unknown receiver_input {receiver_input!r}: choose q, k or v")
    if receivers is None:
        return None
    cfg = model.cfg
    pairs = [(int(layer), int(head)) for layer, head in receivers]
    bad = [pair for pair in pairs if not (0 <= pair[0] < cfg.n_layers and 0 <= pair[1] < cfg.n_heads)]
    if not pairs or bad:
        raise ValueError(
            f"receivers must be (layer, head) pairs with layer < {cfg.n_layers} and head < "
            f"{cfg.n_heads}, got {list(receivers)!r}"
        )
    return sorted(set(pairs))


def reference_path_patching(
    model: Model,
    corrupted_tokens: Int[Tensor, "batch pos"],
    clean_cache: Cache,
    metric: Metric,
    receivers: Receivers | None = None,
    receiver_input: str = "q",
    progress: bool = True,
    senders: Sequence[tuple[int, int]] | None = None,
) -> Float[Tensor, "layer head"]:
    """Path patching with hand-written hooks: one frozen run per sender (and one more to the receivers).

    ``receivers=None`` patches the path sender -> final residual stream; a list of ``(layer, head)``
    pairs patches sender -> those heads' ``receiver_input`` (``"q"``, ``"k"`` or ``"v"``). Returns the
    metric for each sender head, ``[n_layers, n_heads]``; with ``senders``, only for those (NaN elsewhere).
    """
    pairs = _check(model, corrupted_tokens, clean_cache, receivers, receiver_input)
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    z_names = [act_name("z", layer) for layer in range(n_layers)]
    with torch.no_grad():
        _, corrupted_cache = model.run_with_cache(corrupted_tokens, names_filter=lambda name: name in z_names)
    results = torch.full((n_layers, n_heads), float("nan"))
    if senders is None:
        senders = list(itertools.product(range(n_layers), range(n_heads)))
    for sender_layer, sender_head in progress_bar(senders, desc="path patching", disable=not progress):

        def freeze(z: Tensor, hook: HookPoint) -> Tensor:
            """Every head's corrupted output, except the sender's clean one."""
            z[:] = corrupted_cache[hook.name]
            if hook.name == z_names[sender_layer]:
                z[:, :, sender_head] = clean_cache[hook.name][:, :, sender_head]
            return z

        frozen: list[FwdHook] = [(name, freeze) for name in z_names]
        with torch.no_grad():
            if pairs is None:
                results[sender_layer, sender_head] = metric(
                    model.run_with_hooks(corrupted_tokens, fwd_hooks=frozen)
                ).item()
                continue
            recorded: dict[tuple[int, int], Tensor] = {}

            def record(layer: int, head: int) -> Any:
                def hook(activation: Tensor, hook: HookPoint) -> Tensor:
                    recorded[layer, head] = activation[:, :, head].clone()
                    return activation

                return hook

            def replace(layer: int, head: int) -> Any:
                def hook(activation: Tensor, hook: HookPoint) -> Tensor:
                    activation[:, :, head] = recorded[layer, head]
                    return activation

                return hook

            model.run_with_hooks(
                corrupted_tokens,
                fwd_hooks=frozen + [(act_name(receiver_input, layer), record(layer, head)) for layer, head in pairs],
            )
            logits = model.run_with_hooks(
                corrupted_tokens,
                fwd_hooks=[(act_name(receiver_input, layer), replace(layer, head)) for layer, head in pairs],
            )
            results[sender_layer, sender_head] = metric(logits).item()
    return results


def _frozen_run(
    kernel: Kernel,
    trace: Trace,
    clean_z: Tensor,
    layers: Tensor,
    heads: Tensor,
    prompts: Tensor,
    first_pos: int,
    stop: int,
    record: dict[int, list[int]] | None = None,
    which: str = "q",
) -> tuple[Float[Tensor, "rows suffix d_model"], dict[int, Tensor]]:
    """The senders' frozen runs (positions ``first_pos`` on), position by position, up to block ``stop``.

    Row ``r`` puts head ``heads[r]``'s clean output into block ``layers[r]`` of prompt ``prompts[r]``
    (rows sorted by ``layers``). Every other head keeps its corrupted output, so attention mixes
    nothing new between positions: each block is the recorded attention output plus the MLP. Returns
    the residual entering block ``stop`` and, for each ``record[layer]`` (receiver heads), the
    ``which`` input of those heads at that block, for the rows whose sender comes before it.
    """
    resid = trace.resid_pre[0][prompts, first_pos:].clone()
    recorded: dict[int, Tensor] = {}
    for layer in range(int(layers[0]), stop + 1):
        begun = int((layers < layer).sum())
        if record and layer in record:
            projected = kernel.project(layer, kernel.attn_in(layer, resid[:begun]), which)
            recorded[layer] = projected[:, :, record[layer]]
        if layer == stop:
            break
        active = int((layers <= layer).sum())
        starting = torch.arange(begun, active, device=prompts.device)
        resid[starting] = trace.resid_pre[layer][prompts[starting], first_pos:]
        z = trace.z[layer][prompts[:active], first_pos:].clone()
        z[starting, :, heads[starting]] = clean_z[layer][prompts[starting], first_pos:, heads[starting]]
        resid[:active] = resid[:active] + kernel.attn_out(layer, z)
        resid[:active] = resid[:active] + kernel.mlp_out(layer, resid[:active])
    return resid, recorded


def _fast_paths(
    model: Model,
    corrupted_tokens: Tensor,
    clean_cache: Cache,
    metric: Metric,
    pairs: list[tuple[int, int]] | None,
    receiver_input: str,
    progress: bool,
) -> Float[Tensor, "layer head"]:
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    names = [act_name("z", layer) for layer in range(n_layers)]
    with torch.no_grad():
        run = CorruptedRun(model, corrupted_tokens, names, metric)
        kernel, trace = run.kernel, run.trace
        clean_z = torch.stack([clean_cache[name] for name in names])
        differs_at = (clean_z != torch.stack([run.cache[name] for name in names])).any(-1)  # [layer, batch, pos, head]
        differs_at = differs_at.permute(0, 3, 1, 2)  # [layer, head, batch, pos]
        n_pos = differs_at.shape[-1]
        if pairs is None:  # only the final position reaches the logits, and it mixes with no other
            changed = differs_at[..., -1]
            first = torch.full_like(changed, n_pos - 1, dtype=torch.long)
        else:
            receiver_layers = torch.tensor(sorted({layer for layer, _ in pairs}), device=clean_z.device)
            changed = (
                differs_at.any(-1)
                & (torch.arange(n_layers, device=clean_z.device) < receiver_layers[-1])[:, None, None]
            )
            first = differs_at.int().argmax(-1)
            record = {int(layer): [head for lr, head in pairs if lr == layer] for layer in receiver_layers}
        final = trace.resid_pre.new_zeros(n_layers, n_heads, *changed.shape[2:], trace.resid_pre.shape[-1])
        cells = changed.nonzero()  # [rows, 3]: layer, head, prompt
        starts = first[changed]
        for first_pos in progress_bar(starts.unique().tolist(), desc="fast path patching", disable=not progress):
            group = cells[starts == first_pos]
            layers, heads, prompts = group[group[:, 0].argsort(stable=True)].unbind(1)
            if pairs is None:
                resid, _ = _frozen_run(kernel, trace, clean_z, layers, heads, prompts, first_pos, n_layers)
                final[layers, heads, prompts] = resid[:, -1]
                continue
            _, recorded = _frozen_run(
                kernel,
                trace,
                clean_z,
                layers,
                heads,
                prompts,
                first_pos,
                int(receiver_layers[-1]),
                record,
                receiver_input,
            )
            enter = receiver_layers[
                torch.searchsorted(receiver_layers, layers.contiguous(), right=True)
            ]  # first receiver after
            inputs = {layer: (receiver_input, record[layer], values) for layer, values in recorded.items()}
            resid = trace.resid_pre[enter, prompts, first_pos:]
            final[layers, heads, prompts] = kernel.resume(trace, first_pos, enter, prompts, resid, inputs)
        results = run.score(changed.flatten(0, 1), final.flatten(0, 1))
    return results.view(n_layers, n_heads)


def fast_path_patching(
    model: Model,
    corrupted_tokens: Int[Tensor, "batch pos"],
    clean_cache: Cache,
    metric: Metric,
    receivers: Receivers | None = None,
    receiver_input: str = "q",
    progress: bool = True,
) -> Float[Tensor, "layer head"]:
    """Path patching with :func:`reference_path_patching`'s results (to float rounding) and far less work.

    With every other head frozen, attention moves nothing new between positions, so each sender's
    frozen run is computed position by position through the MLPs (only the final position for the
    path to the final residual stream), from the sender's block on, for all senders and prompts at
    once; the run to the receivers resumes from the first receiver after the sender, as
    :func:`~patchlab.patching.fast.fast_patching` does. Senders whose clean output equals the corrupted
    one are the corrupted run. Falls back to the reference with a ``FastPatchingFallback`` warning where
    ``fast_patching`` would.
    """
    pairs = _check(model, corrupted_tokens, clean_cache, receivers, receiver_input)
    try:
        return _fast_paths(model, corrupted_tokens, clean_cache, metric, pairs, receiver_input, progress)
    except Unsupported as reason:
        warnings.warn(
            f"fast_path_patching: falling back to the reference because {reason}", FastPatchingFallback, stacklevel=2
        )
        return reference_path_patching(
            model, corrupted_tokens, clean_cache, metric, receivers, receiver_input, progress
        )
