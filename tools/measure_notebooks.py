"""Measure what every chapter and every exercise solution costs, cell by cell, in interleaved rounds.

    python tools/measure_notebooks.py --hub DIR [--rounds 3] [--threads 2] [--only NAME ...]
                                      [--model gpt2-small|ioi-mini] [--out bench/notebooks.json]

Each round executes every notebook once (the chapters of ``book/``, then ``solutions/*/*.ipynb``,
by name; the order rotated by one notebook each round, :mod:`patchlab_dev.rounds`) in a
fresh kernel, and records for each code cell its wall seconds and the kernel's CPU seconds (process
user + sys, all threads), with the threads, the OpenMP policy, the date and the load average before
and after the run. ``gpt2-small`` runs GPT-2 small's offline cache (``tools/gpt2_offline.py build DIR
--shape full``: GPT-2 small's size, random weights; give ``--hub`` the ``.../full/hub`` folder it
prints); ``ioi-mini`` the course model. Each run is appended to ``--out`` as soon as it ends, so an
interrupted measurement keeps what it measured and a later call (``--only`` the slow notebooks, say)
adds rounds. ``python tools/bench_summary.py`` turns the file into the runtime notes and the measurements page.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import sys
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

import gpt2_offline  # noqa: E402  (tools/gpt2_offline.py)
import notebooks as notebook_sync  # noqa: E402  (tools/notebooks.py)
from patchlab_dev import rounds as timing  # noqa: E402

MODELS = ("gpt2-small", "ioi-mini")
# Cells added around each notebook: each code cell's CPU seconds (the kernel's user + sys, all its
# threads) and wall seconds, recorded in the kernel; removed before anything is read from the notebook.
TIMER_SETUP = """
import time as _t
_cells = []
get_ipython().events.register("pre_run_cell", lambda *a: _cells.append(("pre", _t.process_time(), _t.perf_counter())))
get_ipython().events.register("post_run_cell", lambda *a: _cells.append(("post", _t.process_time(), _t.perf_counter())))
"""
TIMER_REPORT = """
import json as _j
print(_j.dumps([[b[1] - a[1], b[2] - a[2]] for a, b in zip(_cells, _cells[1:]) if (a[0], b[0]) == ("pre", "post")]))
"""


def measured_notebooks() -> list[str]:
    """Every chapter that is a notebook, then every exercise solution (paths relative to the
    repository), by name."""
    chapters = [p.with_suffix(".ipynb") for p in notebook_sync.notebook_sources(ROOT, ("book",))]
    return [p.relative_to(ROOT).as_posix() for p in chapters + sorted((ROOT / "solutions").glob("*/*.ipynb"))]


def names(path: str) -> set[str]:
    """What ``--only`` may call a notebook: its stem, or ``book/NAME`` or ``solutions/NAME``."""
    return {Path(path).stem, f"{Path(path).parts[0]}/{Path(path).stem}"}


def cell_label(source: str) -> str:
    """A code cell's first line that says something (a comment or code), for the tables."""
    line = next((s.strip() for s in source.splitlines() if s.strip() and not s.startswith("%")), "")
    return line[:80]


def run_notebook(path: str, env: dict[str, str]) -> dict:
    """Execute ``path`` in a fresh kernel with ``env``; its wall and CPU seconds, per code cell."""
    from nbclient import NotebookClient

    nb = nbformat.read(ROOT / path, as_version=4)
    nb.cells = [nbformat.v4.new_code_cell(TIMER_SETUP), *nb.cells, nbformat.v4.new_code_cell(TIMER_REPORT)]
    saved = dict(os.environ)
    os.environ.update(env)  # the kernel inherits this process's environment
    try:
        load = [round(x, 2) for x in os.getloadavg()]
        start = time.perf_counter()
        NotebookClient(nb, timeout=1800, kernel_name="python3",
                       resources={"metadata": {"path": str((ROOT / path).parent)}}).execute()
        seconds = time.perf_counter() - start
    finally:
        os.environ.clear()
        os.environ.update(saved)
    report = nb.cells.pop()
    nb.cells.pop(0)
    cells = json.loads(report.outputs[0]["text"])
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    if len(cells) != len(code):
        raise RuntimeError(f"{path}: timed {len(cells)} cells of {len(code)}")
    printed = "".join(out.get("text", "") for c in code for out in c.get("outputs", []))
    if env["PATCHLAB_MODEL"] not in printed:
        raise RuntimeError(f"{path} did not say it ran on {env['PATCHLAB_MODEL']}: is the cache right?")
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load_average": load,
            "load_average_after": [round(x, 2) for x in os.getloadavg()], "kernel_wall": round(seconds, 2),
            "cells": [{"label": cell_label(c.source), "cpu": round(cpu, 3), "wall": round(wall, 3)}
                      for c, (cpu, wall) in zip(code, cells)]}


