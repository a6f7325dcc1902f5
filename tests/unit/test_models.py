"""Model loading: the bridge in compatibility mode, the auto choice, clear errors, the device rule."""

from __future__ import annotations

import pytest
import torch
from transformer_lens.model_bridge import TransformerBridge

from patchlab import models
from patchlab.models import ModelUnavailableError, load_model, model_label


def test_ioi_mini_is_a_bridge_in_eval_mode_without_gradients(model):
    assert isinstance(model, TransformerBridge)
    assert model_label(model) == "ioi-mini"
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())
    assert model.cfg.n_layers == 4 and model.cfg.d_model == 128
    # Compatibility mode folds the final LayerNorm's weights into the unembedding, like HookedTransformer.
    assert getattr(model, "compatibility_mode", False)


def test_course_model_files_are_small():
    total = sum(f.stat().st_size for f in models.COURSE_MODEL_DIR.iterdir())
    assert total < 10 * 2**20
    assert {"model.safetensors", "tokenizer.json", "config.json", "MODEL_CARD.md"} <= {
        f.name for f in models.COURSE_MODEL_DIR.iterdir()
    }


def test_gpt2_small_unavailable_offline_gives_a_clear_error(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    monkeypatch.setattr(TransformerBridge, "boot_transformers", staticmethod(refuse))
    monkeypatch.setattr(models, "_hub_reachable", lambda: True)  # the hub "answers" but loading fails
    with pytest.raises(ModelUnavailableError) as err:
        load_model("gpt2-small", device="cpu")
    assert "ioi-mini" in str(err.value) and "connect" in str(err.value)


def test_offline_without_cache_fails_at_once(monkeypatch):
    def must_not_run(*args, **kwargs):
        raise AssertionError("no download may be attempted when the hub is unreachable")

    monkeypatch.setattr(models, "_hub_reachable", lambda: False)
    monkeypatch.setattr(models, "_hub_cached", lambda hf_id: False)
    monkeypatch.setattr(TransformerBridge, "boot_transformers", staticmethod(must_not_run))
    with pytest.raises(ModelUnavailableError, match="not in the Hugging Face cache"):
        load_model("gpt2-medium", device="cpu")


def test_auto_falls_back_to_the_course_model_and_says_why(monkeypatch, capsys):
    monkeypatch.delenv(models.ENV_VAR, raising=False)
    def offline(name, device):
        raise ModelUnavailableError("offline")

    monkeypatch.setattr(models, "_load_hub", offline)
    model = load_model("auto", device="cpu")
    assert model_label(model) == "ioi-mini"
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "ioi-mini" in out[0] and "not available" in out[0]


def test_auto_obeys_the_environment_variable(monkeypatch, capsys):
    def must_not_run(name, device):
        raise AssertionError("GPT-2 small must not be tried when PATCHLAB_MODEL is set")

    monkeypatch.setattr(models, "_load_hub", must_not_run)
    monkeypatch.setenv(models.ENV_VAR, "ioi-mini")
    assert model_label(load_model("auto", device="cpu")) == "ioi-mini"
    assert "PATCHLAB_MODEL" in capsys.readouterr().out
    monkeypatch.setenv(models.ENV_VAR, "gpt3")
    with pytest.raises(ValueError, match="PATCHLAB_MODEL"):
        load_model("auto")


def test_unknown_model_name():
    with pytest.raises(ValueError, match="choose one of"):
        load_model("gpt2-xxl")


def test_device_is_cuda_or_cpu_never_mps(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True, raising=False)
    assert models.pick_device() == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert models.pick_device() == torch.device("cuda")


@pytest.mark.slow  # builds two GPT-2-small-sized models
def test_gpt2_small_random_has_gpt2_small_shape_and_is_seeded():
    a = load_model("gpt2-small-random", device="cpu")
    assert (a.cfg.n_layers, a.cfg.d_model, a.cfg.n_heads, a.cfg.d_vocab) == (12, 768, 12, 50257)
    tokens = a.to_tokens("When John and Mary went to the shops, John gave the bag to")
    first = a(tokens)[0, -1, :5].clone()
    del a
    b = load_model("gpt2-small-random", device="cpu")
    assert torch.allclose(first, b(tokens)[0, -1, :5])
