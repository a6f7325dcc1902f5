"""Activation patching: the reference loop, fast exact patching and attribution patching.

Denoising: run the corrupted prompts, and at one (layer, position) overwrite the activation with the
one cached from the clean run; the metric then says how much of the clean behaviour came back.

Three interchangeable methods (``METHODS``), all called as
``method(model, corrupted_tokens, clean_cache, metric, component, progress)``:

- ``reference``: one full forward pass per cell with ``run_with_hooks``; slow, simple, the ground truth.
- ``fast``: the same numbers (to float rounding) from far less work, see :func:`fast_patching`.
- ``attribution``: Nanda's gradient-based linear approximation, one forward and one backward pass.
"""

from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from patchlab.ioi import IOIData
from patchlab.metrics import Metric, PatchingMetric, metric_from_runs

# Each component patched by layer and position, and the TransformerLens hook that carries it.
COMPONENT_HOOKS: dict[str, str] = {
    "resid_pre": "blocks.{layer}.hook_resid_pre",
    "attn_out": "blocks.{layer}.hook_attn_out",
    "mlp_out": "blocks.{layer}.hook_mlp_out",
}
HEAD_HOOK = "blocks.{layer}.attn.hook_z"  # per-head outputs [batch, pos, head, d_head]
COMPONENTS = (*COMPONENT_HOOKS, "head_out")


def hook_name(component: str, layer: int) -> str:
    """The hook name of ``component`` at ``layer`` (e.g. ``blocks.3.hook_resid_pre``)."""
    if component == "head_out":
        return HEAD_HOOK.format(layer=layer)
    if component not in COMPONENT_HOOKS:
        raise ValueError(f"unknown component {component!r}: choose one of {', '.join(COMPONENTS)}")
    return COMPONENT_HOOKS[component].format(layer=layer)


def _check_batch(model: Any, corrupted_tokens: Tensor, clean_cache: Any, name: str) -> None:
    if name not in clean_cache:
        raise ValueError(f"the clean cache has no {name!r}: cache the clean run with run_with_cache")
    clean_act = clean_cache[name]
    if clean_act.shape[:2] != corrupted_tokens.shape:
        raise ValueError(
            f"clean activations are {tuple(clean_act.shape[:2])} [batch, pos] but the corrupted tokens "
            f"are {tuple(corrupted_tokens.shape)}: clean and corrupted batches must match"
        )


def patch_position(
    activation: Float[Tensor, "batch pos ..."], clean_activation: Float[Tensor, "batch pos ..."], pos: int
) -> Float[Tensor, "batch pos ..."]:
    """Overwrite position ``pos`` of ``activation`` with the clean one (in place, returned)."""
    activation[:, pos] = clean_activation[:, pos]
    return activation


def reference_patching(
    model: Any,
    corrupted_tokens: Int[Tensor, "batch pos"],
    clean_cache: Any,
    metric: Metric,
    component: str = "resid_pre",
    progress: bool = True,
) -> Float[Tensor, "layer cols"]:
    """Patch ``component`` from the clean cache into the corrupted run at every (layer, position).

    One full forward pass per cell with ``run_with_hooks``: slow, simple, the ground truth that the
    fast methods are tested against. Returns ``metric`` of each patched run, ``[n_layers, n_pos]``;
    for ``component="head_out"`` it patches each head at all positions (:func:`reference_head_patching`)
    and returns ``[n_layers, n_heads]``.
    """
    if component == "head_out":
        return reference_head_patching(model, corrupted_tokens, clean_cache, metric, progress=progress)
    n_layers, n_pos = model.cfg.n_layers, corrupted_tokens.shape[1]
    _check_batch(model, corrupted_tokens, clean_cache, hook_name(component, 0))
    results = torch.zeros(n_layers, n_pos)
    cells = [(layer, pos) for layer in range(n_layers) for pos in range(n_pos)]
    for layer, pos in tqdm(cells, desc=f"patching {component}", disable=not progress):
        name = hook_name(component, layer)

        def hook(activation: Tensor, hook: Any) -> Tensor:
            return patch_position(activation, clean_cache[name], pos)

        with torch.no_grad():
            logits = model.run_with_hooks(corrupted_tokens, fwd_hooks=[(name, hook)])
        results[layer, pos] = metric(logits).item()
    return results


