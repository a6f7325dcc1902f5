"""Hook names, spelled in one place: ``act_name("z", 3)`` is ``"blocks.3.attn.hook_z"``.

The course's one spelling of TransformerLens's hook names (as ``transformer_lens``'s own
``get_act_name``, without its shorthand parsing): every module of ``patchlab`` names a hook through
:func:`act_name`, so that a hook renamed upstream is renamed here once.
"""

from __future__ import annotations

# Where each activation lives: in the block's attention, in its MLP, in the block itself, or outside
# the blocks (no layer).
_ATTENTION = frozenset({"q", "k", "v", "z", "pattern", "attn_scores"})
_MLP = frozenset({"pre", "post"})
_BLOCK = frozenset({"resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out"})
_TOP_LEVEL = {"embed": "hook_embed", "pos_embed": "hook_pos_embed", "scale": "ln_final.hook_scale"}


def act_name(activation: str, layer: int | None = None) -> str:
    """The hook name of ``activation`` in block ``layer`` (``None`` for the embeddings and the final
    LayerNorm's ``scale``), e.g. ``act_name("resid_pre", 3) == "blocks.3.hook_resid_pre"``."""
    if activation in _TOP_LEVEL:
        if layer is not None:
            raise ValueError(f"{activation!r} is outside the blocks: call act_name({activation!r}) without a layer")
        return _TOP_LEVEL[activation]
    if activation in _ATTENTION:
        where = "attn."
    elif activation in _MLP:
        where = "mlp."
    elif activation in _BLOCK:
        where = ""
    else:
        known = sorted([*_TOP_LEVEL, *_ATTENTION, *_MLP, *_BLOCK])
        raise ValueError(f"unknown activation {activation!r}: choose one of {', '.join(known)}")
    if layer is None:
        raise ValueError(f"{activation!r} is in every block: give its layer, e.g. act_name({activation!r}, 0)")
    return f"blocks.{layer}.{where}hook_{activation}"
