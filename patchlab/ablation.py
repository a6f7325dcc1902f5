"""Mean ablation of attention heads: replace a head's output by its average over a reference batch.

A head's output before the output matrix is ``hook_z`` (``[batch, pos, head, d_head]``). Mean
ablation overwrites it, for the chosen heads, with its mean over a *reference distribution* (for IOI,
the ABC prompts: three different names, so no name is repeated and no answer is implied), position by
position, so that the head keeps writing what it writes on average and loses only what depends on
the prompt (Wang et al. 2022).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

import torch
from jaxtyping import Float, Int
from torch import Tensor

from patchlab.hooks import act_name

if TYPE_CHECKING:
    from patchlab.types import FwdHook, HookPoint, Model

Head = tuple[int, int]  # (layer, head)


@torch.no_grad()
def mean_z(model: Model, reference_tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "layer pos head d_head"]:
    """Every head's output ``z``, averaged over the prompts of ``reference_tokens``, at each position."""
    names = [act_name("z", layer) for layer in range(model.cfg.n_layers)]
    _, cache = model.run_with_cache(reference_tokens, names_filter=lambda name: name in names)
    return torch.stack([cache[name].mean(dim=0) for name in names])


def all_heads(model: Model) -> list[Head]:
    """Every (layer, head) of the model, layer by layer."""
    return [(layer, head) for layer in range(model.cfg.n_layers) for head in range(model.cfg.n_heads)]


def ablation_hooks(heads: Iterable[Head], means: Float[Tensor, "layer pos head d_head"]) -> list[FwdHook]:
    """Forward hooks (for ``run_with_hooks``) that overwrite the ``z`` of ``heads`` with ``means``."""
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(int(layer), []).append(int(head))

    def hook_for(layer: int, chosen: list[int]):
        def hook(z: Tensor, hook: HookPoint) -> Tensor:
            if z.shape[1] != means.shape[1]:
                raise ValueError(
                    f"the prompts have {z.shape[1]} positions but the means {means.shape[1]}: "
                    "take the means over prompts of the same template and length"
                )
            z[:, :, chosen] = means[layer, :, chosen].to(z.dtype)
            return z

        return hook

    return [(act_name("z", layer), hook_for(layer, chosen)) for layer, chosen in sorted(by_layer.items())]


@torch.no_grad()
def run_ablated(
    model: Model,
    tokens: Int[Tensor, "batch pos"],
    heads: Iterable[Head],
    means: Float[Tensor, "layer pos head d_head"],
) -> Float[Tensor, "batch pos d_vocab"]:
    """The logits of ``tokens`` with ``heads`` mean-ablated (one forward pass)."""
    return model.run_with_hooks(tokens, fwd_hooks=ablation_hooks(heads, means))


@torch.no_grad()
def run_ablated_with_cache(
    model: Model,
    tokens: Int[Tensor, "batch pos"],
    heads: Iterable[Head],
    means: Float[Tensor, "layer pos head d_head"],
) -> tuple[Float[Tensor, "batch pos d_vocab"], Any]:
    """Logits and activation cache of ``tokens`` with ``heads`` mean-ablated (the cache records the
    ablated values)."""
    with model.hooks(fwd_hooks=ablation_hooks(heads, means)):
        return model.run_with_cache(tokens)
