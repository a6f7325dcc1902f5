"""Benchmark: the time to grade one submission with the course model (printed, not asserted).

    python -m autograder bench [--assignment NAME]

Grades the solution notebook of each assignment as a learner's submission, exactly as
``python -m autograder grade`` does (fresh gradebook, kernel start, model load, hidden tests,
feedback), and prints the time. The course's target is under 60 seconds on 2 CPUs.
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

TARGET_SECONDS = 60


def bench(assignment: str | None = None) -> dict[str, float]:
    """Grade one submission per assignment; print and return the seconds each took."""
    print(f"grading one submission with the course model ioi-mini on {os.cpu_count()} CPUs "
          f"(target: under {TARGET_SECONDS} s on 2 CPUs)")
    seconds = {}
    for name in [assignment] if assignment else assignments():
        with tempfile.TemporaryDirectory(prefix="autograder-bench-") as tmp:
            submissions = Path(tmp) / "submissions"
            submissions.mkdir()
            shutil.copy(source_notebook(name), submissions / "learner.ipynb")
            start = time.perf_counter()
            (result,) = grade(submissions, name, Path(tmp) / "out")
            total = time.perf_counter() - start
        seconds[name] = result.seconds
        print(f"{name:<20} {result.seconds:6.1f} s for the submission ({total:.1f} s with the gradebook "
              f"set-up); {result.status}, {result.score:g}/{result.max_score:g}; "
              f"{result.seconds / TARGET_SECONDS:.0%} of the target")
    return seconds