def reference_head_patching(
    model: Any,
    corrupted_tokens: Int[Tensor, "batch pos"],
    clean_cache: Any,
    metric: Metric,
    progress: bool = True,
) -> Float[Tensor, "layer head"]:
    """Patch each attention head's output (``hook_z``, all positions) from the clean run."""
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    _check_batch(model, corrupted_tokens, clean_cache, hook_name("head_out", 0))
    results = torch.zeros(n_layers, n_heads)
    cells = [(layer, head) for layer in range(n_layers) for head in range(n_heads)]
    for layer, head in tqdm(cells, desc="patching head_out", disable=not progress):
        name = hook_name("head_out", layer)

        def hook(z: Tensor, hook: Any) -> Tensor:
            z[:, :, head] = clean_cache[name][:, :, head]
            return z

        with torch.no_grad():
            logits = model.run_with_hooks(corrupted_tokens, fwd_hooks=[(name, hook)])
        results[layer, head] = metric(logits).item()
    return results


# ---------------------------------------------------------------------------------------------
# Fast exact patching
# ---------------------------------------------------------------------------------------------


class FastPatchingFallback(UserWarning):
    """``fast_patching`` could not handle a model or metric and ran the reference loop instead."""


def _tanh_gelu(x: Tensor) -> Tensor:
    """GELU's tanh approximation: GPT-2's ``gelu_new`` (and ``gelu_fast``, the same function)."""
    return F.gelu(x, approximate="tanh")


# The MLP activations the kernel knows, by TransformerLens's ``cfg.act_fn``.
_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "gelu_new": _tanh_gelu,
    "gelu_fast": _tanh_gelu,
    "gelu_pytorch_tanh": _tanh_gelu,
    "gelu": F.gelu,
    "relu": F.relu,
}

# Tolerance of the self-check: the kernel must reproduce the model's final logits this closely
# (relative to their largest magnitude) before its numbers are trusted.
_SELF_CHECK_RTOL = 1e-4
# Rows x positions resumed at once (bounds the memory of one batched step).
_TOKENS_PER_CHUNK = 8192


def _kernel_unsupported(cfg: Any) -> str | None:
    """Why the GPT-2 kernel of ``fast_patching`` cannot run this architecture (None if it can)."""
    n_kv = getattr(cfg, "n_key_value_heads", None)
    checks = [
        (getattr(cfg, "positional_embedding_type", "standard") != "standard",
         "its positional embeddings are not learned absolute ones"),
        (getattr(cfg, "normalization_type", "LN") not in ("LN", "LNPre"), "its normalisation is not LayerNorm"),
        (getattr(cfg, "act_fn", None) not in _ACTIVATIONS, f"its activation {getattr(cfg, 'act_fn', None)!r} is unknown"),
        (bool(getattr(cfg, "parallel_attn_mlp", False)), "attention and MLP run in parallel"),
        (bool(getattr(cfg, "gated_mlp", False)), "its MLP is gated"),
        (bool(getattr(cfg, "attn_only", False)), "it has no MLPs"),
        (n_kv is not None and n_kv != cfg.n_heads, "it uses grouped-query attention"),
        (bool(getattr(cfg, "use_local_attn", False)), "it uses local attention"),
        (getattr(cfg, "attention_dir", "causal") != "causal", "its attention is not causal"),
        (getattr(cfg, "attn_scores_soft_cap", -1.0) > 0 or getattr(cfg, "output_logits_soft_cap", -1.0) > 0,
         "it soft-caps scores or logits"),
        (bool(getattr(cfg, "scale_attn_by_inverse_layer_idx", False)), "it scales attention by layer"),
        (bool(getattr(cfg, "use_qk_norm", False)), "it normalises queries and keys"),
        (bool(getattr(cfg, "post_embedding_ln", False)), "it normalises the embeddings"),
        (bool(getattr(cfg, "use_normalization_before_and_after", False)), "it normalises after each sublayer"),
    ]
    return next((reason for failed, reason in checks if failed), None)


