"""Assignment ``residual_patching``: the patching hook, the residual-stream patching loop, its heatmap.

The hook is called on two (layer, position) pairs of each prompt set with the clean cache lent (it must
come back unchanged); the loop once per prompt set; the heatmap function on given values, and judged
by the figure it draws, not by numbers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from patchlab.check import ATOL_ACTIVATION, diagnose, residual_mistakes, residual_variant
from patchlab.patching import hook_name
from patchlab.patching.components import patch_position

from ._check import Candidate, Check, Expected, Key, cases
from ._inputs import PromptSet, hook_point
from ._judge import References, decode


def heatmap_values(n_layers: int, n_pos: int) -> Tensor:
    """The values a heatmap function is checked with: all distinct, negative and positive."""
    return torch.linspace(-0.4, 1.0, n_layers * n_pos).reshape(n_layers, n_pos)


def _hook_cases(ps: PromptSet, model_index: int, set_index: int) -> list[Key]:
    """The (layer, position) pairs a patching hook is checked at: S2 early, END last."""
    n_layers = ps.model.cfg.n_layers
    return [
        {"layer": layer, "position": pos}
        for layer, pos in ((min(1, n_layers - 1), ps.data.s2_pos), (n_layers - 1, ps.data.end_pos))
    ]


def _hook_arguments(ps: PromptSet, key: Key) -> tuple[tuple, dict]:
    name = hook_name("resid_pre", key["layer"])
    return (ps.corrupted_cache[name].clone(),), {
        "hook": hook_point(ps.model, name),
        "position": key["position"],
        "clean_cache": ps.clean_cache,
    }


def _expected_hook(refs: References, key: Key) -> Expected:
    ps = refs.prompt_set(key)
    name, position = hook_name("resid_pre", key["layer"]), key["position"]
    clean, corrupted = ps.clean_cache[name].cpu(), ps.corrupted_cache[name].cpu()
    candidates: list[tuple[str, Candidate]] = [
        ("wrong_direction", patch_position(clean.clone(), corrupted, position)),
        ("patched_all_positions", clean),
        ("not_patched", corrupted),
    ]
    candidates += [
        ("off_by_one_position", patch_position(corrupted.clone(), clean, p))
        for p in (position - 1, position + 1)
        if 0 <= p < corrupted.shape[1]
    ]
    return patch_position(corrupted.clone(), clean, position), candidates, {"atol": ATOL_ACTIVATION}


def loop_arguments(ps: PromptSet, key: Key) -> tuple[tuple, dict]:
    """A patching loop's arguments: ``(model, clean_tokens, corrupted_tokens, metric)``."""
    return (ps.model, ps.data.clean_tokens.clone(), ps.data.corrupted_tokens.clone(), ps.metric), {}


def _grid(refs: References, key: Key, variant: str = "reference") -> Tensor:
    """The resid_pre patching grid of a prompt set, or what a known mistake gives."""
    ps = refs.prompt_set(key)
    return refs.cached(
        (key["model"], key["set"], variant),
        lambda: residual_variant(
            ps.model,
            ps.data.clean_tokens,
            ps.data.corrupted_tokens,
            ps.clean_cache,
            ps.corrupted_cache,
            ps.metric,
            variant,
        ),
    )


def _expected_grid(refs: References, key: Key) -> Expected:
    ps = refs.prompt_set(key)
    reference = _grid(refs, key)
    return reference, *residual_mistakes(
        reference, lambda variant: _grid(refs, key, variant), ps.clean_logit_diff, ps.corrupted_logit_diff
    )


def _judge_heatmap(check: Check, records: list[dict[str, Any]], refs: References) -> str | None:
    """The figure a reader sees: one heatmap with layers as rows in order, every position a distinct
    column labelled with its token, S2 and END marked, a colour scale centred on 0."""
    keys = cases(check, refs.models)
    if [r.get("case") for r in records] != keys:
        return "the test did not record every case (did the cell finish?)."
    for record, key in zip(records, keys):
        where = refs.prompt_set(key).label
        if "error" in record or record.get("type") != "Figure":
            not_a_figure = decode(record, check)[1] or f"it must return a plotly Figure, not a {record.get('type')}."
            return f"on {where}, {not_a_figure}"
        problem = heatmap_problem(record["figure"], refs.prompt_set(key))
        if problem:
            return f"on {where}: {problem}"
    return None


