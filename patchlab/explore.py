"""Explorable heatmaps: the patched run behind every cell of a patching map, embedded in the figure.

`cell_runs` re-runs the patched runs of a map (one forward pass of the corrupted prompts per cell,
with the clean activation patched in: the reference method's hooks) and keeps, per cell, what a reader
needs to see why the cell has its value: the metric of that run, the logit difference of every
prompt, and each prompt's top next tokens with their probabilities; the clean and corrupted runs get
the same, once. For head cells (a head's output or values, a sender of path patching) it adds the head's
attention pattern from the last position in the clean and the corrupted run (patching a head's output
or values leaves its own pattern as it was in the corrupted run; see `PATTERN_KEPT`). Everything is
rounded and the token strings are kept once, in a shared table, so a figure's data stays small
(`BUDGET_BYTES`).

`ExplorableFigure` is a plotly figure plus a small script (`SCRIPT`, plotly's ``post_script``) that
draws a panel beside the figure (below it on a narrow screen) with the selected cell's run: a click
or a tap on a cell selects it, and so do the arrow keys once the figure has the keyboard focus.
`patchlab.plots.explorable_heatmap` makes one from a patching result and the runs it came from.
Where no script will run (the grader sets `STATIC_FIGURES`: its feedback pages drop scripts) it draws
the plain map and re-runs nothing.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
import torch
from jaxtyping import Float
from torch import Tensor

from patchlab.ioi import IOIData
from patchlab.metrics import logit_diff, metric_from_runs
from patchlab.patching.paths import reference_path_patching
from patchlab.patching.reference import reference_cells

BUDGET_BYTES = 300_000
"""The most that one explorable figure may embed (its plotly JSON, its cells' runs and the script)."""

STATIC_FIGURES = "PATCHLAB_STATIC_FIGURES"
"""Set (to anything but "" or "0") where figures are read without their scripts: explorable maps are
drawn plain, with no runs (the grader's kernels: a graded page's panel would never open)."""

MAX_CELLS = 64
"""How many cells' runs a figure embeds by default: on the course model every cell of the book's maps;
on GPT-2 small the largest cells (and, for maps by position, the whole last column)."""

PATH = "path"
"""``component`` for a map of path patching (senders ``[n_layers, n_heads]``)."""

HEAD_COMPONENTS = ("head_out", "head_q", "head_k", "head_v", "head_pattern", PATH)
POSITION_COMPONENTS = ("resid_pre", "attn_out", "mlp_out")
PATTERN_KEPT = ("head_out", "head_v", PATH)
"""The head maps whose patch leaves the head's own pattern as in the corrupted run (its output or its
values): their cells show the head's clean and corrupted pattern. (A patched query, key or pattern
changes it; those cells show no pattern.)"""


class _Recorder:
    """A patching metric that also keeps each run's final-position logits, in the order of its calls."""

    def __init__(self, metric: Any) -> None:
        self.metric = metric
        self.final: list[Tensor] = []

    def __call__(self, logits: Float[Tensor, "batch pos d_vocab"]) -> Float[Tensor, ""]:
        self.final.append(logits[:, -1].detach().float().cpu())
        return self.metric(logits)


def choose_cells(values: np.ndarray, component: str, max_cells: int = MAX_CELLS) -> list[tuple[int, int]]:
    """Every cell of a map with at most ``max_cells`` cells; else the ``max_cells`` largest |values|,
    with the last column first for maps by position (the END column the chapters read)."""
    rows, cols = values.shape
    every = [(r, c) for r in range(rows) for c in range(cols)]
    if len(every) <= max_cells:
        return every
    first = [(r, cols - 1) for r in range(rows)] if component in POSITION_COMPONENTS else []
    ranked = sorted(every, key=lambda cell: -abs(float(values[cell])))
    chosen = list(dict.fromkeys(first + ranked))[:max_cells]
    return sorted(chosen)


class _Tokens:
    """The shared token table: each token id is stored once and referred to by its index."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.index: dict[int, int] = {}

    def __call__(self, token_id: int) -> int:
        return self.index.setdefault(int(token_id), len(self.index))

    def strings(self) -> list[str]:
        ids = torch.tensor(list(self.index), dtype=torch.long)
        return [str(s) for s in self.model.to_str_tokens(ids, prepend_bos=False)] if len(ids) else []


def _run_summary(final: Float[Tensor, "batch d_vocab"], answers: Tensor, tokens: _Tokens, top_k: int) -> dict:
    """A run's per-prompt logit differences and top-k next tokens (token index, probability)."""
    lds = logit_diff(final[:, None], answers.cpu(), per_prompt=True)
    probs, ids = final.softmax(-1).topk(top_k, dim=-1)
    return {
        "ld": [round(float(x), 3) for x in lds],
        "top": [
            [[tokens(i), round(float(p), 3)] for i, p in zip(row_ids, row_p)] for row_ids, row_p in zip(ids, probs)
        ],
    }


def static_figures() -> bool:
    """Whether figures are read without their scripts here (`STATIC_FIGURES` set)."""
    return os.environ.get(STATIC_FIGURES, "") not in ("", "0")


def cell_runs(
    model: Any,
    data: IOIData,
    values: Float[Tensor, "rows cols"] | np.ndarray,
    component: str,
    cells: Sequence[tuple[int, int]] | None = None,
    max_cells: int = MAX_CELLS,
    top_k: int = 5,
    receivers: Sequence[tuple[int, int]] | None = None,
    receiver_input: str = "q",
) -> dict[str, Any]:
    """The compact data behind an explorable map of ``component`` (see the module's docstring).

    ``values`` is the map (``[n_layers, n_pos]`` for ``resid_pre``, ``attn_out``, ``mlp_out``;
    ``[n_layers, n_heads]`` for ``head_out``, ``head_q``, ``head_k``, ``head_v``, ``head_pattern``
    and ``"path"``, path patching to ``receivers``' ``receiver_input``, or to the logits without
    receivers). ``cells`` (``(row, column)`` pairs) default to `choose_cells`. The patching is
    denoising: the corrupted prompts run with the clean activation patched in.
    """
    arr = values.detach().cpu().numpy() if hasattr(values, "detach") else np.asarray(values, dtype=float)
    if component not in POSITION_COMPONENTS + HEAD_COMPONENTS:
        raise ValueError(
            f"cannot explore {component!r}: choose one of {', '.join(POSITION_COMPONENTS + HEAD_COMPONENTS)}"
        )
    n_layers, n_heads, n_pos = model.cfg.n_layers, model.cfg.n_heads, data.corrupted_tokens.shape[1]
    shape = (n_layers, n_pos if component in POSITION_COMPONENTS else n_heads)
    if arr.shape != shape:
        raise ValueError(
            f"a {component} map of this model and data is {shape} [layer, "
            f"{'position' if shape[1] == n_pos else 'head'}], got {arr.shape}"
        )
    chosen = choose_cells(arr, component, max_cells) if cells is None else [(int(r), int(c)) for r, c in cells]
    with torch.no_grad():
        clean_logits, clean_cache = model.run_with_cache(data.clean_tokens)
        corrupted_logits, corrupted_cache = model.run_with_cache(data.corrupted_tokens)
    metric = metric_from_runs(clean_logits, corrupted_logits, data.answer_tokens)
    recorder = _Recorder(metric)
    if component == PATH:
        by_cell = reference_path_patching(
            model,
            data.corrupted_tokens,
            clean_cache,
            recorder,
            receivers,
            receiver_input,
            progress=False,
            senders=chosen,
        )
        measured = [float(by_cell[cell]) for cell in chosen]
    else:
        measured = reference_cells(model, data.corrupted_tokens, clean_cache, recorder, component, chosen).tolist()
    tokens = _Tokens(model)
    answers = data.answer_tokens.cpu()
    runs = {
        name: _run_summary(logits[:, -1].float().cpu(), answers, tokens, top_k)
        for name, logits in (("clean", clean_logits), ("corrupted", corrupted_logits))
    }
    cell_data = {}
    for (row, col), final, value in zip(chosen, recorder.final, measured):
        cell_data[f"{row},{col}"] = {"m": round(value, 4), **_run_summary(final, answers, tokens, top_k)}
    heads = {}
    if component in PATTERN_KEPT:
        for layer, head in chosen:
            name = f"blocks.{layer}.attn.hook_pattern"
            heads[f"{layer},{head}"] = {
                run: [[round(float(w), 2) for w in row] for row in cache[name][:, head, -1].float().cpu()]
                for run, cache in (("clean", clean_cache), ("corrupted", corrupted_cache))
            }
    return {
        "answers": [[tokens(a), tokens(b)] for a, b in answers.tolist()],
        "prompts": {
            run: [[tokens(t) for t in row] for row in toks.tolist()]
            for run, toks in (("clean", data.clean_tokens), ("corrupted", data.corrupted_tokens))
        },
        "runs": runs,
        "cells": cell_data,
        "heads": heads,
        "z": [[round(float(v), 4) for v in row] for row in arr],
        "total": int(arr.size),
        "tokens": tokens.strings(),
    }


def _json(value: Any) -> str:
    """Compact JSON that is safe inside a <script> element."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


@dataclass
class ExplorableFigure:
    """A plotly heatmap and the data behind its cells: ``show()`` draws it with its panel (``data``
    ``None``: a plain figure, where no script runs, `STATIC_FIGURES`)."""

    figure: go.Figure
    data: dict[str, Any] | None

    @property
    def script(self) -> str:
        """The figure's ``post_script``: the panel, its data and its event handlers ("" with no data)."""
        return "" if self.data is None else SCRIPT.replace("__DATA__", _json(self.data))

    def embedded_bytes(self) -> int:
        """What the figure embeds in a page (its plotly JSON and its script), in bytes."""
        return len(self.figure.to_json().encode()) + len(self.script.encode())

    def to_html(self, **kwargs: Any) -> str:
        """The figure with its panel as HTML (``plotly.io.to_html``'s arguments); a whole page
        (``full_html``, the default) is laid out at a phone's own width."""
        html = self.figure.to_html(post_script=self.script, **kwargs)
        return html.replace("<head>", '<head><meta name="viewport" content="width=device-width, initial-scale=1">', 1)

    def show(self) -> None:
        """Draw the figure with its panel in a notebook (Jupyter, JupyterLab, Colab, VS Code) or a
        page built from one: with the default plotly renderer when it draws HTML (``notebook``,
        ``colab``, ...), which runs the panel's script; else (JupyterLab's ``plotly_mimetype``, which
        runs none) with the ``notebook`` renderer."""
        if self.data is None:
            self.figure.show()
            return
        parts = (pio.renderers.default or "").split("+")
        html = [p for p in parts if p in pio.renderers and hasattr(pio.renderers[p], "post_script")]
        self.figure.show(renderer=html[0] if html else "notebook", post_script=self.script)

    def _ipython_display_(self) -> None:
        self.show()


# The panel. Plotly runs it once the figure is drawn, with {plot_id} the figure's div; __DATA__ is
# `cell_runs`'s data with the figure's labels, the index of the heatmap whose cells it holds (``trace``)
# and that heatmap's ``axes``. Text only ever goes in with textContent.
SCRIPT = r"""(function () {
var gd = document.getElementById('{plot_id}'), D = __DATA__;
if (!gd || gd.getAttribute('data-explorable')) return;
gd.setAttribute('data-explorable', '1');
if (!document.getElementById('patchlab-explore-css')) {
  var css = document.createElement('style'); css.id = 'patchlab-explore-css';
  css.textContent = '.patchlab-explore{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}'
    + '.patchlab-explore>.plotly-graph-div{flex:3 1 420px;min-width:0}'
    + '.patchlab-explore>.plotly-graph-div:focus-visible{outline:2px solid #2166ac;outline-offset:2px}'
    + '.patchlab-panel{flex:1 1 260px;min-width:0;font-size:13px;line-height:1.35;overflow-wrap:anywhere}'
    + '.patchlab-panel table{width:100%;table-layout:fixed;border-collapse:collapse;margin:4px 0 10px;font-size:12px}'
    + '.patchlab-panel th,.patchlab-panel td{padding:1px 3px;text-align:left;border-bottom:1px solid rgba(128,128,128,.3)}'
    + '.patchlab-panel caption{caption-side:top;text-align:left;font-weight:600;padding:2px 0}'
    + '.patchlab-panel .bad{color:#b2182b}.patchlab-panel .title{font-weight:700;font-size:14px}'
    + '.patchlab-panel select{max-width:100%}';
  document.head.appendChild(css);
}
var box = document.createElement('div'); box.className = 'patchlab-explore';
gd.parentNode.insertBefore(box, gd); box.appendChild(gd);
// plotly's notebook renderer puts the figure in a div of the figure's height: it must hold the panel too
var outer = box.parentNode;
if (outer && /px$/.test(outer.style.height)) { outer.style.minHeight = outer.style.height; outer.style.height = 'auto'; }
var panel = document.createElement('div'); panel.className = 'patchlab-panel';
panel.setAttribute('role', 'region'); panel.setAttribute('aria-live', 'polite');
panel.setAttribute('aria-label', 'the patched run of the selected cell');
box.appendChild(panel);
gd.setAttribute('tabindex', '0');
gd.setAttribute('aria-label', D.title + ': a map; the arrow keys choose a cell, whose patched run is shown beside it');
var tok = function (i) { return JSON.stringify(D.tokens[i]); };
var fix = function (x, d) { return Number(x).toFixed(d); };
var el = function (tag, text, cls) { var e = document.createElement(tag); if (text !== undefined) e.textContent = text; if (cls) e.className = cls; return e; };
var table = function (caption, head, rows) {
  var t = el('table'), h = el('tr'); t.appendChild(el('caption', caption));
  head.forEach(function (x) { h.appendChild(el('th', x)); }); t.appendChild(h);
  rows.forEach(function (r) { var tr = el('tr'); r.forEach(function (x) {
    var td = el('td', Array.isArray(x) ? x[0] : x, Array.isArray(x) ? x[1] : undefined); tr.appendChild(td); }); t.appendChild(tr); });
  return t;
};
var z = D.z, nr = z.length, nc = z[0].length, sel = null, prompt = 0, shapes = (gd.layout.shapes || []).slice();
var hint = function () {
  panel.replaceChildren(el('p', 'Click or tap a cell (or focus the map and use the arrow keys) to see its patched run.'
    + (Object.keys(D.cells).length < D.total ? ' ' + D.note : '')));
};
var show = function (r, c) {
  sel = [r, c];
  Plotly.relayout(gd, {shapes: shapes.concat([{type: 'rect', xref: D.axes[0], yref: D.axes[1], x0: c - 0.5, x1: c + 0.5,
                                                y0: r - 0.5, y1: r + 0.5, line: {color: '#111', width: 3}}])});
  var key = r + ',' + c, cell = D.cells[key];
  panel.replaceChildren(el('div', D.rowTitle + ' ' + D.rows[r] + ', ' + D.colTitle + ' ' + D.cols[c], 'title'));
  panel.appendChild(el('p', 'value on the map: ' + fix(z[r][c], 3)));
  if (!cell) { panel.appendChild(el('p', 'This cell\u2019s run is not embedded here. ' + D.note)); return; }
  panel.lastChild.textContent += '; this run: ' + fix(cell.m, 3);
  var ld = D.runs.clean.ld.map(function (x, i) {
    var p = cell.ld[i];
    return [String(i), tok(D.answers[i][0]) + ' vs ' + tok(D.answers[i][1]), fix(D.runs.clean.ld[i], 2), fix(D.runs.corrupted.ld[i], 2), [fix(p, 2), p < 0 ? 'bad' : '']];
  });
  var lds = table('logit difference per prompt (correct \u2212 incorrect answer)', ['prompt', 'answers', 'clean', 'corrupted', 'patched'], ld);
  lds.className = 'lds'; panel.appendChild(lds);
  var label = el('label', 'prompt '), pick = el('select');
  D.answers.forEach(function (a, i) { var o = el('option', i + ': ' + D.prompts.clean[i].map(function (t) { return D.tokens[t]; }).join('').slice(-40)); o.value = i; pick.appendChild(o); });
  pick.value = prompt; pick.onchange = function () { prompt = Number(pick.value); show(sel[0], sel[1]); };
  label.appendChild(pick); panel.appendChild(label);
  var entry = function (run, k) { var t = run.top[prompt][k]; return tok(t[0]) + ' ' + fix(t[1], 3); };
  var top = D.runs.clean.top[prompt].map(function (_, k) {
    return [String(k + 1), entry(D.runs.clean, k), entry(D.runs.corrupted, k), entry(cell, k)];
  });
  var tops = table('top next tokens of prompt ' + prompt + ' (probability)', ['#', 'clean', 'corrupted', 'patched'], top);
  tops.className = 'tops'; panel.appendChild(tops);
  var head = D.heads[key];
  if (head) {
    var rows = head.clean[prompt].map(function (w, s) {
      return [s + ': ' + tok(D.prompts.clean[prompt][s]), fix(w, 2), fix(head.corrupted[prompt][s], 2)];
    });
    var pat = table('attention of head ' + D.rows[r] + '.' + c + ' from the last position, prompt ' + prompt
      + ' (the patch leaves its pattern as in the corrupted run)', ['source', 'clean', 'corrupted'], rows);
    pat.className = 'pattern'; panel.appendChild(pat);
  }
};
gd.on('plotly_click', function (ev) {
  var p = ev.points && ev.points[0]; if (!p) return;
  if (p.curveNumber !== D.trace) {
    panel.replaceChildren(el('p', 'The cells of this map carry no runs here; those of the map whose cells say \u201cclick for its run\u201d do.'));
    return;
  }
  show(p.pointIndex[0], p.pointIndex[1]); gd.focus({preventScroll: true});
});
gd.addEventListener('keydown', function (ev) {
  var step = {ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1]}[ev.key];
  if (!step) return;
  ev.preventDefault();
  var r = sel ? Math.min(nr - 1, Math.max(0, sel[0] + step[0])) : 0, c = sel ? Math.min(nc - 1, Math.max(0, sel[1] + step[1])) : 0;
  show(r, c);
});
// In the flex box plotly's height:100% has nothing to be a share of: the div gets the figure's own
// height. Beside the panel the figure is narrow, and a title that then runs under the mode bar moves
// down below it (the top margin and the figure grow where the title needs room, so the map keeps its size).
var tries = 0, fit = function () {
  var L = gd._fullLayout; if (!L) return;
  gd.style.height = L.height + 'px';
  var t = gd.querySelector('.gtitle'), m = gd.querySelector('.modebar');
  if (tries > 2 || !t || !m) return;
  var tb = t.getBoundingClientRect(), mb = m.getBoundingClientRect(), top = gd.getBoundingClientRect().top;
  if (!(mb.width > 0 && tb.left < mb.right && mb.left < tb.right && tb.top < mb.bottom && mb.top < tb.bottom)) return;
  tries += 1;  // plotly anchors a title of several lines by its first: measure, move, measure again
  var want = Math.ceil(mb.bottom - top) + 4, now = tb.top - top;
  var at = L.title.yref === 'container' && L.title.yanchor === 'top' ? (1 - L.title.y) * L.height + want - now : want;
  var extra = Math.max(0, Math.ceil(want + tb.height + 8 - L.margin.t));
  Plotly.relayout(gd, {'title.yref': 'container', 'title.yanchor': 'top', 'title.y': 1 - at / (L.height + extra),
                       'margin.t': L.margin.t + extra, height: L.height + extra}).then(fit);
};
gd.on('plotly_afterplot', fit);
hint();
Plotly.Plots.resize(gd).then(fit);
})();"""