@dataclass
class _Trace:
    """The kernel's record of the corrupted run: what a resumed run reuses."""

    resid_pre: Float[Tensor, "layer_plus_1 batch pos d_model"]  # [n_layers] is the final residual
    resid_mid: Float[Tensor, "layer batch pos d_model"]
    k: Float[Tensor, "layer batch pos head d_head"]
    v: Float[Tensor, "layer batch pos head d_head"]
    z: Float[Tensor, "layer batch pos head d_head"]


class _Kernel:
    """A GPT-2 block stack in plain torch, on the bridge's own processed weights.

    It can resume a run at any layer for a suffix of positions, taking the keys and values of the
    earlier positions from a recorded corrupted run (causal attention: they are unchanged). The
    weights are views of the model's parameters laid out for ``F.linear`` (``[out, in]``), not copies.
    """

    def __init__(self, model: Any) -> None:
        cfg = model.cfg
        params = model.tl_parameters()

        def heads_in(w: Tensor) -> Tensor:  # [head, d_model, d_head] -> [head*d_head, d_model]
            return w.permute(0, 2, 1).reshape(-1, w.shape[1])

        def layer(i: int) -> dict[str, Tensor | None]:
            def get(key: str) -> Tensor | None:
                return params.get(f"blocks.{i}.{key}")

            return {
                "q": heads_in(get("attn.W_Q")), "b_q": get("attn.b_Q").flatten(),
                "k": heads_in(get("attn.W_K")), "b_k": get("attn.b_K").flatten(),
                "v": heads_in(get("attn.W_V")), "b_v": get("attn.b_V").flatten(),
                "o": get("attn.W_O").flatten(0, 1).T, "b_o": get("attn.b_O"),
                "ln1": get("ln1.w"), "ln1_b": get("ln1.b"), "ln2": get("ln2.w"), "ln2_b": get("ln2.b"),
                "in": get("mlp.W_in").T, "b_in": get("mlp.b_in"), "out": get("mlp.W_out").T, "b_out": get("mlp.b_out"),
            }

        self.n_layers, self.n_heads, self.d_head = cfg.n_layers, cfg.n_heads, cfg.d_head
        self.eps = float(cfg.eps)
        self.act = _ACTIVATIONS[cfg.act_fn]
        self.scale = float(cfg.attn_scale) if getattr(cfg, "attn_scale", -1.0) > 0 else (
            cfg.d_head ** 0.5 if getattr(cfg, "use_attn_scale", True) else 1.0)
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
        z = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                           attn_mask=allowed, scale=1.0 / self.scale)
        return z.transpose(1, 2)

    def trace(self, resid: Float[Tensor, "batch pos d_model"]) -> _Trace:
        """Run all blocks over the whole sequence and record what resumed runs need."""
        record: dict[str, list[Tensor]] = {"resid_pre": [], "resid_mid": [], "k": [], "v": [], "z": []}
        for layer in range(self.n_layers):
            record["resid_pre"].append(resid)
            normed = self.attn_in(layer, resid)
            k, v = self.project(layer, normed, "k"), self.project(layer, normed, "v")
            z = self.attention(self.project(layer, normed, "q"), k, v)
            mid = resid + self.attn_out(layer, z)
            resid = mid + self.mlp_out(layer, mid)
            for key, value in (("resid_mid", mid), ("k", k), ("v", v), ("z", z)):
                record[key].append(value)
        record["resid_pre"].append(resid)
        return _Trace(**{key: torch.stack(values) for key, values in record.items()})

    def resume(
        self,
        trace: _Trace,
        first_pos: int,
        starts: Int[Tensor, " rows"],
        prompts: Int[Tensor, " rows"],
        resid: Float[Tensor, "rows suffix d_model"],
    ) -> Float[Tensor, "rows d_model"]:
        """Finish patched runs whose residual differs from the corrupted one only from ``first_pos`` on.

        Row ``r`` (of prompt ``prompts[r]``) enters block ``starts[r]`` with the residual suffix
        ``resid[r]`` (positions ``first_pos..``); its earlier positions are the corrupted run's, whose
        keys and values come from ``trace``. Rows are sorted by start layer, so the rows running a
        block are a prefix of the batch. ``resid`` is updated in place; returns the final residual at
        the last position. At the last layer only the last position is computed.
        """
        active = torch.searchsorted(starts, torch.arange(self.n_layers, device=starts.device), right=True)
        for layer, n_rows in enumerate(active.tolist()):
            if n_rows == 0:
                continue
            x, rows = resid[:n_rows], prompts[:n_rows]
            normed = self.attn_in(layer, x)
            k, v = self.project(layer, normed, "k"), self.project(layer, normed, "v")
            if first_pos:
                k = torch.cat([trace.k[layer][rows, :first_pos], k], dim=1)
                v = torch.cat([trace.v[layer][rows, :first_pos], v], dim=1)
            if layer == self.n_layers - 1:  # nothing reads the other positions of the last block's output
                x, normed = x[:, -1:], normed[:, -1:]
            x += self.attn_out(layer, self.attention(self.project(layer, normed, "q"), k, v))
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


