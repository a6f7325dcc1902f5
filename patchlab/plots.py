"""Plots: patching heatmaps (interactive plotly, static PNG via matplotlib) with token labels.

Importing this module (``import patchlab`` does) registers the plotly template ``patchlab`` and makes
``"plotly+patchlab"`` the default, so every plotly figure made afterwards reads on a 390 px phone as
well as on a desktop: a small left-aligned title that may wrap (``wrap``), legends in rows below the
plot, axis labels that push the margins instead of being cut, a figure that fills its column, and a
hover with rounded values on every trace that sets none of its own.
"""

from __future__ import annotations

import math
import textwrap
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
from jaxtyping import Float
from torch import Tensor

if TYPE_CHECKING:
    from patchlab.explore import ExplorableFigure

TITLE_WIDTH = 42
"""Characters per title line that fit a 390 px screen at the template's title size (`wrap`)."""

COLORS = ["#2166ac", "#b2182b", "#1b7837", "#762a83", "#e08214", "#35978f", "#8c510a", "#525252"]
"""Trace colours in order, also for figures whose panels repeat a trace (`series_colors`)."""

TEMPLATE = go.layout.Template(
    layout={
        "autosize": True,
        "font": {"size": 12},
        "colorway": COLORS,
        # the title sits on the plot area and, as it wraps onto more lines, pushes the top margin up
        "title": {
            "font": {"size": 14},
            "x": 0,
            "xanchor": "left",
            "xref": "container",
            "y": 1,
            "yanchor": "bottom",
            "yref": "paper",
            "automargin": True,
            "pad": {"t": 10, "b": 12, "l": 8},
        },
        "margin": {"l": 10, "r": 10, "t": 40, "b": 10},
        "legend": {
            "orientation": "h",
            "x": 0,
            "xanchor": "left",
            "xref": "container",
            "y": 0,
            "yanchor": "bottom",
            "yref": "container",
        },
        "xaxis": {"automargin": True},
        "yaxis": {"automargin": True},
    },
    # a hover with rounded values and the trace's name, for traces that set none of their own
    # (plotly's default shows "trace 0" and every digit)
    data={
        "scatter": [{"hovertemplate": "%{x}<br>%{y:.3f}<extra>%{fullData.name}</extra>"}],
        "bar": [{"hovertemplate": "%{x}<br>%{y:.3f}<extra>%{fullData.name}</extra>"}],
        "heatmap": [{"hovertemplate": "%{y}, %{x}<br>value %{z:.3f}<extra></extra>"}],
    },
)
pio.templates["patchlab"] = TEMPLATE
pio.templates.default = "plotly+patchlab"


def wrap(text: str, width: int = TITLE_WIDTH) -> str:
    """Break a title into lines of at most ``width`` characters (plotly's ``<br>``) at spaces."""
    return "<br>".join(textwrap.wrap(text, width, break_long_words=False))


def series_colors(names: Sequence[str]) -> dict[str, str]:
    """One colour per series name, for figures that draw the same series in several panels."""
    return {name: COLORS[i % len(COLORS)] for i, name in enumerate(names)}


def position_labels(str_tokens: Sequence[str], s2_pos: int | None = None, end_pos: int | None = None) -> list[str]:
    """'index: token' labels (tokens quoted to show their spaces), with S2 and END marked."""
    labels = []
    for i, tok in enumerate(str_tokens):
        mark = " (S2)" if i == s2_pos else " (END)" if i == end_pos else ""
        labels.append(f"{i}: {tok!r}{mark}"[:40])
    return labels


def _as_array(values: Float[Tensor, "rows cols"] | np.ndarray) -> np.ndarray:
    arr = values.detach().cpu().numpy() if hasattr(values, "detach") else np.asarray(values)
    if arr.ndim != 2:
        raise ValueError(f"a heatmap needs a 2-d array [rows, cols], got shape {arr.shape}")
    return arr


def _limit(arr: np.ndarray) -> float:
    return float(max(np.abs(arr).max(), 1e-6))


def shared_limit(*values: Float[Tensor, "rows cols"] | np.ndarray) -> float:
    """The largest |value| over several maps: pass it as ``zmax`` so that maps compared side by
    side share one colour scale."""
    return max(_limit(_as_array(v)) for v in values)


