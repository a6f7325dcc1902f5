"""Explorable heatmaps (patchlab.explore, patchlab.plots.explorable_heatmap): the data behind each cell
is the patched run computed independently here, with a hand-written hook; the figures the book draws
stay within their size budget; the figure shows with its panel script in every notebook front end."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
import pytest
import torch

from patchlab.explore import BUDGET_BYTES, STATIC_FIGURES, ExplorableFigure, _json, cell_runs, choose_cells
from patchlab.patching import fast_path_patching, fast_patching
from patched_runs import hooked_final  # tests/unit/patched_runs.py
from patchlab.plots import explorable_heatmap, position_labels
from patchlab.published import gpt2_small_ioi, side_by_side


def _check_run(model: Any, runs: dict, key: str, final: torch.Tensor, answers: torch.Tensor) -> None:
    """The cell's per-prompt logit differences and top tokens (strings, probabilities) equal ``final``'s."""
    cell = runs["cells"][key]
    lds = final.gather(-1, answers[:, :1]) - final.gather(-1, answers[:, 1:])
    assert cell["ld"] == pytest.approx(lds.squeeze(-1).tolist(), abs=1e-3)
    assert len(set(runs["tokens"])) == len(runs["tokens"]), "each token string is stored once"
    probs, ids = final.softmax(-1).topk(len(cell["top"][0]), dim=-1)
    for prompt, (row_p, row_ids) in enumerate(zip(probs, ids)):
        assert [p for _, p in cell["top"][prompt]] == pytest.approx(row_p.tolist(), abs=6e-4)
        assert [runs["tokens"][i] for i, _ in cell["top"][prompt]] == model.to_str_tokens(row_ids, prepend_bos=False)


@pytest.fixture(scope="module")
def maps(model: Any, classic: Any, classic_run: Any) -> dict[str, torch.Tensor]:
    _, cache, _, metric = classic_run
    return {c: fast_patching(model, classic.corrupted_tokens, cache, metric, c, progress=False)
            for c in ("resid_pre", "attn_out", "mlp_out", "head_out")}


def test_a_residual_cells_run_is_the_hand_patched_run(model: Any, classic: Any, maps: dict) -> None:
    layer, end = 2, classic.end_pos
    runs = cell_runs(model, classic, maps["resid_pre"], "resid_pre")
    final = hooked_final(model, classic, f"blocks.{layer}.hook_resid_pre", (slice(None), end))
    _check_run(model, runs, f"{layer},{end}", final, classic.answer_tokens)
    # the run's metric is the map's value (fast patching, another method) at every cell
    for key, cell in runs["cells"].items():
        r, c = map(int, key.split(","))
        assert cell["m"] == pytest.approx(float(maps["resid_pre"][r, c]), abs=1e-3), key
    assert len(runs["cells"]) == runs["total"] == maps["resid_pre"].numel()


def test_clean_and_corrupted_runs_are_the_unpatched_runs(model: Any, classic: Any, classic_run: Any, maps: dict) -> None:
    clean_logits, _, corrupted_logits, _ = classic_run
    runs = cell_runs(model, classic, maps["mlp_out"], "mlp_out", cells=[(0, 0)])
    for name, logits in (("clean", clean_logits), ("corrupted", corrupted_logits)):
        final = logits[:, -1]
        lds = (final.gather(-1, classic.answer_tokens[:, :1]) - final.gather(-1, classic.answer_tokens[:, 1:])).squeeze(-1)
        assert runs["runs"][name]["ld"] == pytest.approx(lds.tolist(), abs=1e-3)
    assert list(runs["cells"]) == ["0,0"]


def test_a_head_cell_carries_its_run_and_its_pattern(model: Any, classic: Any, classic_run: Any, maps: dict) -> None:
    _, clean_cache, _, _ = classic_run
    layer, head = 3, 1
    runs = cell_runs(model, classic, maps["head_out"], "head_out")
    final = hooked_final(model, classic, f"blocks.{layer}.attn.hook_z", (slice(None), slice(None), head))
    _check_run(model, runs, f"{layer},{head}", final, classic.answer_tokens)
    pattern = clean_cache[f"blocks.{layer}.attn.hook_pattern"][:, head, -1]
    assert np.allclose(runs["heads"][f"{layer},{head}"]["clean"], pattern.numpy(), atol=0.006)
    with torch.no_grad():
        _, corrupted_cache = model.run_with_cache(classic.corrupted_tokens)
    pattern = corrupted_cache[f"blocks.{layer}.attn.hook_pattern"][:, head, -1]
    assert np.allclose(runs["heads"][f"{layer},{head}"]["corrupted"], pattern.numpy(), atol=0.006)


def test_a_patched_query_shows_no_pattern(model: Any, classic: Any) -> None:
    """Patching a head's query changes its pattern: its cells show none (rather than a wrong one)."""
    runs = cell_runs(model, classic, torch.zeros(4, 4), "head_q", cells=[(3, 1)])
    assert runs["heads"] == {} and list(runs["cells"]) == ["3,1"]