def environment(model: str, threads: int, hub: Path | None) -> dict[str, str]:
    """The kernel's variables: the model, the threads, a passive OpenMP wait policy, this checkout."""
    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": "PASSIVE",
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
           "PATCHLAB_MODEL": model}
    if model == "gpt2-small":
        env.update(gpt2_offline.environment(hub))
    return env


def append_run(out: Path, model: str, setup: dict, path: str, run: dict) -> None:
    """Add ``run`` of ``path`` to the record in ``out`` (created if missing), under a lock, so that two
    measurements may write one file; written through a temporary file, never left half-written."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_name(out.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        record = json.loads(out.read_text(encoding="utf-8")) if out.exists() else {"kind": "notebooks", "setups": {}}
        entry = record["setups"].setdefault(model, {"notebooks": {}})
        entry.update(setup)
        entry["notebooks"].setdefault(path, []).append(run)
        partial = out.with_name(out.name + ".partial")
        partial.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        partial.replace(out)


def measure(model: str, rounds: int, threads: int, only: list[str], hub: Path | None, out: Path) -> None:
    """Run ``rounds`` interleaved rounds of the notebooks; append each run to ``out`` as it ends."""
    paths = measured_notebooks()
    if only:
        unknown = [name for name in only if not any(name in names(p) for p in paths)]
        if unknown:
            raise SystemExit(f"error: no notebook named {', '.join(unknown)}; use NAME, book/NAME or "
                             f"solutions/NAME of: {' '.join(sorted({Path(p).stem for p in paths}))}")
        paths = [p for p in paths if names(p) & set(only)]
    env = environment(model, threads, hub)
    setup = {"threads": threads, "omp_wait_policy": "PASSIVE", "machine": machine(),
             "shape": "full" if model == "gpt2-small" else None}
    print(f"{len(paths)} notebooks × {rounds} rounds on {model}, {threads} threads, OMP_WAIT_POLICY=PASSIVE; "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)

    def task(path: str):
        def run() -> float:
            result = run_notebook(path, env)
            append_run(out, model, setup, path, result)
            return result["kernel_wall"]
        return run

    timing.interleave({p: task(p) for p in paths}, rounds,
                      lambda line: print(f"{time.strftime('%H:%M:%S')} {line}", flush=True))


def machine() -> str:
    """The CPU model and count, from /proc/cpuinfo where there is one."""
    try:
        info = Path("/proc/cpuinfo").read_text()
        name = next(line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        name = "unknown CPU"
    return f"{len(os.sched_getaffinity(0))} × {name}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=MODELS, default="gpt2-small")
    parser.add_argument("--hub", type=Path, help="GPT-2 small's offline cache (.../full/hub); needed for gpt2-small")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", nargs="*", default=[], metavar="NAME", help="notebooks: attention_heads (chapter and solution), book/attention_heads, solutions/attention_heads")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "notebooks.json")
    args = parser.parse_args(argv)
    if args.model == "gpt2-small" and (args.hub is None or not (args.hub / "models--gpt2").is_dir()):
        parser.error("--hub must be the folder printed by: python tools/gpt2_offline.py build DIR --shape full")
    if args.rounds < 1 or args.threads < 1:
        parser.error("--rounds and --threads must be 1 or more")
    measure(args.model, args.rounds, args.threads, args.only, args.hub, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
