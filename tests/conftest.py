"""Shared fixtures: the course model and the classic IOI batch, loaded once per test session."""

from __future__ import annotations

import os

import pytest

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
