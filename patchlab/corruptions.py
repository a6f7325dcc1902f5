"""Other corruptions than the S2 swap, and patching several cells at once.

- **Gaussian noise on the embeddings**, as in causal tracing (Meng et al. 2022): the clean prompt, with
  noise of standard deviation ``factor`` (3 in causal tracing) times the standard deviation of the
  token embeddings added to the token embeddings at chosen positions. Fixed by a seed, the same for
  every run of a sweep.
- **The name swap**: every mention of IO and S exchanged. The corrupted prompt repeats the name at the
  same positions as the clean one, with other names there; the S2 swap instead changes *which*
  position is repeated and leaves the names where they were.
- :func:`patch_sets` patches a set of cells together (a window of layers, say) in a run that may get
  extra hooks (the noise), one full forward pass per set.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from patchlab.hooks import act_name
from patchlab.ioi import IOIPrompt
from patchlab.metrics import Metric

if TYPE_CHECKING:
    from patchlab.types import Cache, HookPoint, Model

Hook = tuple[str, Callable[[Tensor, Any], Tensor]]


def embedding_noise(
    model: Model,
    tokens: Int[Tensor, "batch pos"],
    positions: Sequence[int],
    factor: float = 3.0,
    seed: int = 0,
) -> Float[Tensor, "batch pos d_model"]:
    """Gaussian noise for the token embeddings of ``tokens``: standard deviation ``factor`` times that of
    the entries of ``W_E`` at ``positions``, zero elsewhere."""
    n_pos = tokens.shape[1]
    if not positions or any(not 0 <= p < n_pos for p in positions):
        raise ValueError(f"positions must be a non-empty list of positions below {n_pos}, got {list(positions)}")
    w_e = model.tl_parameters()["embed.W_E"]
    generator = torch.Generator().manual_seed(seed)
    noise = torch.zeros(*tokens.shape, w_e.shape[1])
    noise[:, list(positions)] = torch.randn(tokens.shape[0], len(positions), w_e.shape[1], generator=generator)
    return (noise * factor * w_e.std().item()).to(w_e.device, w_e.dtype)


def add_to_embeddings(noise: Float[Tensor, "batch pos d_model"]) -> Hook:
    """The hook that adds ``noise`` to the token embeddings (``hook_embed``)."""

    def hook(embedding: Tensor, hook: HookPoint) -> Tensor:
        return embedding + noise

    return (act_name("embed"), hook)


def swap_names(prompts: Sequence[IOIPrompt]) -> list[str]:
    """Each prompt with every mention of its IO and its S exchanged (so the answer flips)."""
    swapped = []
    for p in prompts:
        other = {p.io: p.s, p.s: p.io}
        pattern = "|".join(re.escape(name) + r"\b" for name in other)
        swapped.append(re.sub(pattern, lambda m: other[m.group(0)], p.text))
    return swapped


def patch_sets(
    model: Model,
    tokens: Int[Tensor, "batch pos"],
    clean_cache: Cache,
    metric: Metric,
    patches: Sequence[Sequence[tuple[str, int]]],
    extra_hooks: Sequence[Hook] = (),
) -> Float[Tensor, " n"]:
    """``metric`` of the run of ``tokens`` (with ``extra_hooks``) in which every ``(hook name, position)``
    of a set is overwritten by the clean cache's activation, one run per set."""
    values = torch.zeros(len(patches))
    for i, cells in enumerate(patches):
        positions: dict[str, list[int]] = {}
        for name, pos in cells:
            positions.setdefault(name, []).append(pos)

        def patch(name: str, where: list[int]) -> Callable[[Tensor, Any], Tensor]:
            def hook(activation: Tensor, hook: HookPoint) -> Tensor:  # ``name``: hook.name may be an alias
                activation[:, where] = clean_cache[name][:, where]
                return activation

            return hook

        hooks = [(name, patch(name, where)) for name, where in positions.items()]
        with torch.no_grad():
            logits = model.run_with_hooks(tokens, fwd_hooks=[*extra_hooks, *hooks])
        values[i] = metric(logits).item()
    return values