def heatmap(
    values: Float[Tensor, "rows cols"] | np.ndarray,
    x_labels: Sequence[str],
    title: str,
    y_title: str = "layer",
    x_title: str = "position",
    colorbar_title: str = "normalised<br>logit diff",
    zmax: float | None = None,
) -> go.Figure:
    """Interactive heatmap, rows (layers) on y from the top, colour scale centred at 0.

    Every row and column is labelled (labels turn vertical when they do not fit side by side);
    ``colorbar_title`` says what the colours show, ``zmax`` fixes the scale to ±zmax (default: the
    map's own largest |value|; see `shared_limit`) and the title is wrapped to fit a phone.
    """
    arr = _as_array(values)
    if len(x_labels) != arr.shape[1]:
        raise ValueError(f"{len(x_labels)} x labels for {arr.shape[1]} columns")
    lim = _limit(arr) if zmax is None else float(zmax)
    columns, rows = list(x_labels), [str(i) for i in range(arr.shape[0])]
    fig = go.Figure(
        go.Heatmap(
            z=arr,
            x=columns,
            y=rows,
            colorscale="RdBu",
            zmid=0,
            zmin=-lim,
            zmax=lim,
            colorbar={"title": {"text": colorbar_title}, "thickness": 12},
            hovertemplate=f"{y_title} %{{y}}<br>{x_title} %{{x}}<br>value %{{z:.3f}}<extra></extra>",
        )
    )
    fig.update_layout(
        title=wrap(title),
        xaxis_title=x_title,
        yaxis_title=y_title,
        # every position and layer gets its label: explicit ticks, never plotly's automatic thinning
        xaxis={
            "type": "category",
            "tickmode": "array",
            "tickvals": columns,
            "ticktext": columns,
            "tickfont": {"size": 11},
        },
        yaxis={"type": "category", "tickmode": "array", "tickvals": rows, "ticktext": rows, "autorange": "reversed"},
        height=max(380, 28 * arr.shape[0] + 260),  # no fixed width: the figure fills its column
    )
    return fig


TICK_SIZE = 11
"""Font size (px) of a heatmap's tick labels."""

SUBPLOT_TITLE_SIZE = 13
"""Font size (px) of a stacked figure's panel titles."""

ROW_HEIGHT = 26
"""Height (px) of one row of a stacked heatmap."""


def tick_label_depth(labels: Sequence[str], angle: float = 45, size: int = TICK_SIZE) -> float:
    """How far (px) tick labels drawn ``angle`` degrees from horizontal reach below their axis: an
    upper bound, counting 0.62 font sizes per character (plotly's font is narrower)."""
    width = max((len(label) for label in labels), default=0) * 0.62 * size
    line = 1.3 * size
    turn = math.radians(abs(angle))
    return width * math.sin(turn) + line * math.cos(turn) + 6  # + the gap between axis and labels


def _title_over_panels(title: str) -> tuple[dict, float]:
    """A figure title wrapped to fit a phone, lifted above the first panel's title (plotly puts a
    panel's title just above its panel, where the template's title would sit too), and the top
    margin (px) that holds both."""
    text = wrap(title)
    below = 12 + 1.4 * SUBPLOT_TITLE_SIZE + 6  # the template's gap, then the panel's title
    top = 10 + 18 * (text.count("<br>") + 1) + below
    return {"text": text, "pad": {"t": 10, "b": round(below), "l": 8}}, top


def stacked_heatmaps(
    panels: Sequence[tuple[str, Float[Tensor, "rows cols"] | np.ndarray, Sequence[str]]],
    title: str,
    zmax: float | None = None,
    y_title: str = "layer",
    x_title: str = "position",
    colorbar_title: str = "normalised<br>logit diff",
) -> go.Figure:
    """Heatmaps one above the other on one colour scale centred at 0 (±``zmax``, by default the
    largest |value| of all): ``panels = [(panel title, values [rows, cols], x labels), ...]``.

    Every panel labels every row and column (x labels stand vertical). The layout is computed in pixels
    from the labels: the space between two panels holds the upper panel's labels and the lower
    panel's title, and the figure's title (wrapped to fit a phone) sits above the first panel's title.
    """
    from plotly.subplots import make_subplots

    arrays = [_as_array(values) for _, values, _ in panels]
    for (name, _, labels), arr in zip(panels, arrays):
        if len(labels) != arr.shape[1]:
            raise ValueError(f"panel {name!r}: {len(labels)} x labels for {arr.shape[1]} columns")
    lim = float(zmax) if zmax is not None else max(_limit(arr) for arr in arrays)
    panel_title = 1.4 * SUBPLOT_TITLE_SIZE + 6
    # labels stand vertical: at 45° neighbours' text boxes overlap on a phone
    gap = max(tick_label_depth(labels, 90) for _, _, labels in panels[:-1]) + panel_title + 10 if len(panels) > 1 else 0
    heights = [ROW_HEIGHT * arr.shape[0] for arr in arrays]
    plot = sum(heights) + gap * (len(panels) - 1)
    title_layout, top = _title_over_panels(title)
    bottom = tick_label_depth(panels[-1][2], 90) + 1.4 * 12 + 16  # the labels, then the axis title
    fig = make_subplots(
        rows=len(panels),
        cols=1,
        subplot_titles=[name for name, _, _ in panels],
        row_heights=heights,
        vertical_spacing=gap / plot,
    )
    fig.update_annotations(font={"size": SUBPLOT_TITLE_SIZE})
    for row, ((name, _, labels), arr) in enumerate(zip(panels, arrays), start=1):
        x, y = list(labels), [str(i) for i in range(arr.shape[0])]
        fig.add_trace(
            go.Heatmap(
                z=arr,
                x=x,
                y=y,
                colorscale="RdBu",
                zmid=0,
                zmin=-lim,
                zmax=lim,
                showscale=row == 1,
                colorbar={"title": {"text": colorbar_title}, "thickness": 12, "len": 1, "y": 0.5, "yanchor": "middle"},
                hovertemplate=f"{name}<br>{y_title} %{{y}}<br>{x_title} %{{x}}<br>value %{{z:.3f}}<extra></extra>",
            ),
            row=row,
            col=1,
        )
        fig.update_yaxes(
            title_text=y_title,
            type="category",
            tickmode="array",
            tickvals=y,
            ticktext=y,
            autorange="reversed",
            row=row,
            col=1,
        )
        # every column labelled in every panel (a shared axis would leave the upper ones bare)
        fig.update_xaxes(
            type="category",
            tickangle=-90,
            tickmode="array",
            tickvals=x,
            ticktext=x,
            tickfont={"size": TICK_SIZE},
            row=row,
            col=1,
        )
    fig.update_xaxes(title_text=x_title, row=len(panels), col=1)
    fig.update_layout(
        title=title_layout,
        margin={"t": round(top), "b": round(bottom)},
        height=round(top + plot + bottom),
    )
    return fig


