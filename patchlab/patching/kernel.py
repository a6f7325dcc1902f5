"""The fast methods' kernel: GPT-2's block stack in plain torch on the model's own processed weights.

It records a corrupted run (:class:`Trace`) and resumes runs from any block for a suffix of positions,
reusing the recorded keys and values of the earlier positions (causal attention leaves them unchanged).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

if TYPE_CHECKING:
    from patchlab.types import Model


def _tanh_gelu(x: Tensor) -> Tensor:
    """GELU's tanh approximation: GPT-2's ``gelu_new`` (and ``gelu_fast``, the same function)."""
    return F.gelu(x, approximate="tanh")


# The MLP activations the kernel knows, by TransformerLens's ``cfg.act_fn``.
ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "gelu_new": _tanh_gelu,
    "gelu_fast": _tanh_gelu,
    "gelu_pytorch_tanh": _tanh_gelu,
    "gelu": F.gelu,
    "relu": F.relu,
}


def kernel_unsupported(cfg: Any) -> str | None:
    """Why the GPT-2 kernel of ``fast_patching`` cannot run this architecture (None if it can)."""
    n_kv = getattr(cfg, "n_key_value_heads", None)
    checks = [
        (
            getattr(cfg, "positional_embedding_type", "standard") != "standard",
            "its positional embeddings are not learned absolute ones",
        ),
        (getattr(cfg, "normalization_type", "LN") not in ("LN", "LNPre"), "its normalisation is not LayerNorm"),
        (
            getattr(cfg, "act_fn", None) not in ACTIVATIONS,
            f"its activation {getattr(cfg, 'act_fn', None)!r} is unknown",
        ),
        (bool(getattr(cfg, "parallel_attn_mlp", False)), "attention and MLP run in parallel"),
        (bool(getattr(cfg, "gated_mlp", False)), "its MLP is gated"),
        (bool(getattr(cfg, "attn_only", False)), "it has no MLPs"),
        (n_kv is not None and n_kv != cfg.n_heads, "it uses grouped-query attention"),
        (bool(getattr(cfg, "use_local_attn", False)), "it uses local attention"),
        (getattr(cfg, "attention_dir", "causal") != "causal", "its attention is not causal"),
        (
            getattr(cfg, "attn_scores_soft_cap", -1.0) > 0 or getattr(cfg, "output_logits_soft_cap", -1.0) > 0,
            "it soft-caps scores or logits",
        ),
        (bool(getattr(cfg, "scale_attn_by_inverse_layer_idx", False)), "it scales attention by layer"),
        (bool(getattr(cfg, "use_qk_norm", False)), "it normalises queries and keys"),
        (bool(getattr(cfg, "post_embedding_ln", False)), "it normalises the embeddings"),
        (bool(getattr(cfg, "use_normalization_before_and_after", False)), "it normalises after each sublayer"),
    ]
    return next((reason for failed, reason in checks if failed), None)


@dataclass
class Trace:
    """The kernel's record of the corrupted run: what a resumed run reuses."""

    resid_pre: Float[Tensor, "layer_plus_1 batch pos d_model"]  # [n_layers] is the final residual
    resid_mid: Float[Tensor, "layer batch pos d_model"]
    q: Float[Tensor, "layer batch pos head d_head"]
    k: Float[Tensor, "layer batch pos head d_head"]
    v: Float[Tensor, "layer batch pos head d_head"]
    z: Float[Tensor, "layer batch pos head d_head"]


