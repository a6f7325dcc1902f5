"""The independent computation behind the explorable heatmaps' tests (tests/unit/test_explore.py and
tests/e2e/test_explore_browser.py): a patched run written by hand, with one hook."""

from __future__ import annotations

from typing import Any

import torch


def hooked_final(model: Any, data: Any, hook_name: str, where: tuple[Any, ...]) -> torch.Tensor:
    """Final logits of the corrupted run with the clean activation written in at ``where``."""
    with torch.no_grad():
        _, clean_cache = model.run_with_cache(data.clean_tokens)

        def patch(activation: torch.Tensor, hook: Any) -> torch.Tensor:
            activation[where] = clean_cache[hook_name][where]
            return activation

        return model.run_with_hooks(data.corrupted_tokens, fwd_hooks=[(hook_name, patch)])[:, -1]
