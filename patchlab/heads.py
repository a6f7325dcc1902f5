"""Head roles from the weights and the attention: Wang et al.'s copy score, the QK check and each
head's direct effect on the two answer logits separately.

- **Copy score** (Wang et al. 2022): take the residual stream at a name's position after the first
  block (for a head of layer 0, the embedding it reads), pass it through the head's OV circuit (the
  head's LayerNorm, ``W_V``, ``b_V``, ``W_O``), as if the head attended only to that name, then
  through the final LayerNorm and the unembedding. The score is the share of names that come out
  among the ``k`` largest logits (``k = 5`` in the paper). The *negative* copy score does the same
  with the OV output negated: the share of names among the ``k`` smallest logits. A name mover
  copies (high copy score); a head that writes against the name it reads scores high on the
  negative one.
- **QK check**: where a head looks, as the mean attention weight from one position per prompt to
  another (e.g. END to IO, S1 or S2).
- **Answer-logit split**: a head's direct effect at the final position on the IO logit and on the S
  logit separately, with the final LayerNorm's scale frozen (:mod:`patchlab.direct`); their
  difference is its direct effect on the logit difference.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from patchlab.hooks import act_name
from patchlab.direct import final_scale, head_outputs

if TYPE_CHECKING:
    from patchlab.types import Cache, Model


def _layer_norm(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float) -> Tensor:
    """GPT-2's LayerNorm (gain and bias optional, as when they are folded into the next weights)."""
    centred = x - x.mean(-1, keepdim=True)
    normed = centred / (centred.pow(2).mean(-1, keepdim=True) + eps).sqrt()
    normed = normed if weight is None else normed * weight
    return normed if bias is None else normed + bias


@torch.no_grad()
def ov_logits(
    model: Model,
    cache: Cache,
    tokens: Int[Tensor, "batch pos"],
    positions: Int[Tensor, "batch names"],
    layer: int,
    heads: Sequence[int],
) -> Float[Tensor, "head n d_vocab"]:
    """The logits that the OV circuits of ``heads`` of ``layer`` make of each name at ``positions``: the
    residual stream there (after block 0; the embedding for layer 0) through the head's LayerNorm,
    ``W_V``, ``b_V``, ``W_O``, then the final LayerNorm and the unembedding."""
    params, cfg = model.tl_parameters(), model.cfg
    rows = torch.arange(tokens.shape[0], device=tokens.device)[:, None]
    state = cache[act_name("resid_pre", min(layer, 1))][rows, positions].flatten(0, 1)  # [n, d_model]
    read = _layer_norm(state, params.get(f"blocks.{layer}.ln1.w"), params.get(f"blocks.{layer}.ln1.b"), cfg.eps)
    picked = list(heads)
    values = torch.einsum("nm,hmd->hnd", read, params[f"blocks.{layer}.attn.W_V"][picked])
    if f"blocks.{layer}.attn.b_V" in params:
        values = values + params[f"blocks.{layer}.attn.b_V"][picked][:, None]
    out = torch.einsum("hnd,hdm->hnm", values, params[f"blocks.{layer}.attn.W_O"][picked])
    final = _layer_norm(out, params.get("ln_final.w"), params.get("ln_final.b"), cfg.eps)
    logits = final @ params["unembed.W_U"]
    return logits + params["unembed.b_U"] if "unembed.b_U" in params else logits


def copy_scores(
    model: Model,
    cache: Cache,
    tokens: Int[Tensor, "batch pos"],
    positions: Int[Tensor, "batch names"],
    k: int = 5,
    heads: Sequence[tuple[int, int]] | None = None,
) -> Float[Tensor, "2 layer head"]:
    """Wang et al.'s copy score (``[0]``) and negative copy score (``[1]``) of every head (or of
    ``heads``, NaN elsewhere): the share of the names at ``positions`` that the head's OV circuit puts
    among the ``k`` largest (negative: smallest) logits. ``cache`` is a run of ``tokens`` (it needs
    ``blocks.0/1.hook_resid_pre``)."""
    cfg = model.cfg
    if positions.ndim != 2 or positions.shape[0] != tokens.shape[0]:
        raise ValueError(
            f"positions must be [batch, names] for {tokens.shape[0]} prompts, got {tuple(positions.shape)}"
        )
    if not 1 <= k < cfg.d_vocab:
        raise ValueError(f"k must be between 1 and the vocabulary size - 1, got {k}")
    wanted = [(layer, h) for layer in range(cfg.n_layers) for h in range(cfg.n_heads)] if heads is None else list(heads)
    rows = torch.arange(tokens.shape[0], device=tokens.device)[:, None]
    names = tokens[rows, positions].flatten()
    scores = torch.full((2, cfg.n_layers, cfg.n_heads), float("nan"))
    for layer in sorted({wanted_layer for wanted_layer, _ in wanted}):
        picked = [h for wanted_layer, h in wanted if wanted_layer == layer]
        logits = ov_logits(model, cache, tokens, positions, layer, picked)
        own = logits.gather(-1, names.to(logits.device).expand(len(picked), -1)[..., None])
        for sign, row in ((1, 0), (-1, 1)):
            beaten = (sign * logits > sign * own).sum(-1)  # how many tokens rank above the name
            scores[row, layer, picked] = (beaten < k).float().mean(-1).cpu()
    return scores


def attention_to(
    cache: Cache,
    n_layers: int,
    query: Int[Tensor, " batch"],
    key: Int[Tensor, " batch"],
) -> Float[Tensor, "layer head"]:
    """Every head's attention weight from position ``query[b]`` to position ``key[b]``, mean over prompts."""
    rows = torch.arange(query.shape[0])
    return torch.stack(
        [cache[act_name("pattern", layer)][rows, :, query.cpu(), key.cpu()].mean(0) for layer in range(n_layers)]
    ).cpu()


def answer_logit_effects(
    model: Model,
    cache: Cache,
    answer_tokens: Int[Tensor, "batch 2"],
) -> Float[Tensor, "answer layer head"]:
    """Each head's direct effect at the final position on the correct answer's logit (``[0]``) and on
    the incorrect one's (``[1]``), mean over prompts, the final LayerNorm's scale frozen at this run's."""
    params = model.tl_parameters()
    outputs = head_outputs(model, cache)  # [layer, head, batch, d_model]
    centred = outputs - outputs.mean(-1, keepdim=True)
    normed = centred / final_scale(cache)
    if "ln_final.w" in params:
        normed = normed * params["ln_final.w"]
    w_u = params["unembed.W_U"]
    answers = answer_tokens.to(w_u.device)
    return torch.stack([torch.einsum("lhbm,bm->lhb", normed, w_u[:, answers[:, i]].T).mean(-1) for i in (0, 1)]).cpu()
