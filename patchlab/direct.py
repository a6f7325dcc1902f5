"""Direct effects: direct logit attribution of heads and layers, and the logit lens.

The final residual stream at the last position is a sum of what every component wrote there: the
token and position embeddings, each head's output (``z @ W_O``), each attention layer's bias
``b_O`` and each MLP's output. The logits are ``LN_final(resid) @ W_U + b_U``. LayerNorm centres its
input (a linear map), divides it by its scale (the root mean square of the centred vector: *not*
linear, and shared by every component) and applies its gain and bias. With the scale **frozen** at
its value in a given run, the logit difference becomes a linear function of the residual stream, so
it splits exactly into one term per component (its *direct effect*) plus a constant; the terms sum to
the logit difference of that run.

The *logit lens* reads the logit difference off a partial residual stream (``resid_pre`` or
``resid_post`` of a layer) through the final LayerNorm and the unembedding, as if the model stopped
there; with the scale of the partial stream itself (the usual lens) or frozen at the final one (then
it is the running sum of the direct effects).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float, Int
from torch import Tensor

from patchlab.hooks import act_name

if TYPE_CHECKING:
    from patchlab.types import Cache, Model


def _params(model: Model) -> dict[str, Tensor]:
    return model.tl_parameters()


def logit_diff_directions(model: Model, answer_tokens: Int[Tensor, "batch 2"]) -> Float[Tensor, "batch d_model"]:
    """Per prompt, the direction in the normalised residual stream that the logit difference reads:
    ``W_U[:, correct] - W_U[:, incorrect]``, times the final LayerNorm's gain when it is not folded
    into ``W_U``."""
    params = _params(model)
    w_u = params["unembed.W_U"]
    answers = answer_tokens.to(w_u.device)
    directions = w_u[:, answers[:, 0]].T - w_u[:, answers[:, 1]].T
    gain = params.get("ln_final.w")
    return directions if gain is None else directions * gain


def logit_diff_constant(model: Model, answer_tokens: Int[Tensor, "batch 2"]) -> Float[Tensor, " batch"]:
    """The part of each prompt's logit difference that no component writes: the final LayerNorm's
    bias read through ``W_U``, plus ``b_U[correct] - b_U[incorrect]`` (zero for GPT-2)."""
    params = _params(model)
    w_u = params["unembed.W_U"]
    answers = answer_tokens.to(w_u.device)
    constant = torch.zeros(answers.shape[0], device=w_u.device, dtype=w_u.dtype)
    bias = params.get("ln_final.b")
    if bias is not None:
        constant = constant + bias @ (w_u[:, answers[:, 0]] - w_u[:, answers[:, 1]])
    b_u = params.get("unembed.b_U")
    if b_u is not None:
        constant = constant + b_u[answers[:, 0]] - b_u[answers[:, 1]]
    return constant


def final_scale(cache: Cache, pos: int = -1) -> Float[Tensor, "batch 1"]:
    """The final LayerNorm's scale (``ln_final.hook_scale``) at position ``pos`` in the run ``cache``
    recorded: what "frozen" freezes."""
    return cache[act_name("scale")][:, pos]


def project(
    parts: Float[Tensor, "*parts batch d_model"],
    directions: Float[Tensor, "batch d_model"],
    scale: Float[Tensor, "batch 1"],
) -> Float[Tensor, "*parts batch"]:
    """Each part's contribution to the logit difference through the final LayerNorm with ``scale``
    frozen: centre (linear), divide by the frozen scale, read along ``directions``."""
    centred = parts - parts.mean(dim=-1, keepdim=True)
    return (centred / scale * directions).sum(dim=-1)


def head_outputs(model: Model, cache: Cache, pos: int = -1) -> Float[Tensor, "layer head batch d_model"]:
    """What each head wrote into the residual stream at ``pos``: ``z[:, pos, head] @ W_O[head]``."""
    params = _params(model)
    return torch.stack(
        [
            torch.einsum("bhd,hdm->hbm", cache[act_name("z", layer)][:, pos], params[f"blocks.{layer}.attn.W_O"])
            for layer in range(model.cfg.n_layers)
        ]
    )


@dataclass
class DirectEffects:
    """Direct effects on the logit difference, one value per prompt, with the final LN scale frozen.

    ``heads[layer, head]``, ``attn_bias[layer]`` (the layer's ``b_O``), ``mlps[layer]``,
    ``embed``, ``pos_embed`` and ``constant`` (LN bias and ``b_U``) add up to ``logit_diff``.
    """

    heads: Float[Tensor, "layer head batch"]
    attn_bias: Float[Tensor, "layer batch"]
    mlps: Float[Tensor, "layer batch"]
    embed: Float[Tensor, " batch"]
    pos_embed: Float[Tensor, " batch"]
    constant: Float[Tensor, " batch"]
    logit_diff: Float[Tensor, " batch"]

    @property
    def attn_layers(self) -> Float[Tensor, "layer batch"]:
        """Each attention layer's direct effect: its heads plus its bias."""
        return self.heads.sum(dim=1) + self.attn_bias

    def total(self) -> Float[Tensor, " batch"]:
        """The sum of every part: equals ``logit_diff`` up to float rounding."""
        return (
            self.heads.sum(dim=(0, 1))
            + self.attn_bias.sum(0)
            + self.mlps.sum(0)
            + self.embed
            + self.pos_embed
            + self.constant
        )


@torch.no_grad()
def direct_effects(
    model: Model,
    cache: Cache,
    answer_tokens: Int[Tensor, "batch 2"],
    scale: Float[Tensor, "batch 1"] | None = None,
) -> DirectEffects:
    """Direct logit attribution of every head, attention bias, MLP and embedding at the final position
    of the run ``cache`` recorded, with the final LayerNorm's scale frozen (default: at its value in
    that run, so the parts sum to that run's logit difference)."""
    scale = final_scale(cache) if scale is None else scale
    directions = logit_diff_directions(model, answer_tokens)
    params = _params(model)
    n_layers = model.cfg.n_layers
    bias = torch.stack([params[f"blocks.{layer}.attn.b_O"] for layer in range(n_layers)])  # [layer, d_model]
    batch = scale.shape[0]
    return DirectEffects(
        heads=project(head_outputs(model, cache), directions, scale),
        attn_bias=project(bias[:, None].expand(-1, batch, -1), directions, scale),
        mlps=project(
            torch.stack([cache[act_name("mlp_out", layer)][:, -1] for layer in range(n_layers)]), directions, scale
        ),
        embed=project(cache[act_name("embed")][:, -1], directions, scale),
        pos_embed=project(cache[act_name("pos_embed")][:, -1], directions, scale),
        constant=logit_diff_constant(model, answer_tokens),
        logit_diff=final_logit_diff(model, cache, answer_tokens),
    )


@torch.no_grad()
def final_logit_diff(model: Model, cache: Cache, answer_tokens: Int[Tensor, "batch 2"]) -> Float[Tensor, " batch"]:
    """Each prompt's logit difference, read from the final residual stream of ``cache`` (no LN frozen)."""
    final = cache[act_name("resid_post", model.cfg.n_layers - 1)][:, -1]
    return lens(model, final, answer_tokens)


def lens(
    model: Model,
    resid: Float[Tensor, "*points batch d_model"],
    answer_tokens: Int[Tensor, "batch 2"],
    scale: Float[Tensor, "batch 1"] | None = None,
) -> Float[Tensor, "*points batch"]:
    """The logit difference read off residual stream vectors through the final LayerNorm and the
    unembedding: with each vector's own LayerNorm scale (``scale=None``, the logit lens) or a frozen
    one."""
    if scale is None:
        centred = resid - resid.mean(dim=-1, keepdim=True)
        scale = (centred.pow(2).mean(dim=-1, keepdim=True) + float(model.cfg.eps)).sqrt()
        return (centred / scale * logit_diff_directions(model, answer_tokens)).sum(-1) + logit_diff_constant(
            model, answer_tokens
        )
    return project(resid, logit_diff_directions(model, answer_tokens), scale) + logit_diff_constant(
        model, answer_tokens
    )


@torch.no_grad()
def logit_lens(
    model: Model, cache: Cache, answer_tokens: Int[Tensor, "batch 2"], frozen: bool = False
) -> dict[str, Float[Tensor, "layer batch"]]:
    """The logit difference read off ``resid_pre`` and ``resid_post`` of every layer at the final
    position: ``{"resid_pre": [layer, batch], "resid_post": [layer, batch]}``. ``frozen``: with the
    final LayerNorm's scale of this run instead of each stream's own (then ``resid_post`` is the
    running sum of the direct effects)."""
    scale = final_scale(cache) if frozen else None
    return {
        kind: torch.stack(
            [
                lens(model, cache[act_name(kind, layer)][:, -1], answer_tokens, scale)
                for layer in range(model.cfg.n_layers)
            ]
        )
        for kind in ("resid_pre", "resid_post")
    }


def ranked_heads(values: Float[Tensor, "layer head"], descending: bool = True) -> list[tuple[int, int]]:
    """Every (layer, head), ordered by ``values`` (largest first by default)."""
    n_heads = values.shape[1]
    order = values.flatten().argsort(descending=descending).tolist()
    return [divmod(index, n_heads) for index in order]


def leading_heads(values: Float[Tensor, "layer head"], fraction: float = 0.1) -> list[tuple[int, int]]:
    """The heads, largest first, whose value is at least ``fraction`` of the sum of the positive
    values (at least the largest head): for direct effects, the heads that write the answer."""
    positive = values.clamp(min=0).sum().item()
    ranked = ranked_heads(values)
    chosen = [(layer, h) for layer, h in ranked if positive > 0 and values[layer, h].item() >= fraction * positive]
    return chosen or ranked[:1]