def save_png(
    values: Float[Tensor, "rows cols"] | np.ndarray,
    x_labels: Sequence[str],
    title: str,
    path: str | Path,
    y_title: str = "layer",
    x_title: str = "position",
) -> Path:
    """The same heatmap as a static PNG, drawn with matplotlib (works offline, no browser)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arr = _as_array(values)
    lim = _limit(arr)
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * arr.shape[1] + 2), max(3.5, 0.35 * arr.shape[0] + 2)))
    im = ax.imshow(arr, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_xticks(range(arr.shape[1]), list(x_labels), rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(arr.shape[0]))
    ax.set_xlabel(x_title)
    ax.set_ylabel(y_title)
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, label="normalised logit diff")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def patching_title(model_name: str, component: str, direction: str = "clean → corrupted") -> str:
    """A heatmap title naming the model, the patched component and the direction of the patch (the
    metric is named by the colour bar)."""
    return f"{model_name}: patching {component} ({direction})"


def _values(values: Sequence[float] | Float[Tensor, " n"] | np.ndarray) -> list[float]:
    arr = values.detach().cpu().numpy() if hasattr(values, "detach") else np.asarray(values)
    return arr.astype(float).tolist()


def stacked_lines(
    series: dict[str, tuple[Sequence[float], Sequence[Sequence[float] | Float[Tensor, " n"]]]],
    panel_titles: Sequence[str],
    title: str,
    x_title: str,
    y_title: str,
) -> go.Figure:
    """Line charts of the same series in panels stacked one above the other (so they stay readable on
    a phone), each series drawn in one colour in every panel and listed once in the legend.

    ``series[name] = (x, [y of panel 0, y of panel 1, ...])``.
    """
    from plotly.subplots import make_subplots

    fig = make_subplots(
        rows=len(panel_titles),
        cols=1,
        shared_xaxes=True,
        subplot_titles=list(panel_titles),
        vertical_spacing=0.12,
    )
    colors = series_colors(list(series))
    for name, (x, ys) in series.items():
        if len(ys) != len(panel_titles):
            raise ValueError(f"series {name!r} gives {len(ys)} lists of values for {len(panel_titles)} panels")
        for row, y in enumerate(ys, start=1):
            fig.add_scatter(
                x=_values(x),
                y=_values(y),
                name=name,
                legendgroup=name,
                showlegend=row == 1,
                line={"color": colors[name]},
                row=row,
                col=1,
                hovertemplate=f"{name}, {panel_titles[row - 1]}<br>{x_title} %{{x}}<br>{y_title} %{{y:.3f}}<extra></extra>",
            )
    fig.update_xaxes(title_text=x_title, row=len(panel_titles), col=1)
    if all(float(v).is_integer() for x, _ in series.values() for v in _values(x)):
        fig.update_xaxes(dtick=1)  # layers: one tick each, no fractional layer numbers
    fig.update_yaxes(title_text=y_title)
    fig.update_annotations(font={"size": SUBPLOT_TITLE_SIZE})
    title_layout, top = _title_over_panels(title)
    fig.update_layout(
        title=title_layout,
        margin={"t": round(top)},
        height=260 * len(panel_titles) + 40 * len(series) + 80 + round(top),
    )
    return fig


def _drawn_as(fig: go.Figure, values: Any) -> int:
    """The index of ``fig``'s one heatmap trace that draws ``values``."""
    arr = _as_array(values)
    found = [
        i
        for i, trace in enumerate(fig.data)
        if trace.type == "heatmap" and np.shape(trace.z) == arr.shape and np.allclose(np.asarray(trace.z, float), arr)
    ]
    if len(found) != 1:
        raise ValueError(
            f"the figure draws these values in {len(found)} heatmaps: pass a figure that draws them in one"
        )
    return found[0]


