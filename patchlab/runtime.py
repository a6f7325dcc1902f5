"""The learner's runtime: which device runs the model, what the slow cells cost there, progress bars.

Progress bars go to stdout: graded notebook cells must leave stderr empty, and tqdm's default is
stderr.
"""

from __future__ import annotations

import json
import sys
from importlib import resources
from typing import TYPE_CHECKING, Any, Iterable, NamedTuple, TypeVar

import torch
from tqdm.std import tqdm

from patchlab.ioi import IOIData, classic_ioi
from patchlab.metrics import PatchingMetric, metric_from_runs
from patchlab.models import load_model

if TYPE_CHECKING:
    from patchlab.types import Model

T = TypeVar("T")

# Models at least this large (parameters) are slow on a CPU: GPT-2 small has 124 M, ioi-mini 0.83 M.
SLOW_ON_CPU_PARAMS = 50_000_000
COLAB_GPU_ADVICE = (
    "In Colab: Runtime > Change runtime type > T4 GPU, then Runtime > Run all "
    "(the free GPU runs these cells in seconds)."
)


def progress(
    iterable: Iterable[T], desc: str | None = None, total: int | None = None, disable: bool = False
) -> Iterable[T]:
    """``iterable`` with a tqdm progress bar on stdout (never stderr), updated at most once a second."""
    return tqdm(iterable, desc=desc, total=total, disable=disable, file=sys.stdout, mininterval=1.0, dynamic_ncols=True)


def device_name(device: torch.device | str) -> str:
    """A readable name of ``device``: the GPU's model for CUDA, else the device type."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return f"GPU ({torch.cuda.get_device_name(device)})"
    return "CPU" if device.type == "cpu" else device.type


COSTS = "costs.json"  # patchlab/data/: written by tools/bench_summary.py from bench/notebooks.json


def page_cost(page: str) -> dict[str, Any]:
    """The measured cost of ``page`` (``book/NAME`` or ``solutions/NAME``) with GPT-2 small on a CPU,
    and how it was measured, from the package's ``data/costs.json``."""
    costs = json.loads(resources.files("patchlab").joinpath("data").joinpath(COSTS).read_text(encoding="utf-8"))
    if page not in costs["pages"]:
        raise KeyError(f"no measured cost for {page!r}: run tools/measure_notebooks.py, then tools/bench_summary.py")
    return {**costs["pages"][page], "measured": costs["measured"]}


def _minutes(seconds: float) -> str:
    return "under a minute" if seconds < 60 else f"{round(seconds / 60, 1 if seconds < 600 else 0):g} minutes"


def cost_sentence(page: str) -> str:
    """What ``page`` costs with GPT-2 small on a CPU, where it was measured and how another CPU changes it."""
    cost = page_cost(page)
    how = cost["measured"]
    runs = f"median of {cost['runs']} runs" if cost["runs"] > 1 else "one run"
    return (
        f"On a CPU this page needs about {_minutes(cost['cpu_s'])} of processor time with GPT-2 small, "
        f"{cost['slowest_cell']['cpu_s']:.0f} s of it in its slowest cell ({runs} with {how['threads']} threads on "
        f"{how['machine']}, {how['date']}). "
        "On a quiet 2-core CPU you wait about that long or less; a busy machine stretches the wait by about "
        f"its load over its cores (here, at load {how['load']}, it took {_minutes(cost['wall_s'])}); Colab's "
        "free CPU runtime (2 virtual cores) should take about as long to twice as long (not measured there)."
    )


def slow_on_cpu(model: Model) -> bool:
    """Whether ``model`` runs on a CPU and is GPT-2-sized, where a page skips work too slow for it."""
    n_params = sum(p.numel() for p in model.parameters())
    return torch.device(model.cfg.device or "cpu").type == "cpu" and n_params >= SLOW_ON_CPU_PARAMS


class CheckRuns(NamedTuple):
    """What a notebook's local check runs a learner's loop on: a model, its prompts and their metric."""

    model: Model
    data: IOIData
    metric: PatchingMetric


def check_runs(model: Model, data: IOIData, metric: PatchingMetric) -> CheckRuns:
    """``model``, ``data`` and ``metric``; with GPT-2 small on a CPU (:func:`slow_on_cpu`), the course
    model ``ioi-mini`` on the classic prompts instead, where a loop of one run per head takes seconds,
    not many minutes. The hidden tests grade on both models whichever this returns."""
    if not slow_on_cpu(model):
        return CheckRuns(model, data, metric)
    course = load_model("ioi-mini", device="cpu", verbose=False)
    course_data = classic_ioi(course)
    with torch.no_grad():
        clean_logits, corrupted_logits = course(course_data.clean_tokens), course(course_data.corrupted_tokens)
    return CheckRuns(course, course_data, metric_from_runs(clean_logits, corrupted_logits, course_data.answer_tokens))


def runtime_note(model: Model, page: str, slow_cells: str | None = None) -> str:
    """Which device runs ``model``, and on a CPU with a GPT-2-sized model, what ``page`` costs there.

    ``page``: ``book/NAME`` or ``solutions/NAME``, whose cost was measured (:func:`page_cost`);
    ``slow_cells``: which cells take most of it (``None``: no cell is slow, no GPU is needed).
    """
    lines = [f"Running on {device_name(torch.device(model.cfg.device or 'cpu'))}."]
    if slow_on_cpu(model):
        try:
            cost = cost_sentence(page)
        except KeyError:  # a page added since the last measurement: no figure rather than a crash
            cost = "On a CPU with GPT-2 small this page's cost has not been measured yet."
        if slow_cells is None:
            lines.append(f"{cost} No GPU needed.")
        else:
            lines.append(f"{cost} Most of it goes to {slow_cells}. {COLAB_GPU_ADVICE}")
    return "\n".join(lines)
