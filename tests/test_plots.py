"""Plots: labelled, centred heatmaps, figures that fit a phone, and an offline PNG."""

from __future__ import annotations

import plotly.graph_objects as go
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
    assert trace.colorbar.title.text == "normalised<br>logit diff"
    with pytest.raises(ValueError, match="x labels"):
        plots.heatmap(values, ["a"], "t")


def test_heatmap_labels_every_row_and_column():
    """Explicit ticks: plotly's automatic tick thinning would drop every other token on a phone."""
    labels = [f"{i}: ' tok{i}'" for i in range(15)]
    fig = plots.heatmap(torch.randn(12, 15), labels, "t")
    assert fig.layout.xaxis.tickmode == "array" and list(fig.layout.xaxis.tickvals) == labels
    assert list(fig.layout.xaxis.ticktext) == labels
    assert fig.layout.yaxis.tickmode == "array" and list(fig.layout.yaxis.ticktext) == [str(i) for i in range(12)]


def test_heatmap_colour_bar_and_shared_scale():
    small, large = torch.tensor([[0.1, -0.2]]), torch.tensor([[3.0, -1.0]])
    scale = plots.shared_limit(small, large)
    assert scale == pytest.approx(3.0)
    fig = plots.heatmap(small, ["a", "b"], "t", colorbar_title="damage", zmax=scale)
    trace = fig.data[0]
    assert (trace.zmin, trace.zmax) == (pytest.approx(-3.0), pytest.approx(3.0))
    assert trace.colorbar.title.text == "damage"


def test_wrap_keeps_words_and_fits_the_width():
    title = "gpt2-small: patching resid_pre (clean → corrupted), normalised logit difference"
    lines = plots.wrap(title, width=30).split("<br>")
    assert len(lines) == 3 and all(len(line) <= 30 for line in lines)
    assert " ".join(lines) == title
    assert plots.wrap("short") == "short"


def test_every_figure_gets_the_responsive_template():
    """`import patchlab` makes the course template the default: titles wrap into the margin, legends
    lie in rows below the plot, axis labels push the margins instead of being cut."""
    layout = go.Figure().layout.template.layout
    assert layout.autosize is True and layout.title.automargin is True
    assert layout.legend.orientation == "h" and layout.legend.yref == "container"
    assert layout.xaxis.automargin is True and layout.yaxis.automargin is True


def test_stacked_lines_stack_panels_and_match_legend_colours():
    series = {"a": (range(3), [torch.tensor([0.0, 1, 2]), [2, 1, 0]]), "b": ([0, 1, 2], [[1, 1, 1], [0, 0, 0]])}
    fig = plots.stacked_lines(series, ["at S2", "at END"], "t", "layer", "value")
    assert len(fig.data) == 4
    for name in series:
        traces = [t for t in fig.data if t.name == name]
        assert len({t.line.color for t in traces}) == 1, f"{name} changes colour between panels"
        assert sum(bool(t.showlegend) for t in traces) == 1
    assert len({t.line.color for t in fig.data}) == 2
    # one column, panels one above the other
    assert tuple(fig.layout.xaxis.domain) == tuple(fig.layout.xaxis2.domain)
    assert fig.layout.yaxis.domain[0] >= fig.layout.yaxis2.domain[1]
    assert list(fig.data[0].y) == [0.0, 1.0, 2.0]
    assert fig.layout.xaxis.dtick == 1  # integer x (layers): one tick per layer
    depth = plots.stacked_lines({"a": ([0.25, 0.75], [[1, 0], [0, 1]])}, ["at S2", "at END"], "t", "x", "y")
    assert depth.layout.xaxis.dtick is None
    with pytest.raises(ValueError, match="2 panels"):
        plots.stacked_lines({"a": ([0], [[1]])}, ["at S2", "at END"], "t", "x", "y")


def test_save_png_writes_an_image(tmp_path):
    path = plots.save_png(torch.eye(3), ["a", "b", "c"], "t", tmp_path / "h.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_title_names_model_component_and_direction():
    title = plots.patching_title("ioi-mini", "resid_pre")
    assert "ioi-mini" in title and "resid_pre" in title and "clean → corrupted" in title
    assert "corrupted → clean" in plots.patching_title("ioi-mini", "resid_pre", "corrupted → clean")
