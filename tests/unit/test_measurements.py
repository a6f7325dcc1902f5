"""The measured costs: tools/measure_notebooks.py's per-cell timing, and the measurements page and the
chapters' cost table (patchlab/data/costs.json) generated from bench/*.json by tools/bench_summary.py."""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path

import nbformat
import pytest

from grading import load_module  # tests/grading.py

ROOT = Path(__file__).resolve().parents[2]
summary_tool = load_module("bench_summary", "tools/bench_summary.py")
measure_tool = load_module("measure_notebooks", "tools/measure_notebooks.py")


def run(cells: list[tuple[float, float]], date: str = "2026-12-07 01:00 UTC") -> dict:
    return {"date": date, "load_average": [1.0, 1, 1], "load_average_after": [3.0, 1, 1], "kernel_wall": 1.0,
            "cells": [{"label": f"cell {i}", "cpu": cpu, "wall": wall} for i, (cpu, wall) in enumerate(cells)]}


def record(runs: dict[str, list[dict]]) -> dict:
    return {"kind": "notebooks", "setups": {"gpt2-small": {"threads": 2, "omp_wait_policy": "PASSIVE",
                                                           "machine": "2 × Test CPU", "notebooks": runs}}}


def test_the_page_and_the_cost_table_are_what_the_committed_bench_files_give(capsys) -> None:
    assert summary_tool.main(["--check"]) == 0, capsys.readouterr().out
    page = (ROOT / "book" / "measurements.md").read_text()
    notebooks = json.loads((ROOT / "bench" / "notebooks.json").read_text())
    dates = {r["date"][:10] for s in notebooks["setups"].values() for runs in s["notebooks"].values() for r in runs}
    assert all(date in page for date in dates) and "load average" in page
    for name in ("notebooks", "patchlab", "autograder", "explore"):
        assert f"bench/{name}.json" in page or name == "notebooks"


def test_the_page_is_in_the_book_beside_grading_at_scale() -> None:
    toc = (ROOT / "_toc.yml").read_text()
    assert "- file: book/grading_at_scale\n  - file: book/measurements\n" in toc


def test_a_stale_page_is_reported_and_written_again(tmp_path: Path, monkeypatch, capsys) -> None:
    page, costs = tmp_path / "measurements.md", tmp_path / "costs.json"
    page.write_text("typed by hand\n")
    monkeypatch.setattr(summary_tool, "PAGE", page)
    monkeypatch.setattr(summary_tool, "COSTS", costs)
    assert summary_tool.main(["--check"]) == 1 and page.read_text() == "typed by hand\n"
    assert "measurements.md is not what the bench files give" in capsys.readouterr().out
    assert summary_tool.main([]) == 0
    assert page.read_text() == (ROOT / "book" / "measurements.md").read_text()
    assert costs.read_text() == (ROOT / "patchlab" / "data" / "costs.json").read_text()
    assert summary_tool.main(["--check"]) == 0  # the same input, the same text


@pytest.mark.parametrize("name", ["patchlab", "autograder"])
def test_a_benchmark_of_too_few_rounds_is_refused(name: str, tmp_path: Path, capsys) -> None:
    bench = tmp_path / "bench"
    shutil.copytree(ROOT / "bench", bench)
    data = json.loads((bench / f"{name}.json").read_text())
    (bench / f"{name}.json").write_text(json.dumps({**data, "rounds": summary_tool.MIN_ROUNDS - 1}))
    assert summary_tool.main(["--bench", str(bench), "--check"]) == 2
    assert f"{summary_tool.MIN_ROUNDS - 1} rounds; the page needs {summary_tool.MIN_ROUNDS}" in capsys.readouterr().err


def test_a_page_measured_too_few_times_is_flagged_and_one_never_measured_listed() -> None:
    robust = summary_tool.ROBUST_RUNS
    runs = {"book/welcome.ipynb": [run([(10.0, 12.0)])] * (robust - 1),
            "book/ioi_task.ipynb": [run([(10.0, 12.0)])] * robust}
    text = summary_tool.notebooks_summary(record(runs))
    assert f"| `book/welcome` | {robust - 1} ⚠ |" in text and f"| `book/ioi_task` | {robust} |" in text
    assert f"⚠ Measured fewer than {robust} times, so a busy moment may be in the figure: `book/welcome` (" in text
    missing = text.split("Not measured yet (their runtime notes say so): ")[1].split(".\n")[0]
    assert "`book/residual_patching`" in missing and "`solutions/attention_heads`" in missing
    assert "welcome" not in missing and "ioi_task" not in missing