class _Unsupported(Exception):
    """Raised inside ``fast_patching`` when it must fall back to the reference loop."""


def _final_position_evaluator(
    metric: Metric, corrupted_logits: Float[Tensor, "batch pos d_vocab"]
) -> tuple[Tensor | None, Callable[[Tensor], float]]:
    """The logit columns fast patching must compute, and how to score ``[batch, columns]`` logits.

    ``PatchingMetric`` reads two answer logits per prompt: only those columns are unembedded, and
    the same metric is evaluated on them. Any other metric gets the full final-position logits as
    ``[batch, 1, d_vocab]``; it must give the same value there as on the full logits.
    """
    if type(metric) is PatchingMetric:
        batch = metric.answer_tokens.shape[0]
        pairs = torch.tensor([[0, 1]], device=metric.answer_tokens.device).expand(batch, 2)
        on_columns = PatchingMetric(pairs, metric.clean_logit_diff, metric.corrupted_logit_diff)
        return metric.answer_tokens.to(corrupted_logits.device), lambda cols: on_columns(cols[:, None]).item()
    try:
        full = metric(corrupted_logits).item()
        last = metric(corrupted_logits[:, -1:]).item()
    except Exception as err:  # the metric indexes positions other than the last one
        raise _Unsupported(f"the metric fails on final-position logits ({type(err).__name__}: {err})") from None
    if not math.isclose(full, last, rel_tol=1e-6, abs_tol=1e-7):
        raise _Unsupported(f"the metric reads more than the final position ({full} on all positions, "
                           f"{last} on the last one)")
    return None, lambda logits: metric(logits[:, None]).item()


def _patch_starts(
    component: str, clean: Tensor, corrupted: Tensor, n_layers: int
) -> tuple[Bool[Tensor, "layer cols batch"], Int[Tensor, "layer cols batch"]]:
    """Which (layer, col, prompt) patches change anything, and the first position each changes.

    ``clean`` / ``corrupted`` are the stacked activations of the model's own clean and corrupted runs.
    A patch whose clean activation equals the corrupted one leaves the run exactly as it was; so does
    an attention or MLP output patched at the last layer anywhere but the final position.
    """
    if component == "head_out":  # [layer, batch, pos, head, d_head] -> per (layer, head, prompt)
        differs_at = (clean != corrupted).any(-1).permute(0, 3, 1, 2)  # [layer, head, batch, pos]
        return differs_at.any(-1), differs_at.int().argmax(-1)
    differs = (clean != corrupted).any(-1).transpose(1, 2)  # [layer, pos, batch]
    n_pos = differs.shape[1]
    if component in ("attn_out", "mlp_out"):
        differs[n_layers - 1, : n_pos - 1] = False
    first = torch.arange(n_pos, device=differs.device)[None, :, None].expand_as(differs)
    return differs, first


