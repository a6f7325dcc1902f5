"""The learner's runtime: which device runs the model, what the slow cells cost there, progress bars.

Progress bars go to stdout: graded notebook cells must leave stderr empty, and tqdm's default is
stderr.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Iterable, TypeVar

import torch
from tqdm.std import tqdm

if TYPE_CHECKING:
    from patchlab.types import Model

T = TypeVar("T")

# Models at least this large (parameters) are slow on a CPU: GPT-2 small has 124 M, ioi-mini 0.83 M.
SLOW_ON_CPU_PARAMS = 50_000_000
COLAB_GPU_ADVICE = ("In Colab: Runtime > Change runtime type > T4 GPU, then Runtime > Run all "
                    "(the free GPU runs these cells in seconds).")


def progress(iterable: Iterable[T], desc: str | None = None, total: int | None = None,
             disable: bool = False) -> Iterable[T]:
    """``iterable`` with a tqdm progress bar on stdout (never stderr), updated at most once a second."""
    return tqdm(iterable, desc=desc, total=total, disable=disable, file=sys.stdout, mininterval=1.0,
                dynamic_ncols=True)


def device_name(device: torch.device | str) -> str:
    """A readable name of ``device``: the GPU's model for CUDA, else the device type."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return f"GPU ({torch.cuda.get_device_name(device)})"
    return "CPU" if device.type == "cpu" else device.type


def runtime_note(model: Model, cpu_minutes: float, slow_cells: str | None = None) -> str:
    """Which device runs ``model``, and on a CPU with a GPT-2-sized model, what the page costs there.

    ``cpu_minutes``: how long the page's code takes with GPT-2 small on one CPU core, measured;
    ``slow_cells``: which cells take most of it (``None``: no cell is slow, no GPU is needed).
    """
    device = torch.device(model.cfg.device or "cpu")
    n_params = sum(p.numel() for p in model.parameters())
    lines = [f"Running on {device_name(device)}."]
    if device.type == "cpu" and n_params >= SLOW_ON_CPU_PARAMS:
        duration = "a minute" if cpu_minutes <= 1 else f"{cpu_minutes:g} minutes"
        cost = f"On a CPU this page takes about {duration} with GPT-2 small (measured on one core)"
        if slow_cells is None:
            lines.append(f"{cost}; no GPU needed.")
        else:
            lines.append(f"{cost}, most of it in {slow_cells}. {COLAB_GPU_ADVICE}")
    return "\n".join(lines)
