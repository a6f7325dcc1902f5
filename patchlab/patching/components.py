"""What can be patched: each component's TransformerLens hook and the slice one patch overwrites.

A component is patched cell by cell over ``[n_layers, *axes]``: ``resid_pre``, ``attn_out`` and
``mlp_out`` by (layer, position); the attention heads' outputs (``hook_z``), queries, keys, values
(``hook_q``, ``hook_k``, ``hook_v``) and attention patterns (``hook_pattern``), each either per head at
all positions (``head_out``, ``head_q``, ...: ``[n_layers, n_heads]``) or per head and position
(``head_out_by_pos``, ...: ``[n_layers, n_pos, n_heads]``; for patterns, as TransformerLens,
``[n_layers, n_heads, n_dest_pos]``). The shapes are those of TransformerLens's
``transformer_lens.patching`` functions of the same names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jaxtyping import Float, Int
from torch import Tensor

from patchlab.hooks import act_name

if TYPE_CHECKING:
    from patchlab.types import Cache, Model


@dataclass(frozen=True)
class Component:
    """One patchable component.

    ``activation`` is the hook's activation name (:func:`patchlab.hooks.act_name`: ``resid_pre``, ``z``,
    ``q``, ...); ``axes`` names the result's axes after the layer (``"pos"`` or ``"head"``) and ``dims``
    the activation dimension each indexes. A patch at index ``i`` overwrites ``activation[:, ..., i,
    ...]`` (``i`` at ``dims``, everything else) with the clean one.
    """

    name: str
    activation: str
    axes: tuple[str, ...]
    dims: tuple[int, ...]

    def hook(self, layer: int) -> str:
        """The hook name at ``layer`` (e.g. ``blocks.3.attn.hook_z``)."""
        return act_name(self.activation, layer)

    @property
    def kind(self) -> str:
        """What the hook carries: ``resid``, ``z``, ``q``, ``k``, ``v`` or ``pattern``."""
        return "resid" if self.activation in ("resid_pre", "attn_out", "mlp_out") else self.activation

    @property
    def by_pos(self) -> bool:
        """Whether each patch covers one position (else a head at every position)."""
        return "pos" in self.axes

    def selector(self, index: tuple[int, ...]) -> tuple[Any, ...]:
        """The slice of the activation that the patch at ``index`` overwrites."""
        where: list[Any] = [slice(None)] * (max(self.dims) + 1)
        for dim, i in zip(self.dims, index):
            where[dim] = i
        return tuple(where)

    def sizes(self, model: Model, n_pos: int) -> tuple[int, ...]:
        """The lengths of ``axes`` for this model and sequence length."""
        return tuple(n_pos if axis == "pos" else model.cfg.n_heads for axis in self.axes)


def _table() -> dict[str, Component]:
    table = {name: Component(name, name, ("pos",), (1,)) for name in ("resid_pre", "attn_out", "mlp_out")}
    for head_name, activation in (("out", "z"), ("q", "q"), ("k", "k"), ("v", "v")):  # [batch, pos, head, d_head]
        table[f"head_{head_name}"] = Component(f"head_{head_name}", activation, ("head",), (2,))
        table[f"head_{head_name}_by_pos"] = Component(f"head_{head_name}_by_pos", activation, ("pos", "head"), (1, 2))
    # [batch, head, dest_pos, src_pos]
    table["head_pattern"] = Component("head_pattern", "pattern", ("head",), (1,))
    table["head_pattern_by_pos"] = Component("head_pattern_by_pos", "pattern", ("head", "pos"), (1, 2))
    return table


COMPONENT_TABLE: dict[str, Component] = _table()
COMPONENTS = tuple(COMPONENT_TABLE)


def component(name: str) -> Component:
    """The component called ``name``; one clear line when there is none."""
    if name not in COMPONENT_TABLE:
        raise ValueError(f"unknown component {name!r}: choose one of {', '.join(COMPONENTS)}")
    return COMPONENT_TABLE[name]


def hook_name(name: str, layer: int) -> str:
    """The hook name of component ``name`` at ``layer`` (e.g. ``blocks.3.hook_resid_pre``)."""
    return component(name).hook(layer)


def check_batch(corrupted_tokens: Int[Tensor, "batch pos"], clean_cache: Cache, name: str) -> None:
    """The clean cache holds hook ``name`` for the same batch and positions as the corrupted tokens."""
    if name not in clean_cache:
        raise ValueError(f"the clean cache has no {name!r}: cache the clean run with run_with_cache")
    shape = clean_cache[name].shape
    batch_pos = (shape[0], shape[2]) if name.endswith("hook_pattern") else tuple(shape[:2])
    if batch_pos != tuple(corrupted_tokens.shape):
        raise ValueError(
            f"clean activations are {batch_pos} [batch, pos] but the corrupted tokens "
            f"are {tuple(corrupted_tokens.shape)}: clean and corrupted batches must match"
        )


def patch_position(
    activation: Float[Tensor, "batch pos ..."], clean_activation: Float[Tensor, "batch pos ..."], pos: int
) -> Float[Tensor, "batch pos ..."]:
    """Overwrite position ``pos`` of ``activation`` with the clean one (in place, returned)."""
    activation[:, pos] = clean_activation[:, pos]
    return activation
