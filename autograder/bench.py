"""Benchmark: seconds per submission when grading a class, with each ``--jobs``, in interleaved rounds.

    python -m autograder bench [--assignment NAME] [--submissions 8] [--rounds 5] [--out DIR]

For each assignment, a class of ``--submissions`` copies of the solution notebook (each a different
learner) is graded exactly as ``python -m autograder grade`` does it, sandbox on (bubblewrap when it is
installed), with ``--jobs 1`` and ``--jobs 2`` into fresh output folders, once each per round, the two
interleaved (:mod:`patchlab_dev.rounds`). It prints and writes to ``DIR/bench.json`` the median seconds per
submission with its min-max over the rounds, and the speed-up of two jobs against one taken within
each round; a warning when a spread is too wide to trust. Nothing is asserted.
"""

from __future__ import annotations

import itertools
import json
import platform
import shutil
import tempfile
import time
from functools import partial
from pathlib import Path

from patchlab_dev import rounds as timing

from autograder.config import assignments
from autograder.grade import grade
from autograder.release import source_notebook

TARGET_SECONDS = 10  # per residual_patching submission with --jobs 2 on 2 CPUs


def bench(
    assignment: str | None = None,
    submissions: int = 8,
    jobs: tuple[int, ...] = (1, 2),
    rounds: int = timing.DEFAULT_ROUNDS,
    out: Path | None = None,
) -> dict:
    """Grade a class per assignment with each of ``jobs`` in ``rounds`` interleaved rounds; print the
    table and return (and write to ``out/bench.json``) the record."""
    kind = "bwrap" if shutil.which("bwrap") else "none"
    context = timing.run_context()
    print(
        f"grading {submissions} submissions per assignment, {rounds} rounds of --jobs "
        f"{' and '.join(map(str, jobs))} interleaved, sandbox {kind}, model ioi-mini (+ ioi-mini-reshaped); "
        f"{timing.describe_context(context)}; each notebook runs one thread. Target: {TARGET_SECONDS} s per "
        "residual_patching submission with --jobs 2 on 2 CPUs"
    )
    record: dict = {
        "kind": "autograder",
        "sandbox": kind,
        "submissions": submissions,
        "rounds": rounds,
        "context": context,
        "python": platform.python_version(),
        "assignments": {},
        "warnings": [],
    }
    for name in [assignment] if assignment else assignments():
        with tempfile.TemporaryDirectory(prefix="autograder-bench-") as tmp:
            folder = Path(tmp) / "submissions"
            folder.mkdir()
            for i in range(submissions):
                shutil.copy(source_notebook(name), folder / f"learner{i:02d}.ipynb")
            runs = itertools.count()

            def grade_class(n: int) -> float:
                start = time.perf_counter()
                grades = grade(folder, name, Path(tmp) / f"out-{n}-{next(runs)}", sandbox_kind=kind, jobs=n)
                seconds = time.perf_counter() - start
                assert all(g.status in ("graded", "needs_manual_grade") for g in grades), grades
                return seconds / submissions

            samples = timing.interleave(
                {f"--jobs {n}": partial(grade_class, n) for n in jobs},
                rounds,
                lambda line: print(f"  {name} {line} per submission", flush=True),
            )
        rows = {}
        for n in jobs:
            own, peer = samples[f"--jobs {n}"], samples[f"--jobs {jobs[0]}"]
            rows[str(n)] = {"per_submission": timing.summary(own), "speedup": timing.ratio(peer, own)}
            warning = timing.too_wide(f"{name} --jobs {n}", rows[str(n)]["per_submission"])
            if warning:
                record["warnings"].append(warning)
        record["assignments"][name] = rows
    print(format_table(record))
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {out / 'bench.json'}")
    return record


def format_table(record: dict) -> str:
    """Markdown: per assignment and ``--jobs``, the median s/submission, its min-max, the speed-up."""
    lines = [
        f"| assignment | `--jobs` | s / submission (median of {record['rounds']}) | min-max | speed-up [min-max] |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, rows in record["assignments"].items():
        for n, row in rows.items():
            t, s = row["per_submission"], row["speedup"]
            lines.append(
                f"| {name} | {n} | {t['median']:.1f} | {t['min']:.1f}-{t['max']:.1f} | "
                f"{s['median']:.2f}× [{s['min']:.2f}-{s['max']:.2f}] |"
            )
    return "\n".join(lines + record["warnings"])
