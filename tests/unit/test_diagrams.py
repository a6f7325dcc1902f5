"""Diagrams and GPT-2 small's published maps: real hook names, the 26 heads, the data file, shared scales."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch

from patchlab import diagrams, published

REFERENCE = Path("/work/shared/reference/gpt2_small_ioi/exploratory_demo_ioi_hookedtransformer_49461b6b.json")


def _texts(svg: str) -> list[str]:
    root = ET.fromstring(svg)  # well-formed XML, or this raises
    return [el.text or "" for el in root.iter("{http://www.w3.org/2000/svg}text")]


def test_residual_stream_names_only_real_hook_points(model, classic):
    figure = diagrams.residual_stream(model.cfg.n_layers, model.cfg.n_heads, model.cfg.d_model)
    named = {m for t in _texts(figure.svg) for m in re.findall(r"\b(?:blocks\.L\+?1?\.)?[\w.]*hook_\w+", t)}
    for hook in ("hook_embed", "hook_pos_embed", "blocks.L.hook_resid_pre", "blocks.L.attn.hook_pattern",
                 "blocks.L.attn.hook_z", "blocks.L.hook_attn_out", "blocks.L.hook_resid_mid",
                 "blocks.L.hook_mlp_out", "blocks.L.hook_resid_post", "blocks.L.mlp.hook_post"):
        assert hook in named, f"{hook} missing from the drawing"
    with torch.no_grad():
        _, cache = model.run_with_cache(classic.clean_tokens[:1])
    for hook in named:
        real = hook.replace("blocks.L+1.", "blocks.1.").replace("blocks.L.", "blocks.0.")
        assert real in cache.keys(), f"the drawing names {hook}, which the model has no hook for"
    assert f"L = 0 … {model.cfg.n_layers - 1}" in " ".join(_texts(figure.svg))
    assert 'viewBox="0 0 420 ' in figure.svg and figure.width == 420


def test_residual_stream_shows_first_and_last_head_of_a_wide_layer():
    texts = _texts(diagrams.residual_stream(12, 12, 768).svg)
    assert {"head 0", "head 1", "head 11", "…"} <= set(texts) and "head 5" not in texts
    with pytest.raises(ValueError, match="cfg"):
        diagrams.residual_stream(0, 4, 128)


def test_ioi_circuit_draws_the_26_heads_of_wang_et_al_once_each():
    heads = [h for group in diagrams.IOI_HEAD_CLASSES.values() for h in group]
    assert len(heads) == len(set(heads)) == 26
    drawn = [h for t in _texts(diagrams.ioi_circuit().svg) for h in re.findall(r"\b\d+\.\d+\b", t)]
    assert sorted(drawn) == sorted(heads)
    texts = " ".join(_texts(diagrams.ioi_circuit().svg))
    for name in diagrams.IOI_HEAD_CLASSES:
        assert name in texts
    assert all(role in texts for role in ("S1", "S2", "IO", "END"))


def test_diagram_saves_and_shows_as_html(tmp_path):
    figure = diagrams.ioi_circuit()
    assert figure.save(tmp_path / "c.svg").read_text(encoding="utf-8") == figure.svg
    assert figure.svg in figure._repr_html_() and figure.description in figure.svg


def test_published_maps_have_gpt2_small_shapes_and_source():
    maps = published.gpt2_small_ioi()
    assert {c: m.shape for c, m in maps.maps.items()} == {
        "resid_pre": (12, 15), "attn_out": (12, 15), "mlp_out": (12, 15), "head_out": (12, 12)}
    assert "demos/Exploratory_Analysis_Demo.ipynb" in maps.source and "49461b6b" in maps.source
    assert maps.tokens[maps.s2_pos] == " John" and maps.tokens[maps.end_pos] == " to"
    resid = maps.maps["resid_pre"]
    assert np.abs(resid[:, : maps.s2_pos]).max() == 0  # the prompts are identical before S2
    np.testing.assert_allclose(resid.sum(axis=1), 1, atol=0.01)  # observed in GPT-2 small, not implied
    assert round(resid[:, maps.s2_pos + 1].max(), 4) == 0.0513  # " gave": the book quotes this maximum
    induction = maps.head_scores["induction"]
    assert induction.shape == (12, 12) and induction[5, 5] > 0.9 and induction[6, 9] > 0.9


@pytest.mark.skipif(not REFERENCE.exists(), reason="the shared reference outputs are not on this machine")
def test_published_maps_are_the_demo_outputs_rounded():
    raw = json.loads(REFERENCE.read_text(encoding="utf-8"))
    by_title = {entry["title"]: np.asarray(entry["z"]) for entry in raw["heatmaps"].values()}
    data = json.loads(published.DATA.read_text(encoding="utf-8"))
    for component, entry in data["maps"].items():
        np.testing.assert_allclose(entry["values"], by_title[entry["title"]], atol=5e-5, err_msg=component)
    for name, entry in data["head_scores"].items():
        np.testing.assert_allclose(entry["values"], by_title[entry["title"]], atol=5e-5, err_msg=name)
    assert data["commit"] == raw["commit"]


def test_side_by_side_shares_one_colour_scale(classic):
    maps = published.gpt2_small_ioi()
    ours = torch.zeros(4, 15)
    ours[0, 10] = 1.7
    labels = [f"{i}" for i in range(15)]
    fig = published.side_by_side(ours, "ioi-mini", maps, "resid_pre", labels)
    a, b = fig.data
    assert (a.zmin, a.zmax) == (b.zmin, b.zmax) == pytest.approx((-1.7, 1.7))
    assert [a.showscale, b.showscale] == [True, False]
    assert list(b.x) == labels and np.asarray(a.z).shape == (12, 15)
    heads = published.side_by_side(torch.zeros(4, 4), "ioi-mini", maps, "head_out", labels)
    assert list(heads.data[1].x) == ["H0", "H1", "H2", "H3"] and len(heads.data[0].x) == 12
    with pytest.raises(ValueError, match="same prompts"):
        published.side_by_side(torch.zeros(4, 9), "ioi-mini", maps, "resid_pre", labels[:9])
    with pytest.raises(ValueError, match="unknown component"):
        published.side_by_side(ours, "ioi-mini", maps, "q", labels)
