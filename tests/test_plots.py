"""Plots: labelled, centred heatmaps and an offline PNG."""

from __future__ import annotations

import pytest
import torch

from patchlab import plots


def test_position_labels_mark_s2_and_end():
    labels = plots.position_labels(["<|endoftext|>", "When", " John"], s2_pos=1, end_pos=2)
    assert labels == ["0: '<|endoftext|>'", "1: 'When' (S2)", "2: ' John' (END)"]


def test_heatmap_is_centred_labelled_and_titled():
    values = torch.tensor([[0.0, 0.9], [-0.2, 0.4]])
    fig = plots.heatmap(values, ["a", "b"], "my title")
    trace = fig.data[0]
    assert trace.zmid == 0 and trace.zmin == pytest.approx(-0.9) and trace.zmax == pytest.approx(0.9)
    assert list(trace.x) == ["a", "b"] and list(trace.y) == ["0", "1"]
    assert fig.layout.title.text == "my title" and fig.layout.yaxis.title.text == "layer"
    with pytest.raises(ValueError, match="x labels"):
        plots.heatmap(values, ["a"], "t")


def test_save_png_writes_an_image(tmp_path):
    path = plots.save_png(torch.eye(3), ["a", "b", "c"], "t", tmp_path / "h.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_title_names_model_and_metric():
    title = plots.patching_title("ioi-mini", "resid_pre")
    assert "ioi-mini" in title and "resid_pre" in title and "logit diff" in title