def test_page_costs_are_medians_of_the_runs_and_the_slowest_cell_by_cpu() -> None:
    cells = [[(1.0, 2.0), (30.0, 50.0), (5.0, 9.0)], [(2.0, 3.0), (20.0, 25.0), (6.0, 70.0)],
             [(1.5, 2.5), (40.0, 45.0), (4.0, 8.0)]]
    pages = summary_tool.page_costs(record({"solutions/x/x.ipynb": [run(c) for c in cells]})["setups"]["gpt2-small"])
    page = pages["solutions/x/x.ipynb"]
    assert page["cpu_s"] == statistics.median([sum(c for c, _ in r) for r in cells]) == 36.0
    assert page["wall_s"] == statistics.median([sum(w for _, w in r) for r in cells]) == 61.0
    assert page["cpu_range"] == [28.0, 45.5] and page["runs"] == 3 and page["load"] == [1.0, 3.0]
    # cell 2 has the most CPU (median 30) though cell 3 once took the longest wall time (70 s)
    assert page["slowest_cell"] == {"label": "cell 1", "cpu_s": 30.0, "wall_s": 45.0, "number": 2}
    assert summary_tool.page_key("solutions/x/x.ipynb") == "solutions/x"
    assert summary_tool.page_key("book/x.ipynb") == "book/x"
    changed = [run(cells[0]), run(cells[1][:2])]
    with pytest.raises(summary_tool.BenchError, match="the notebook changed between runs"):
        summary_tool.page_costs(record({"book/x.ipynb": changed})["setups"]["gpt2-small"])


def test_explorable_figures_are_set_against_their_budget_and_the_bound_for_any_weights() -> None:
    record = json.loads((ROOT / "bench" / "explore.json").read_text())
    record["source"] = "bench/explore.json"
    head = record["figures"]["head_out"]
    text = summary_tool.explore_summary(record)
    assert f"| `head_out` | {head['cells']} of {head['total']} | {head['tokens']} | {head['patterns']} | " \
           f"{head['bytes'] / 1000:.0f} | {head['bound_bytes'] / 1000:.0f} |" in text
    assert "Within the budget even then." in text and "Over the budget" not in text
    # a figure that the bound puts over the budget is named
    record["budget_bytes"] = min(f["bound_bytes"] for f in record["figures"].values()) - 1
    names = ", ".join(f"`{name}`" for name in record["figures"])
    assert f"**Over the budget in that case: {names}.**" in summary_tool.explore_summary(record)


def test_the_bound_for_any_weights_makes_every_top_token_another_and_every_number_longest() -> None:
    explore_tool = load_module("measure_explore", "tools/measure_explore.py")
    data = {"tokens": ["a", "b"], "z": [[0.5]], "heads": {"0,0": {"clean": [[1.0, 0.0]]}},
            "runs": {"clean": {"ld": [1.0], "top": [[[0, 0.5], [1, 0.5]]]}},
            "cells": {"0,0": {"m": 0.5, "ld": [2.0], "top": [[[0, 1.0], [0, 0.0]]]}}}
    out = explore_tool.filled(data, 3.4)
    indices = [t for r in (*out["runs"].values(), *out["cells"].values()) for row in r["top"] for t, _ in row]
    assert sorted(indices) == [2, 3, 4, 5] and out["tokens"] == ["a", "b", "xxx", "xxx", "xxx", "xxx"]
    assert out["cells"]["0,0"]["m"] == -0.1234 and out["runs"]["clean"]["ld"] == [-12.345]
    assert out["heads"]["0,0"]["clean"] == [[0.12, 0.12]] and out["z"] == [[-0.1234]]
    assert data["tokens"] == ["a", "b"], "the figure's own data is left as it was"


def test_measure_times_each_cell_in_the_kernel_wall_and_cpu_apart(tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# not timed"),
        nbformat.v4.new_code_cell("print('using ioi-mini')\nimport time\ntime.sleep(1.0)  # waits: wall, no CPU"),
        nbformat.v4.new_code_cell("# busy: CPU\nimport time\nt = time.process_time()\n"
                                  "while time.process_time() - t < 0.5:\n    pass"),
    ])
    path = tmp_path / "timed.ipynb"
    nbformat.write(nb, path)
    result = measure_tool.run_notebook(str(path), measure_tool.environment("ioi-mini", 1, None))
    sleep, busy = result["cells"]
    assert sleep["label"] == "print('using ioi-mini')" and busy["label"] == "# busy: CPU"
    assert sleep["wall"] >= 1.0 and sleep["cpu"] < 0.5
    assert busy["cpu"] >= 0.5 and busy["wall"] >= busy["cpu"] * 0.9
    out = tmp_path / "bench.json"
    for _ in range(2):
        measure_tool.append_run(out, "ioi-mini", {"threads": 1}, "timed.ipynb", result)
    saved = json.loads(out.read_text())
    assert saved["setups"]["ioi-mini"]["threads"] == 1 and saved["setups"]["ioi-mini"]["notebooks"]["timed.ipynb"] == [
        result, result]
    nb.cells[1].source = "print('using another model')"
    nbformat.write(nb, path)
    with pytest.raises(RuntimeError, match="did not say it ran on ioi-mini"):
        measure_tool.run_notebook(str(path), measure_tool.environment("ioi-mini", 1, None))
