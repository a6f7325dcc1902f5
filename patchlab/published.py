"""GPT-2 small's published IOI patching maps, and figures that set them beside a computed map.

The values (``patchlab/data/gpt2_small_ioi.json``) are the outputs stored in TransformerLens's
Exploratory Analysis Demo, run on the real GPT-2 small; ``tools/published_gpt2_small.py`` wrote the
file with the notebook path, commit and model loading they come from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
import plotly.graph_objects as go
from jaxtyping import Float
from torch import Tensor

from patchlab.plots import shared_limit, stacked_heatmaps

DATA = Path(__file__).resolve().parent / "data" / "gpt2_small_ioi.json"
COMPONENTS = ("resid_pre", "attn_out", "mlp_out", "head_out")


@dataclass(frozen=True)
class PublishedMaps:
    """Published patching maps of one model: ``maps[component]`` is [layer, position] or [layer, head]."""

    model: str
    maps: dict[str, np.ndarray]
    tokens: list[str]
    s2_pos: int
    end_pos: int
    clean_logit_diff: float
    corrupted_logit_diff: float
    source: str  # notebook path, commit and how the model was loaded
    head_scores: dict[str, np.ndarray]  # "induction", "previous_token", "duplicate_token": [layer, head]

    @property
    def short_source(self) -> str:
        return self.source.split(";")[0]


@lru_cache(maxsize=1)
def gpt2_small_ioi() -> PublishedMaps:
    """GPT-2 small's resid_pre, attn_out, mlp_out and head_out maps on the 8 classic prompts, and head scores."""
    raw = json.loads(DATA.read_text(encoding="utf-8"))
    return PublishedMaps(
        model="gpt2-small",
        maps={c: np.asarray(raw["maps"][c]["values"], dtype=float) for c in COMPONENTS},
        tokens=raw["tokens_first_prompt"],
        s2_pos=raw["s2_pos"],
        end_pos=raw["end_pos"],
        clean_logit_diff=raw["clean_logit_diff"],
        corrupted_logit_diff=raw["corrupted_logit_diff"],
        source=f"{raw['source_repo']} {raw['source_path']} at commit {raw['commit'][:8]}; {raw['model_loading']}",
        head_scores={name: np.asarray(entry["values"], dtype=float) for name, entry in raw["head_scores"].items()},
    )


def side_by_side(
    computed: Float[Tensor, "layer cols"] | np.ndarray,
    computed_name: str,
    published: PublishedMaps,
    component: str,
    x_labels: Sequence[str],
    zmax: float | None = None,
) -> go.Figure:
    """The published map above the computed one (`patchlab.plots.stacked_heatmaps`), on one colour
    scale centred at 0 (±``zmax``, by default the largest absolute value of the two).

    For [layer, position] maps both models must have the same positions (``x_labels``, one per
    column, are shared); for ``head_out`` each map gets its own head axis.
    """
    if component not in COMPONENTS:
        raise ValueError(f"unknown component {component!r}: choose one of {', '.join(COMPONENTS)}")
    ours = computed.detach().cpu().numpy() if hasattr(computed, "detach") else np.asarray(computed)
    theirs = published.maps[component]
    by_head = component == "head_out"
    if not by_head and ours.shape[1] != theirs.shape[1]:
        raise ValueError(
            f"the computed map has {ours.shape[1]} positions but {published.model}'s has {theirs.shape[1]}: "
            "compare maps of the same prompts (patchlab.ioi.classic_ioi)"
        )
    if not by_head and len(x_labels) != ours.shape[1]:
        raise ValueError(f"{len(x_labels)} x labels for {ours.shape[1]} positions")
    heads = [[f"H{h}" for h in range(values.shape[1])] for values in (theirs, ours)]
    return stacked_heatmaps(
        [
            (f"{published.model} (published)", theirs, heads[0] if by_head else x_labels),
            (f"{computed_name} (computed on this page)", ours, heads[1] if by_head else x_labels),
        ],
        f"patching {component}: one colour scale",
        zmax=zmax or shared_limit(ours, theirs),
        x_title="head" if by_head else "position",
    )