def test_a_path_cell_is_the_path_patched_run(model: Any, classic: Any, classic_run: Any) -> None:
    _, cache, _, metric = classic_run
    to_logits = fast_path_patching(model, classic.corrupted_tokens, cache, metric, None, "q", progress=False)
    runs = cell_runs(model, classic, to_logits, "path", cells=[(2, 0), (3, 1)])
    for key, cell in runs["cells"].items():
        r, c = map(int, key.split(","))
        assert cell["m"] == pytest.approx(float(to_logits[r, c]), abs=1e-3)
        # the metric is the normalised mean of the per-prompt logit differences shown
        clean, corrupted = metric.clean_logit_diff, metric.corrupted_logit_diff
        assert (np.mean(cell["ld"]) - corrupted) / (clean - corrupted) == pytest.approx(cell["m"], abs=2e-3)


def test_a_figure_of_several_maps_opens_the_cells_of_the_map_drawn_from_the_values(model: Any, classic: Any,
                                                                                    maps: dict) -> None:
    """Chapter 10's figure: GPT-2 small's published map above this model's; only the lower one opens runs."""
    labels = position_labels(classic.str_tokens, classic.s2_pos, classic.end_pos)
    published = side_by_side(maps["attn_out"], "ioi-mini", gpt2_small_ioi(), "attn_out", labels)
    layer, end = 2, classic.end_pos
    fig = explorable_heatmap(model, classic, maps["attn_out"], "attn_out", "attn_out", cells=[(layer, end)],
                             figure=published)
    assert fig.figure is published and (fig.data["trace"], fig.data["axes"]) == (1, ["x2", "y2"])
    assert ["click for its run" in t.hovertemplate for t in published.data] == [False, True]
    assert fig.data["cols"] == labels
    final = hooked_final(model, classic, f"blocks.{layer}.hook_attn_out", (slice(None), end))
    _check_run(model, fig.data, f"{layer},{end}", final, classic.answer_tokens)
    with pytest.raises(ValueError, match="draws these values in 0 heatmaps"):
        explorable_heatmap(model, classic, maps["mlp_out"], "mlp_out", "mlp_out", figure=published)
    # a plain plotly heatmap without a hover of its own gets one that says its cells open
    plain = go.Figure(go.Heatmap(z=maps["mlp_out"].numpy()))
    explorable_heatmap(model, classic, maps["mlp_out"], "mlp_out", "mlp_out", cells=[(0, 0)], figure=plain)
    assert "click for its run" in plain.data[0].hovertemplate


def test_large_maps_embed_the_last_column_and_the_largest_cells() -> None:
    values = np.zeros((12, 15))
    values[3, 4], values[7, 2] = 5.0, -4.0
    chosen = choose_cells(values, "resid_pre", max_cells=14)
    assert set(chosen) == {(r, 14) for r in range(12)} | {(3, 4), (7, 2)}
    assert set(choose_cells(values, "head_out", max_cells=2)) == {(3, 4), (7, 2)}
    assert len(choose_cells(np.zeros((4, 4)), "head_out", max_cells=64)) == 16


def test_bad_input_gets_one_clear_line(model: Any, classic: Any) -> None:
    with pytest.raises(ValueError, match=r"resid_pre map of this model and data is \(4, 15\)"):
        cell_runs(model, classic, torch.zeros(4, 4), "resid_pre")
    with pytest.raises(ValueError, match="cannot explore 'head_out_by_pos'"):
        cell_runs(model, classic, torch.zeros(4, 4), "head_out_by_pos")


