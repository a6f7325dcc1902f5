"""The learner's runtime helpers: the device note of the chapters' first cells, progress bars on stdout."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import patchlab
from patchlab.metrics import metric_from_runs
from patchlab.runtime import COLAB_GPU_ADVICE, check_runs, page_cost, progress, runtime_note

ROOT = Path(__file__).resolve().parents[2]


def fake_model(n_params: int, device: str = "cpu") -> SimpleNamespace:
    weights = torch.zeros(1).expand(n_params)  # a view: no memory for the parameters
    return SimpleNamespace(cfg=SimpleNamespace(device=device), parameters=lambda: iter([weights]))


def test_progress_writes_to_stdout_only(capsys) -> None:
    assert list(progress(range(3), desc="cells")) == [0, 1, 2]
    out, err = capsys.readouterr()
    assert err == "" and "cells" in out and "3/3" in out


def test_a_gpt2_sized_model_on_cpu_gets_the_measured_cost_and_the_way_to_a_gpu() -> None:
    costs = json.loads((ROOT / "patchlab" / "data" / "costs.json").read_text())
    page = max(costs["pages"], key=lambda name: costs["pages"][name]["wall_s"])  # the slowest page
    cost = costs["pages"][page]
    note = runtime_note(fake_model(124_439_808), page, slow_cells="the patching loop")
    assert note.splitlines()[0] == "Running on CPU."
    # minutes to a tenth below ten minutes, whole minutes above
    cpu_minutes = float(re.search(r"about ([\d.]+) minutes of processor time with GPT-2 small", note)[1])
    assert abs(cpu_minutes - cost["cpu_s"] / 60) <= (0.05 if cost["cpu_s"] < 600 else 0.5)
    assert f"{cost['slowest_cell']['cpu_s']:.0f} s of it in its slowest cell" in note and "the patching loop" in note
    wall_minutes = float(re.search(r"at load [\d.-]+, it took ([\d.]+) minutes", note)[1])
    assert abs(wall_minutes - cost["wall_s"] / 60) <= (0.05 if cost["wall_s"] < 600 else 0.5)
    assert f"at load {costs['measured']['load']}" in note
    assert costs["measured"]["date"] in note and ("one run" if cost["runs"] == 1 else f"median of {cost['runs']} runs") in note and "Colab" in note
    assert COLAB_GPU_ADVICE in note
    quick = runtime_note(fake_model(124_439_808), page)
    assert "No GPU needed" in quick and COLAB_GPU_ADVICE not in quick


def test_a_page_never_measured_says_so_instead_of_failing() -> None:
    with pytest.raises(KeyError, match="tools/measure_notebooks.py"):
        page_cost("book/no_such_page")
    note = runtime_note(fake_model(124_439_808), "book/no_such_page", slow_cells="the loop")
    assert "cost has not been measured yet" in note and COLAB_GPU_ADVICE in note


def test_the_course_model_on_cpu_needs_no_advice(model) -> None:
    assert runtime_note(model, "book/residual_patching", slow_cells="the patching loop") == "Running on CPU."


def test_on_a_gpu_only_the_device_is_named(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    note = runtime_note(fake_model(124_439_808, "cuda"), "book/residual_patching", slow_cells="the patching loop")
    assert note == "Running on GPU (Tesla T4)."


def test_local_checks_run_on_the_model_itself_unless_it_is_gpt2_sized_on_a_cpu(model) -> None:
    data = patchlab.classic_ioi(model)
    metric = metric_from_runs(model(data.clean_tokens), model(data.corrupted_tokens), data.answer_tokens)
    assert check_runs(model, data, metric) == (model, data, metric)
    on_gpu = fake_model(124_439_808, "cuda")
    assert check_runs(on_gpu, data, metric).model is on_gpu


def test_gpt2_sized_on_a_cpu_checks_run_on_the_course_model_with_its_own_metric(model) -> None:
    checked = check_runs(fake_model(124_439_808), data=None, metric=None)
    assert checked.model.cfg.n_params == model.cfg.n_params and checked.model.cfg.n_layers == model.cfg.n_layers
    assert torch.equal(checked.data.clean_tokens, patchlab.classic_ioi(model).clean_tokens)
    # the metric's baselines are the course model's own clean and corrupted runs: 1 and 0
    assert checked.metric(checked.model(checked.data.clean_tokens)).item() == pytest.approx(1, abs=1e-5)
    assert checked.metric(checked.model(checked.data.corrupted_tokens)).item() == pytest.approx(0, abs=1e-5)


PAGES = sorted([*ROOT.glob("book/*.md"), *ROOT.glob("solutions/*/*.md")])


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_page_says_its_device_and_cost_where_it_loads_the_model(page: Path) -> None:
    """The cell that loads the model also prints ``runtime_note`` (the exercises' notebooks are
    generated from the solutions' sources)."""
    cells = re.findall(r"```\{code-cell\}[^\n]*\n(.*?)```", page.read_text(encoding="utf-8"), re.S)
    loading = [cell for cell in cells if "load_model(" in cell]
    if not loading:
        pytest.skip("loads no model")
    assert "runtime_note(" in loading[0], f"{page.name}: the cell that loads the model prints no runtime_note"
    # ... of this page's own measured cost (patchlab/data/costs.json, generated from bench/notebooks.json;
    # a page not measured yet says so, and the measurements page lists it)
    key = page.with_suffix("").relative_to(ROOT).as_posix() if page.parent.name == "book" else \
        f"solutions/{page.parent.name}"
    names = re.findall(r'runtime_note\(\s*model,\s*"([^"]+)"', loading[0])
    assert names == [key], f"{page.name}: runtime_note(model, {key!r}, ...) names its own page, not {names}"
