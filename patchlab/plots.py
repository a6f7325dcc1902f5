"""Plots: patching heatmaps (interactive plotly, static PNG via matplotlib) with token labels."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import plotly.graph_objects as go
from jaxtyping import Float
from torch import Tensor


def position_labels(str_tokens: Sequence[str], s2_pos: int | None = None, end_pos: int | None = None) -> list[str]:
    """'index: token' labels (tokens quoted to show their spaces), with S2 and END marked."""
    labels = []
    for i, tok in enumerate(str_tokens):
        mark = " (S2)" if i == s2_pos else " (END)" if i == end_pos else ""
        labels.append(f"{i}: {tok!r}{mark}"[: 40])
    return labels


def _as_array(values: Float[Tensor, "rows cols"] | np.ndarray) -> np.ndarray:
    arr = values.detach().cpu().numpy() if hasattr(values, "detach") else np.asarray(values)
    if arr.ndim != 2:
        raise ValueError(f"a heatmap needs a 2-d array [rows, cols], got shape {arr.shape}")
    return arr


def _limit(arr: np.ndarray) -> float:
    return float(max(np.abs(arr).max(), 1e-6))


def heatmap(
    values: Float[Tensor, "rows cols"] | np.ndarray,
    x_labels: Sequence[str],
    title: str,
    y_title: str = "layer",
    x_title: str = "position",
    colorbar_title: str = "normalised<br>logit diff",
) -> go.Figure:
    """Interactive heatmap, rows (layers) on y from the top, colour scale centred at 0."""
    arr = _as_array(values)
    if len(x_labels) != arr.shape[1]:
        raise ValueError(f"{len(x_labels)} x labels for {arr.shape[1]} columns")
    lim = _limit(arr)
    fig = go.Figure(
        go.Heatmap(
            z=arr, x=list(x_labels), y=[str(i) for i in range(arr.shape[0])],
            colorscale="RdBu", zmid=0, zmin=-lim, zmax=lim,
            colorbar={"title": {"text": colorbar_title}},
            hovertemplate=f"{y_title} %{{y}}<br>{x_title} %{{x}}<br>value %{{z:.3f}}<extra></extra>",
        )
    )
    fig.update_layout(
        title=title, xaxis_title=x_title, yaxis_title=y_title,
        yaxis={"autorange": "reversed", "type": "category"}, xaxis={"type": "category", "tickangle": -45},
        height=max(350, 28 * arr.shape[0] + 220),  # no fixed width: the figure fills its column
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


def patching_title(model_name: str, component: str, metric: str = "normalised logit difference") -> str:
    """A heatmap title naming the model, the patched component and the metric."""
    return f"{model_name}: patching {component} (clean → corrupted), {metric}"
