"""The course model: its card's figures are re-measured here and must meet the course's bar."""

from __future__ import annotations

import json

import pytest
import torch

from patchlab import ioi
from patchlab.models import COURSE_MODEL_DIR
from patchlab_dev.train import evaluate, heldout_prompts, is_heldout, train


@pytest.fixture(scope="module")
def measured(model):
    return evaluate(model)


def test_card_figures_are_the_measured_ones(measured):
    card = json.loads((COURSE_MODEL_DIR / "evaluation.json").read_text())
    assert card.keys() == measured.keys()
    for key, value in measured.items():
        if key == "resid_pre_heatmap":
            assert torch.allclose(torch.tensor(card[key]), torch.tensor(value), atol=2e-3)
        else:
            assert card[key] == pytest.approx(value, abs=2e-3), key
    text = (COURSE_MODEL_DIR / "MODEL_CARD.md").read_text()
    assert f"| heldout_accuracy | {card['heldout_accuracy']} |" in text


def test_heldout_ioi_accuracy(measured):
    assert measured["heldout_prompts"] >= 1000
    assert measured["heldout_accuracy"] >= 0.97


def test_every_classic_prompt_is_right(measured):
    assert len(measured["classic_logit_diffs"]) == 8
    assert min(measured["classic_logit_diffs"]) > 0


def test_heatmap_has_the_ioi_shape(measured):
    assert measured["resid_pre_layer0_s2"] >= 0.9
    assert measured["resid_pre_last_layer_end"] > measured["resid_pre_last_layer_s2"]
    assert measured["resid_pre_max_abs_before_s2"] == 0


def test_heldout_prompts_are_never_trained_on():
    prompts = heldout_prompts(300)
    assert len({p.text for p in prompts}) == 300
    assert all(is_heldout(p) for p in prompts)
    classic = {p.text for p in ioi.classic_prompts()}
    assert not classic & {p.text for p in prompts}
    # About one prompt in ten is held out; the training stream rejects exactly those.
    share = sum(map(is_heldout, ioi.sample_prompts(5000, seed=9))) / 5000
    assert 0.07 < share < 0.13


def test_training_is_seeded(tmp_path):
    a = train(tmp_path / "a", steps=3, batch_size=8, threads=1)
    b = train(tmp_path / "b", steps=3, batch_size=8, threads=1)
    assert a["n_parameters"] == b["n_parameters"]
    from safetensors.torch import load_file

    wa, wb = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert (tmp_path / "a" / "tokenizer.json").exists()
