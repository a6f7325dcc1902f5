"""Benchmark: seconds per submission when grading a class, one at a time and two at a time.

    python -m autograder bench [--assignment NAME] [--submissions 20]

For each assignment, a class of ``--submissions`` copies of the solution notebook (each a different
learner) is graded exactly as ``python -m autograder grade`` does it, sandbox on (bubblewrap when it is
installed), with ``--jobs 1`` and then ``--jobs 2`` into fresh output folders, and the table printed:
wall seconds for the class, seconds per submission, and the speed-up of two jobs against one measured
in the same run. Nothing is asserted: the numbers are for the README and the instructors' guide.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from autograder.config import assignments
from autograder.grade import grade
from autograder.release import source_notebook

TARGET_SECONDS = 10  # per residual_patching submission with --jobs 2 on 2 CPUs


def bench(assignment: str | None = None, submissions: int = 20, jobs: tuple[int, ...] = (1, 2)) -> dict:
    """Grade a class per assignment with each of ``jobs``; print and return {assignment: {jobs: s/submission}}."""
    kind = "bwrap" if shutil.which("bwrap") else "none"
    print(f"grading {submissions} submissions per assignment on {os.cpu_count()} CPUs, sandbox {kind}, "
          f"model ioi-mini (+ ioi-mini-reshaped); target: {TARGET_SECONDS} s per residual_patching submission "
          "with --jobs 2 on 2 CPUs")
    print("| assignment | --jobs | class (s) | s / submission | speed-up |\n|---|---:|---:|---:|---:|")
    table: dict[str, dict[int, float]] = {}
    for name in [assignment] if assignment else assignments():
        with tempfile.TemporaryDirectory(prefix="autograder-bench-") as tmp:
            folder = Path(tmp) / "submissions"
            folder.mkdir()
            for i in range(submissions):
                shutil.copy(source_notebook(name), folder / f"learner{i:02d}.ipynb")
            table[name] = {}
            for n in jobs:
                start = time.perf_counter()
                grades = grade(folder, name, Path(tmp) / f"out-{n}", sandbox_kind=kind, jobs=n)
                seconds = time.perf_counter() - start
                assert all(g.status in ("graded", "needs_manual_grade") for g in grades), grades
                table[name][n] = seconds / submissions
                speedup = table[name][jobs[0]] / table[name][n]
                print(f"| {name} | {n} | {seconds:.0f} | {table[name][n]:.1f} | {speedup:.2f}x |", flush=True)
    return table