class Kernel:
    """A GPT-2 block stack in plain torch, on the bridge's own processed weights.

    It can resume a run at any layer for a suffix of positions, taking the keys and values of the
    earlier positions from a recorded corrupted run (causal attention: they are unchanged). The
    weights are views of the model's parameters laid out for ``F.linear`` (``[out, in]``), not copies.
    """

    def __init__(self, model: Model) -> None:
        cfg = model.cfg
        params = model.tl_parameters()

        def heads_in(w: Tensor) -> Tensor:  # [head, d_model, d_head] -> [head*d_head, d_model]
            return w.permute(0, 2, 1).reshape(-1, w.shape[1])

        def layer(i: int) -> dict[str, Any]:  # a tensor, or None for a weight the model lacks (e.g. folded LN)
            def get(key: str) -> Tensor | None:
                return params.get(f"blocks.{i}.{key}")

            def need(key: str) -> Tensor:
                return params[f"blocks.{i}.{key}"]

            return {
                "q": heads_in(need("attn.W_Q")),
                "b_q": need("attn.b_Q").flatten(),
                "k": heads_in(need("attn.W_K")),
                "b_k": need("attn.b_K").flatten(),
                "v": heads_in(need("attn.W_V")),
                "b_v": need("attn.b_V").flatten(),
                "o": need("attn.W_O").flatten(0, 1).T,
                "b_o": get("attn.b_O"),
                "ln1": get("ln1.w"),
                "ln1_b": get("ln1.b"),
                "ln2": get("ln2.w"),
                "ln2_b": get("ln2.b"),
                "in": need("mlp.W_in").T,
                "b_in": get("mlp.b_in"),
                "out": need("mlp.W_out").T,
                "b_out": get("mlp.b_out"),
            }

        self.n_layers, self.n_heads, self.d_head = cfg.n_layers, cfg.n_heads, cfg.d_head
        self.eps = float(cfg.eps)
        self.act = ACTIVATIONS[cfg.act_fn]
        self.scale = (
            float(cfg.attn_scale)
            if getattr(cfg, "attn_scale", -1.0) > 0
            else (cfg.d_head**0.5 if getattr(cfg, "use_attn_scale", True) else 1.0)
        )
        self.blocks = [layer(i) for i in range(cfg.n_layers)]
        self.ln_final = (params.get("ln_final.w"), params.get("ln_final.b"))
        self.w_u, self.b_u = params["unembed.W_U"], params.get("unembed.b_U")

    def norm(self, x: Tensor, weight: Tensor | None, bias: Tensor | None) -> Tensor:
        return F.layer_norm(x, x.shape[-1:], weight, bias, self.eps)

    def mlp_out(self, layer: int, resid_mid: Tensor) -> Tensor:
        w = self.blocks[layer]
        hidden = self.act(F.linear(self.norm(resid_mid, w["ln2"], w["ln2_b"]), w["in"], w["b_in"]))
        return F.linear(hidden, w["out"], w["b_out"])

    def attn_out(self, layer: int, z: Float[Tensor, "rows pos head d_head"]) -> Float[Tensor, "rows pos d_model"]:
        w = self.blocks[layer]
        return F.linear(z.flatten(-2), w["o"], w["b_o"])

    def finish_block(
        self, layer: int, resid: Float[Tensor, "rows pos d_model"], z: Float[Tensor, "rows pos head d_head"]
    ) -> Float[Tensor, "rows pos d_model"]:
        """The block's output residual from its input residual and its heads' outputs ``z``."""
        mid = resid + self.attn_out(layer, z)
        return mid + self.mlp_out(layer, mid)

    def attn_in(self, layer: int, resid: Tensor) -> Tensor:
        w = self.blocks[layer]
        return self.norm(resid, w["ln1"], w["ln1_b"])

    def project(self, layer: int, normed: Tensor, which: str) -> Float[Tensor, "rows pos head d_head"]:
        """Queries, keys or values (``which`` = "q", "k", "v") split into heads."""
        w = self.blocks[layer]
        return F.linear(normed, w[which], w["b_" + which]).unflatten(-1, (self.n_heads, self.d_head))

    def attention(self, q: Tensor, k: Tensor, v: Tensor) -> Float[Tensor, "rows query head d_head"]:
        """Causal attention of the queries (the last positions) over all keys."""
        n_q, n_k = q.shape[1], k.shape[1]
        allowed = None
        if n_q > 1:
            query_pos = torch.arange(n_k - n_q, n_k, device=q.device)
            allowed = torch.arange(n_k, device=q.device) <= query_pos[:, None]
        z = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=allowed, scale=1.0 / self.scale
        )
        return z.transpose(1, 2)

    def trace(self, resid: Float[Tensor, "batch pos d_model"]) -> Trace:
        """Run all blocks over the whole sequence and record what resumed runs need."""
        record: dict[str, list[Tensor]] = {"resid_pre": [], "resid_mid": [], "q": [], "k": [], "v": [], "z": []}
        for layer in range(self.n_layers):
            record["resid_pre"].append(resid)
            normed = self.attn_in(layer, resid)
            q, k, v = (self.project(layer, normed, which) for which in "qkv")
            z = self.attention(q, k, v)
            mid = resid + self.attn_out(layer, z)
            resid = mid + self.mlp_out(layer, mid)
            for key, value in (("resid_mid", mid), ("q", q), ("k", k), ("v", v), ("z", z)):
                record[key].append(value)
        record["resid_pre"].append(resid)
        return Trace(**{key: torch.stack(values) for key, values in record.items()})

    def resume(
        self,
        trace: Trace,
        first_pos: int,
        starts: Int[Tensor, " rows"],
        prompts: Int[Tensor, " rows"],
        resid: Float[Tensor, "rows suffix d_model"],
        inputs: dict[int, tuple[str, list[int], Tensor]] | None = None,
    ) -> Float[Tensor, "rows d_model"]:
        """Finish patched runs whose residual differs from the corrupted one only from ``first_pos`` on.

        Row ``r`` (of prompt ``prompts[r]``) enters block ``starts[r]`` with the residual suffix
        ``resid[r]`` (positions ``first_pos..``); its earlier positions are the corrupted run's, whose
        keys and values come from ``trace``. Rows are sorted by start layer, so the rows running a
        block are a prefix of the batch. ``resid`` is updated in place; returns the final residual at
        the last position. At the last layer only the last position is computed.

        ``inputs[layer] = (which, heads, values)`` overrides the queries, keys or values (``which``) of
        ``heads`` in that block with ``values`` ``[rows running the block, suffix, len(heads), d_head]``.
        """
        active = torch.searchsorted(starts, torch.arange(self.n_layers, device=starts.device), right=True)
        for layer, n_rows in enumerate(active.tolist()):
            if n_rows == 0:
                continue
            x, rows = resid[:n_rows], prompts[:n_rows]
            normed = self.attn_in(layer, x)
            last = layer == self.n_layers - 1  # nothing reads the other positions of the last block's output
            qkv = {
                "q": self.project(layer, normed[:, -1:] if last else normed, "q"),
                "k": self.project(layer, normed, "k"),
                "v": self.project(layer, normed, "v"),
            }
            if inputs and layer in inputs:
                which, heads, values = inputs[layer]
                qkv[which][:, :, heads] = values[:n_rows, -qkv[which].shape[1] :]
            k, v = qkv["k"], qkv["v"]
            if first_pos:
                k = torch.cat([trace.k[layer][rows, :first_pos], k], dim=1)
                v = torch.cat([trace.v[layer][rows, :first_pos], v], dim=1)
            if last:
                x = x[:, -1:]
            x += self.attn_out(layer, self.attention(qkv["q"], k, v))
            x += self.mlp_out(layer, x)
        return resid[:, -1]

    def logits(self, final_resid: Float[Tensor, "rows d_model"], columns: Tensor | None) -> Tensor:
        """Final-position logits, only of ``columns`` ([rows, k] token ids) when given."""
        normed = self.norm(final_resid, *self.ln_final)
        if columns is None:
            out = normed @ self.w_u
            return out if self.b_u is None else out + self.b_u
        out = torch.einsum("rd,drk->rk", normed, self.w_u[:, columns])
        return out if self.b_u is None else out + self.b_u[columns]