def explorable_heatmap(
    model: Any,
    data: Any,
    values: Any,
    component: str,
    title: str,
    x_labels: Sequence[str] | None = None,
    zmax: float | None = None,
    cells: Sequence[tuple[int, int]] | None = None,
    max_cells: int | None = None,
    top_k: int = 5,
    receivers: Sequence[tuple[int, int]] | None = None,
    receiver_input: str = "q",
    figure: go.Figure | None = None,
) -> ExplorableFigure:
    """A patching map whose cells open their patched run: `heatmap` of ``values`` (a tensor or a
    ``PatchingResult``) and, beside it, the selected cell's run (click, tap or arrow keys).

    ``model`` and ``data`` (an ``IOIData``) are the runs the map came from; ``component`` is what
    was patched (``resid_pre``, ``attn_out``, ``mlp_out``, ``head_out``, ... or ``"path"`` with
    ``receivers`` and ``receiver_input``, as in path patching). The patched runs are run again, batched
    over the prompts: every cell of a small map, else ``max_cells`` cells (the last column and the
    largest values; see `patchlab.explore.choose_cells`) or the ``cells`` given. ``show()`` draws it
    in a notebook; ``.figure`` is the plotly figure.

    ``figure``, when given, is drawn instead of `heatmap`: a figure of several heatmaps that draws
    ``values`` as one of them (as `patchlab.published.side_by_side` draws it under GPT-2 small's
    published map). That heatmap's cells open their runs; a click on another says it has none.
    Where figures are read without scripts (`patchlab.explore.STATIC_FIGURES`, set by the grader) the
    map is drawn plain and no run is re-run.
    """
    from patchlab.explore import BUDGET_BYTES, HEAD_COMPONENTS, MAX_CELLS, ExplorableFigure, cell_runs, static_figures
    from patchlab.patching import PatchingResult

    grid = values.values if isinstance(values, PatchingResult) else values
    by_head = component in HEAD_COMPONENTS
    if x_labels is None:
        x_labels = (
            [f"H{h}" for h in range(model.cfg.n_heads)]
            if by_head
            else position_labels(data.str_tokens, data.s2_pos, data.end_pos)
        )
    x_title = "head" if by_head else "position"
    fig = heatmap(grid, x_labels, title, x_title=x_title, zmax=zmax) if figure is None else figure
    trace = _drawn_as(fig, grid)
    if static_figures():
        return ExplorableFigure(fig, None)
    explored = fig.data[trace]
    hover = explored.hovertemplate or f"layer %{{y}}<br>{x_title} %{{x}}<br>value %{{z:.3f}}<extra></extra>"
    explored.hovertemplate = (
        hover.replace("<extra>", "<br>click for its run<extra>")
        if "<extra>" in hover
        else hover + "<br>click for its run"
    )
    if figure is not None and explored.x is not None:
        x_labels = [str(x) for x in explored.x]
    runs = cell_runs(
        model,
        data,
        grid,
        component,
        cells,
        MAX_CELLS if max_cells is None else max_cells,
        top_k,
        receivers,
        receiver_input,
    )
    shown = len(runs["cells"])
    runs.update(
        title=title,
        rows=[str(i) for i in range(len(grid))],
        cols=list(x_labels),
        rowTitle="layer",
        colTitle=x_title,
        trace=trace,
        axes=[explored.xaxis or "x", explored.yaxis or "y"],
        note=f"This figure carries the runs of {shown} of its {runs['total']} cells"
        + (
            ""
            if cells is not None or shown == runs["total"]
            else " (the largest values)"
            if by_head
            else " (the last column and the largest values)"
        )
        + "; explorable_heatmap(..., cells=[(layer, column), ...]) in the notebook shows others.",
    )
    explorable = ExplorableFigure(fig, runs)
    size = explorable.embedded_bytes()
    if size > BUDGET_BYTES:
        warnings.warn(
            f"this figure embeds {size / 1000:.0f} KB, over its {BUDGET_BYTES / 1000:.0f} KB budget: "
            "pass fewer cells (max_cells=, cells=) or a smaller top_k",
            stacklevel=2,
        )
    return explorable