def heatmap_problem(figure: dict[str, Any], ps: PromptSet) -> str | None:
    """What is wrong with a figure (plotly JSON) drawn from ``heatmap_values``, or None."""
    n_layers, n_pos = ps.model.cfg.n_layers, ps.data.clean_tokens.shape[1]
    values = heatmap_values(n_layers, n_pos)
    traces = [t for t in figure.get("data", []) if isinstance(t, dict) and t.get("type") == "heatmap"]
    if len(traces) != 1:
        return f"the figure should hold exactly one heatmap trace, it holds {len(traces)}."
    trace = traces[0]
    try:
        z = torch.as_tensor(array(trace.get("z")))
    except (TypeError, ValueError):
        return "the heatmap's values (z) are not a numeric grid."
    diagnosis = diagnose(z, values, [("transposed", values.T)], axis_names=("layer", "position"), atol=1e-6, rtol=1e-6)
    if diagnosis is not None:
        return (
            "it shows other values than the results it is given: draw `results` as they are, one row "
            f"per layer. {diagnosis.message}"
        )
    labels = [str(x) for x in _listed(trace.get("x"))]
    tokens = ps.data.str_tokens
    if len(labels) != n_pos:
        return (
            f"label every column: {n_pos} positions need {n_pos} x labels, the figure has {len(labels)} "
            "(e.g. x_labels = position_labels(str_tokens, s2_pos, end_pos))."
        )
    if len(set(labels)) != n_pos:
        return (
            "two columns have the same label, so plotly draws them as one column: make every label "
            "distinct, e.g. with the position's index (position_labels does)."
        )
    unlabelled = [
        i for i, (tok, label) in enumerate(zip(tokens, labels)) if tok.strip() not in label and str(i) not in label
    ]
    if unlabelled:
        return (
            f"the labels of positions {', '.join(map(str, unlabelled[:5]))} name neither their token nor "
            "their index: label each column with its token."
        )
    if "S2" not in labels[ps.data.s2_pos] or "END" not in labels[ps.data.end_pos]:
        return "mark the S2 and END columns in their labels (position_labels does)."
    rows = None if trace.get("y") is None else _listed(trace.get("y"))
    if rows is not None and [str(r) for r in rows] != [str(r) for r in sorted(rows, key=_layer_number)]:
        return "put the rows in order: the layers in order, 0 first."
    if not _centred(figure, trace):
        return (
            "centre the colour scale on 0 (e.g. zmid=0), so that positive and negative effects get "
            "opposite colours and 0 is white."
        )
    return None


TYPED_ARRAYS = {"f4", "f8", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8"}


def array(value: Any) -> np.ndarray:
    """A plotly array as numbers: a (nested) list, or plotly's typed array {dtype, bdata, shape}."""
    if isinstance(value, dict):
        if value.get("dtype") not in TYPED_ARRAYS:
            raise ValueError("not a numeric typed array")
        import base64

        flat = np.frombuffer(base64.b64decode(str(value.get("bdata", ""))), dtype=value["dtype"])
        shape = [int(n) for n in str(value.get("shape", len(flat))).split(",")]
        return flat.reshape(shape).astype(float)
    return np.asarray(value, dtype=float)


def _listed(value: Any) -> list:
    return list(array(value)) if isinstance(value, dict) else list(value or [])


def _layer_number(label: Any) -> float:
    digits = "".join(ch for ch in str(label) if ch.isdigit())
    return float(digits) if digits else float("inf")


def _centred(figure: dict[str, Any], trace: dict[str, Any]) -> bool:
    if trace.get("zmid") == 0 or (
        trace.get("zmin") is not None and trace.get("zmin") == -(trace.get("zmax") or 0) and trace.get("zmax")
    ):
        return True
    axis = figure.get("layout", {}).get("coloraxis", {}) or {}
    return axis.get("cmid") == 0 or bool(
        axis.get("cmin") is not None and axis.get("cmax") and axis["cmin"] == -axis["cmax"]
    )


patch_hook = Check(
    name="check_patch_hook",
    returns="the patched activation, a tensor of shape [batch, pos, d_model]",
    variants=_hook_cases,
    arguments=_hook_arguments,
    expected=_expected_hook,
    lent=lambda ps, key: ps.clean_cache[hook_name("resid_pre", key["layer"])],
)

residual_patching = Check(
    name="check_residual_patching",
    returns="a tensor of shape [n_layers, n_positions]",
    arguments=loop_arguments,
    expected=_expected_grid,
    loop=True,
    grid=True,
)

heatmap = Check(
    name="check_heatmap",
    returns="a plotly Figure",
    judge=_judge_heatmap,
    record_fields=frozenset({"figure"}),
    arguments=lambda ps, key: (
        (
            heatmap_values(ps.model.cfg.n_layers, ps.data.clean_tokens.shape[1]),
            list(ps.data.str_tokens),
            ps.data.s2_pos,
            ps.data.end_pos,
        ),
        {},
    ),
)
