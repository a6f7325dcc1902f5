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


def test_every_trace_type_the_book_draws_gets_a_formatted_hover():
    """A trace without its own hovertemplate gets the template's (rounded values, its name), never
    plotly's raw "trace 0 / x: / y:"; the template keeps plotly's own trace defaults."""
    template = go.Figure().layout.template
    for kind in ("scatter", "bar", "heatmap"):
        hover = getattr(template.data, kind)[0].hovertemplate
        assert hover and ":.3f}" in hover, kind
    assert template.data.heatmap[0].colorscale is not None  # plotly's defaults are merged, not replaced


def test_tick_label_depth_grows_with_the_longest_label_and_the_angle():
    short, long = ["0: 'a'"], ["0: 'a'", "14: ' to' (END)"]
    assert plots.tick_label_depth(long) > plots.tick_label_depth(short)
    assert plots.tick_label_depth(long, 90) > plots.tick_label_depth(long, 45) > plots.tick_label_depth(long, 0)
    # vertical labels reach down their full length (0.62 font sizes a character), plus the gap
    assert plots.tick_label_depth(long, 90, size=10) == pytest.approx(15 * 6.2 + 6)
    assert plots.tick_label_depth([], 90) == pytest.approx(6)


def _pixels(fig: go.Figure, axis: str) -> tuple[float, float]:
    """An axis's domain in pixels from the figure's top (the figure's own height and margins)."""
    layout = fig.layout
    plot = layout.height - layout.margin.t - layout.margin.b
    low, high = layout[axis].domain
    return layout.margin.t + (1 - high) * plot, layout.margin.t + (1 - low) * plot


def test_stacked_heatmaps_leave_room_for_labels_and_titles():
    """Computed in pixels: the space between panels holds the upper panel's vertical labels and the
    lower panel's title; the top margin holds the figure's title above the first panel's title."""
    labels = [f"{i}: ' token{i}'" + (" (END)" if i == 14 else "") for i in range(15)]
    panels = [("published", torch.randn(12, 15), labels), ("computed", torch.randn(4, 15), labels)]
    fig = plots.stacked_heatmaps(panels, "a title long enough to wrap onto a second line on a phone", zmax=2.0)
    upper, lower = _pixels(fig, "yaxis"), _pixels(fig, "yaxis2")
    gap = lower[0] - upper[1]
    assert gap >= plots.tick_label_depth(labels, 90) + plots.SUBPLOT_TITLE_SIZE
    assert upper[1] - upper[0] == pytest.approx(12 / 4 * (lower[1] - lower[0]), rel=0.01)  # rows alike
    lines = fig.layout.title.text.count("<br>") + 1
    assert lines == 2 and fig.layout.title.pad.b >= 12 + plots.SUBPLOT_TITLE_SIZE  # above the panel's title
    assert fig.layout.margin.t >= 10 + 18 * lines + fig.layout.title.pad.b
    assert fig.layout.margin.b >= plots.tick_label_depth(labels, 90)
    assert [a.text for a in fig.layout.annotations] == ["published", "computed"]
    for trace in fig.data:
        assert (trace.zmin, trace.zmax, trace.zmid) == (-2.0, 2.0, 0) and list(trace.x) == labels
        assert "%{z:.3f}" in trace.hovertemplate
    assert [t.showscale for t in fig.data] == [True, False]
    assert fig.layout.xaxis.tickangle == fig.layout.xaxis2.tickangle == -90
    assert list(fig.layout.xaxis.ticktext) == labels and fig.layout.xaxis2.title.text == "position"
    with pytest.raises(ValueError, match="computed"):
        plots.stacked_heatmaps([("computed", torch.zeros(2, 3), ["a"])], "t")


def test_stacked_lines_put_the_title_above_the_first_panel_title():
    fig = plots.stacked_lines({"a": ([0, 1], [[0, 1], [1, 0]])}, ["at S2", "at END"], "t", "layer", "value")
    assert fig.layout.title.pad.b >= 12 + plots.SUBPLOT_TITLE_SIZE
    assert fig.layout.margin.t >= 18 + fig.layout.title.pad.b
    assert all("%{y:.3f}" in t.hovertemplate for t in fig.data)
