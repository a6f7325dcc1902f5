"""The learner's runtime helpers: the device note of the chapters' first cells, progress bars on stdout."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from patchlab.runtime import COLAB_GPU_ADVICE, progress, runtime_note

ROOT = Path(__file__).resolve().parents[2]


def fake_model(n_params: int, device: str = "cpu") -> SimpleNamespace:
    weights = torch.zeros(1).expand(n_params)  # a view: no memory for the parameters
    return SimpleNamespace(cfg=SimpleNamespace(device=device), parameters=lambda: iter([weights]))


def test_progress_writes_to_stdout_only(capsys) -> None:
    assert list(progress(range(3), desc="cells")) == [0, 1, 2]
    out, err = capsys.readouterr()
    assert err == "" and "cells" in out and "3/3" in out


def test_a_gpt2_sized_model_on_cpu_gets_the_cost_and_the_way_to_a_gpu() -> None:
    note = runtime_note(fake_model(124_439_808), cpu_minutes=4, slow_cells="the patching loop")
    assert note.splitlines()[0] == "Running on CPU."
    assert "about 4 minutes with GPT-2 small" in note and "the patching loop" in note
    assert COLAB_GPU_ADVICE in note
    quick = runtime_note(fake_model(124_439_808), cpu_minutes=1)
    assert "about a minute with GPT-2 small" in quick and "no GPU needed" in quick and COLAB_GPU_ADVICE not in quick


def test_the_course_model_on_cpu_needs_no_advice(model) -> None:
    assert runtime_note(model, cpu_minutes=4, slow_cells="the patching loop") == "Running on CPU."


def test_on_a_gpu_only_the_device_is_named(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    note = runtime_note(fake_model(124_439_808, "cuda"), cpu_minutes=4, slow_cells="the patching loop")
    assert note == "Running on GPU (Tesla T4)."


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