def _seed(
    component: str, kernel: _Kernel, trace: _Trace, clean: Tensor, layer: int, cols: Tensor, prompts: Tensor,
    first_pos: int,
) -> Float[Tensor, "rows suffix d_model"]:
    """The residual suffix (positions ``first_pos`` on) with which patched rows enter their start block.

    ``resid_pre`` rows start at ``layer``; ``attn_out``, ``mlp_out`` and ``head_out`` rows finish block
    ``layer`` here (attention output patched, then the MLP) and start at ``layer + 1``.
    """
    if component == "resid_pre":
        suffix = trace.resid_pre[layer][prompts, first_pos:].clone()
        suffix[:, 0] = clean[layer][prompts, first_pos]
        return suffix
    if component == "head_out":
        z = trace.z[layer][prompts, first_pos:].clone()
        rows = torch.arange(len(prompts), device=z.device)
        z[rows, :, cols] = clean[layer][prompts, first_pos:, cols]
        mid = trace.resid_pre[layer][prompts, first_pos:] + kernel.attn_out(layer, z)
        return mid + kernel.mlp_out(layer, mid)
    suffix = trace.resid_pre[layer + 1][prompts, first_pos:].clone()
    if component == "attn_out":
        mid = trace.resid_pre[layer][prompts, first_pos] + clean[layer][prompts, first_pos]
        suffix[:, 0] = mid + kernel.mlp_out(layer, mid)
    else:
        suffix[:, 0] = trace.resid_mid[layer][prompts, first_pos] + clean[layer][prompts, first_pos]
    return suffix


