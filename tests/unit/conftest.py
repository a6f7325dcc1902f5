"""Fixtures of the unit tier: the course model and a tiny random GPT-2, set up for the patching tests;
the grader's references and the learner kernel's models for the check tests (on the module's ``MODELS``)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from patching_setups import Setup  # tests/unit/patching_setups.py

from autograder import checks
from patchlab.models import _finish, load_course_tokenizer


@pytest.fixture(scope="module")
def mini(model: Any, classic: Any, classic_run: Any) -> Setup:
    """The course model on the 8 classic prompts (the session fixtures of conftest.py)."""
    _, cache, _, metric = classic_run
    return Setup(model, classic.corrupted_tokens, cache, metric)


@pytest.fixture(scope="module")
def tiny() -> Any:
    """A 2-layer GPT-2 with random weights (large enough that logits differ clearly between inputs)."""
    from transformer_lens.model_bridge.sources._bridge_builder import build_bridge_from_module
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = load_course_tokenizer()
    config = GPT2Config(n_layer=2, n_embd=64, n_head=4, n_positions=32, vocab_size=len(tokenizer),
                        initializer_range=0.2, attn_implementation="eager")
    torch.manual_seed(0)
    hf_model = GPT2LMHeadModel(config).eval()
    bridge = build_bridge_from_module(hf_model, "GPT2LMHeadModel", hf_config=config, tokenizer=tokenizer,
                                      model_name="tiny-gpt2")
    return _finish(bridge, "tiny-gpt2")


@pytest.fixture(scope="module")
def one_thread() -> Any:
    """A tiny model on a shared CPU runs several times faster on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def refs(request: pytest.FixtureRequest) -> checks.References:
    """The grader's trusted references on the test module's ``MODELS``."""
    return checks.References(request.module.MODELS)


@pytest.fixture(scope="module")
def inside(request: pytest.FixtureRequest) -> checks.Models:
    """The learner kernel's models on the test module's ``MODELS``: loaded apart from the references."""
    return checks.Models(request.module.MODELS)