@pytest.mark.parametrize("component", ["resid_pre", "attn_out", "mlp_out", "head_out", "path"])
def test_the_books_figures_stay_within_their_budget(model: Any, classic: Any, classic_run: Any, maps: dict,
                                                    component: str) -> None:
    _, cache, _, metric = classic_run
    values = (fast_path_patching(model, classic.corrupted_tokens, cache, metric, None, "q", progress=False)
              if component == "path" else maps[component])
    fig = explorable_heatmap(model, classic, values, component, f"ioi-mini: {component}")
    html = fig.to_html(include_plotlyjs=False, full_html=False)
    assert fig.embedded_bytes() <= BUDGET_BYTES and len(html.encode()) <= BUDGET_BYTES + 2_000, fig.embedded_bytes()
    assert len(fig.data["cells"]) == values.numel(), "on the course model every cell carries its run"


def test_a_too_large_figure_fails_the_budget(model: Any, classic: Any, maps: dict) -> None:
    """The budget check can fail: every cell with all 225 tokens of the course model's vocabulary."""
    with pytest.warns(UserWarning, match="over its 300 KB budget: pass fewer cells"):
        fig = explorable_heatmap(model, classic, maps["resid_pre"], "resid_pre", "all tokens", top_k=model.cfg.d_vocab)
    assert fig.embedded_bytes() > BUDGET_BYTES


def test_embedded_data_cannot_close_its_script() -> None:
    text = _json({"tokens": ["</script><script>alert(1)</script>", "a & b"]})
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == {"tokens": ["</script><script>alert(1)</script>", "a & b"]}


@pytest.mark.parametrize(("default", "used"), [("notebook", "notebook"), ("colab", "colab"),
                                               ("plotly_mimetype+notebook", "notebook"), ("plotly_mimetype", "notebook")])
def test_show_uses_a_renderer_that_runs_the_panel(monkeypatch: pytest.MonkeyPatch, default: str, used: str) -> None:
    calls = []
    monkeypatch.setattr(go.Figure, "show", lambda self, **kwargs: calls.append(kwargs))
    monkeypatch.setattr(pio.renderers, "default", default)
    figure = ExplorableFigure(go.Figure(go.Heatmap(z=[[0.0]])), {"tokens": []})
    figure.show()
    assert calls == [{"renderer": used, "post_script": figure.script}]
    assert "{plot_id}" in figure.script and "__DATA__" not in figure.script


def test_where_figures_are_read_without_scripts_the_map_is_plain_and_nothing_reruns(
        monkeypatch: pytest.MonkeyPatch, model: Any, classic: Any, maps: dict) -> None:
    """The grader's kernels (STATIC_FIGURES in their environment): no runs, no script, the same map."""
    monkeypatch.setenv(STATIC_FIGURES, "1")
    monkeypatch.setattr("patchlab.explore.cell_runs", lambda *args, **kwargs: pytest.fail("re-ran the cells"))
    fig = explorable_heatmap(model, classic, maps["resid_pre"], "resid_pre", "plain")
    assert fig.data is None and fig.script == ""
    assert np.allclose(fig.figure.data[0].z, maps["resid_pre"].numpy())
    assert "click for its run" not in (fig.figure.data[0].hovertemplate or "")
    calls = []
    monkeypatch.setattr(go.Figure, "show", lambda self, **kwargs: calls.append(kwargs))
    fig.show()
    assert calls == [{}], "a plain figure shows with the default renderer and no post_script"
    monkeypatch.setenv(STATIC_FIGURES, "0")
    with pytest.raises(pytest.fail.Exception, match="re-ran the cells"):
        explorable_heatmap(model, classic, maps["resid_pre"], "resid_pre", "explorable")


def test_the_graders_kernels_draw_explorable_maps_plain(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A graded page's panel would never open (feedback pages drop scripts, and the graded notebook's HTML
    outputs are withheld): the grader's kernels get STATIC_FIGURES, so the explorable cell re-runs nothing."""
    from autograder import sandbox
    from autograder.grade import Grader
    from patchlab.explore import static_figures

    env = Grader("residual_patching", tmp_path, "ioi-mini", "none", 60, 60, sandbox.Limits()).kernel_env()
    monkeypatch.setenv(STATIC_FIGURES, env[STATIC_FIGURES])
    assert static_figures()