def _resume_patched(
    component: str, kernel: _Kernel, trace: _Trace, clean: Tensor, corrupted: Tensor, progress: bool
) -> tuple[Bool[Tensor, "layer cols batch"], Float[Tensor, "layer cols batch d_model"]]:
    """Run every patch that changes anything, batched by the first position it changes.

    Returns which (layer, col, prompt) patches were run and their final residual at the last position.
    """
    n_layers = kernel.n_layers
    differs, first = _patch_starts(component, clean, corrupted, n_layers)
    n_cols, batch, n_pos = differs.shape[1], differs.shape[2], trace.resid_pre.shape[2]
    final = trace.resid_pre.new_zeros(n_layers, n_cols, batch, trace.resid_pre.shape[-1])
    shift = 0 if component == "resid_pre" else 1  # the other components finish their block in _seed
    cells = differs.nonzero()  # [rows, 3]: layer, col, prompt
    starts = first[differs]
    for first_pos in tqdm(starts.unique().tolist(), desc=f"fast patching {component}", disable=not progress):
        group = cells[starts == first_pos]
        group = group[group[:, 0].argsort(stable=True)]
        for rows in group.split(max(1, _TOKENS_PER_CHUNK // (n_pos - first_pos))):
            layers, cols, prompts = rows.unbind(1)
            counts = torch.unique_consecutive(layers, return_counts=True)[1].tolist()
            seeds = [_seed(component, kernel, trace, clean, int(layer[0]), col, prompt, first_pos)
                     for layer, col, prompt in zip(layers.split(counts), cols.split(counts), prompts.split(counts))]
            final[layers, cols, prompts] = kernel.resume(trace, first_pos, layers + shift, prompts, torch.cat(seeds))
    return differs, final


def _fast(
    model: Any, corrupted_tokens: Tensor, clean_cache: Any, metric: Metric, component: str, progress: bool
) -> Float[Tensor, "layer cols"]:
    reason = _kernel_unsupported(model.cfg)
    if reason:
        raise _Unsupported(f"the model is not a GPT-2-style transformer ({reason})")
    names = [hook_name(component, layer) for layer in range(model.cfg.n_layers)]
    with torch.no_grad():
        # The corrupted run, by the model (activations to compare, logits to reuse) and by the kernel
        # (keys, values and residuals to resume from), checked against each other.
        corrupted_logits, corrupted_cache = model.run_with_cache(
            corrupted_tokens, names_filter=lambda name: name in names or name == "blocks.0.hook_resid_pre")
        columns, evaluate = _final_position_evaluator(metric, corrupted_logits)
        try:
            kernel = _Kernel(model)
        except (KeyError, AttributeError, TypeError) as err:
            raise _Unsupported(f"its weights are not laid out as GPT-2's ({type(err).__name__}: {err})") from None
        trace = kernel.trace(corrupted_cache["blocks.0.hook_resid_pre"])
        base = corrupted_logits[:, -1]
        base = base if columns is None else base.gather(-1, columns)
        error = (kernel.logits(trace.resid_pre[-1][:, -1], columns) - base).abs().max().item()
        if error > _SELF_CHECK_RTOL * max(1.0, base.abs().max().item()):
            raise _Unsupported(f"the fast kernel does not reproduce the model's logits (max difference {error:.2g})")

        clean = torch.stack([clean_cache[name] for name in names])
        corrupted = torch.stack([corrupted_cache[name] for name in names])
        differs, final = _resume_patched(component, kernel, trace, clean, corrupted, progress)

        # Each cell's logits: the corrupted run's, with the final logits of the prompts it changed.
        n_layers, n_cols = differs.shape[:2]
        results = torch.zeros(n_layers, n_cols)
        for layer, col in itertools.product(range(n_layers), range(n_cols)):
            logits = base.clone()
            patched = differs[layer, col]
            if patched.any():
                logits[patched] = kernel.logits(final[layer, col, patched], None if columns is None else columns[patched])
            results[layer, col] = evaluate(logits)
    return results


def fast_patching(
    model: Any,
    corrupted_tokens: Int[Tensor, "batch pos"],
    clean_cache: Any,
    metric: Metric,
    component: str = "resid_pre",
    progress: bool = True,
) -> Float[Tensor, "layer cols"]:
    """Exact activation patching with the reference loop's results and a fraction of its work.

    Same arguments and results as :func:`reference_patching` (``[n_layers, n_pos]``, or
    ``[n_layers, n_heads]`` for ``head_out``), to float rounding. What it leaves out:

    - patches whose clean activation equals the corrupted one (for IOI, everything before S2): the
      run is exactly the corrupted one, so its logits are reused;
    - layers before the patched one: a patched run resumes from the recorded corrupted run;
    - positions before the patched one: causal attention leaves them as in the corrupted run, so
      only the later positions are recomputed, with the earlier keys and values reused;
    - the last layer's other positions, and the unembedding of all but the final position (only the
      two answer columns for a ``PatchingMetric``);
    - one small pass per patch: all patches starting at one position run as one batch.

    The metric must read the final position only (any function of ``logits[:, -1]``); other
    metrics, and models that are not GPT-2-style, fall back to the reference loop with a
    :class:`FastPatchingFallback` warning. The kernel runs the model's own processed weights and is
    checked against the model's corrupted logits on every call before its numbers are used.
    """
    if component not in COMPONENTS:
        raise ValueError(f"unknown component {component!r}: choose one of {', '.join(COMPONENTS)}")
    _check_batch(model, corrupted_tokens, clean_cache, hook_name(component, 0))
    try:
        return _fast(model, corrupted_tokens, clean_cache, metric, component, progress)
    except _Unsupported as reason:
        warnings.warn(f"fast_patching: falling back to the reference loop because {reason}",
                      FastPatchingFallback, stacklevel=2)
        return reference_patching(model, corrupted_tokens, clean_cache, metric, component, progress)


# ---------------------------------------------------------------------------------------------
# Attribution patching
# ---------------------------------------------------------------------------------------------


def attribution_patching(
    model: Any,
    corrupted_tokens: Int[Tensor, "batch pos"],
    clean_cache: Any,
    metric: Metric,
    component: str = "resid_pre",
    progress: bool = True,
) -> Float[Tensor, "layer cols"]:
    """Attribution patching (Nanda): the first-order estimate of what exact patching returns.

    One forward and one backward pass of the corrupted run give the gradient of the metric with
    respect to every activation; the effect of patching is approximated by the linear term:
    ``metric(corrupted) + sum((clean - corrupted) * grad)``, summed over the patched slice (one
    position, or one head at all positions) and over the batch. Same arguments and result shape as
    :func:`reference_patching`; ``progress`` is accepted for the common signature (there is no loop).
    """
    n_layers = model.cfg.n_layers
    names = [hook_name(component, layer) for layer in range(n_layers)]
    _check_batch(model, corrupted_tokens, clean_cache, names[0])
    activations: dict[str, Tensor] = {}

    def track(embedding: Tensor, hook: Any) -> Tensor:
        return embedding.detach().requires_grad_(True)

    def keep(name: str) -> Callable[[Tensor, Any], Tensor]:
        def hook(activation: Tensor, hook: Any) -> Tensor:
            activations[name] = activation
            return activation  # returned, so that a reshaped hook (hook_z) feeds this very tensor on
        return hook

    with torch.enable_grad():
        logits = model.run_with_hooks(corrupted_tokens, fwd_hooks=[("hook_embed", track)]
                                      + [(name, keep(name)) for name in names])
        value = metric(logits)
        grads = torch.autograd.grad(value, [activations[name] for name in names])
    with torch.no_grad():
        deltas = [(clean_cache[name] - activations[name]) * grad for name, grad in zip(names, grads)]
        if component == "head_out":  # [batch, pos, head, d_head] -> [head]
            rows = [delta.sum(dim=(0, 1, 3)) for delta in deltas]
        else:  # [batch, pos, d_model] -> [pos]
            rows = [delta.sum(dim=(0, 2)) for delta in deltas]
        return (value.detach() + torch.stack(rows)).float().cpu()


def agreement(estimate: Tensor, exact: Tensor) -> dict[str, float]:
    """How well one patching table matches another: Pearson r and the largest absolute error."""
    a, b = estimate.flatten().double(), exact.flatten().double()
    centred_a, centred_b = a - a.mean(), b - b.mean()
    denom = (centred_a.norm() * centred_b.norm()).item()
    return {
        "pearson_r": float("nan") if denom == 0 else (centred_a @ centred_b).item() / denom,
        "max_abs_error": (a - b).abs().max().item(),
    }


@dataclass
class PatchingResult:
    """What one patching experiment measured: the values and the baselines they are normalised by."""

    component: str
    method: str
    values: Float[Tensor, "layer cols"]
    clean_logit_diff: float
    corrupted_logit_diff: float


# Patching methods by name: each takes (model, corrupted_tokens, clean_cache, metric, component, progress).
METHODS: dict[str, Callable[..., Tensor]] = {
    "reference": reference_patching,
    "fast": fast_patching,
    "attribution": attribution_patching,
}


def patch_ioi(
    model: Any, data: IOIData, component: str = "resid_pre", method: str = "reference", progress: bool = True
) -> PatchingResult:
    """Run the clean and corrupted prompts of ``data`` and patch ``component`` with ``method``."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}: choose one of {', '.join(METHODS)}")
    if component not in COMPONENTS:
        raise ValueError(f"unknown component {component!r}: choose one of {', '.join(COMPONENTS)}")
    with torch.no_grad():
        clean_logits, clean_cache = model.run_with_cache(data.clean_tokens)
        corrupted_logits = model(data.corrupted_tokens)
    metric = metric_from_runs(clean_logits, corrupted_logits, data.answer_tokens)
    values = METHODS[method](model, data.corrupted_tokens, clean_cache, metric, component=component,
                             progress=progress)
    return PatchingResult(component, method, values, metric.clean_logit_diff, metric.corrupted_logit_diff)
