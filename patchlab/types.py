"""The types the library's functions take: the model, the cache of a run, a hook point.

Every model ``patchlab.load_model`` returns is TransformerLens's ``TransformerBridge`` (in
compatibility mode); ``run_with_cache`` gives an ``ActivationCache`` (a plain ``dict`` of hook name
to tensor works wherever a cache is only read by name). Imported only by the type checker, so
importing ``patchlab`` does not import TransformerLens.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from typing import TypeAlias

    from torch import Tensor
    from transformer_lens import ActivationCache
    from transformer_lens.hook_points import HookPoint as HookPoint  # re-exported
    from transformer_lens.model_bridge import TransformerBridge

    Model: TypeAlias = TransformerBridge
    Cache: TypeAlias = ActivationCache | dict[str, Tensor]
    # A forward hook for run_with_hooks: (hook name or a filter on names, function of activation and hook)
    FwdHook: TypeAlias = tuple[str | Callable[[str], bool], Callable[..., Any]]
