"""What the grading tests share (test_autograder, test_grading_assignments, test_grading_lifecycle,
test_grading_attacks): ``python -m autograder`` run as an instructor runs it, and readers of what it
writes."""

from __future__ import annotations

import csv
import hashlib
import html
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
# `python -m autograder` runs from the repository (it is not in the installed package), here from a temporary folder.
ENV = {**os.environ, "PATCHLAB_MODEL": "ioi-mini", "OMP_NUM_THREADS": "1",
       "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
HAS_BWRAP = shutil.which("bwrap") is not None
needs_sandbox = pytest.mark.skipif(not HAS_BWRAP and not os.environ.get("CI"),
                                   reason="bubblewrap is not installed (apt-get install bubblewrap)")


def load_module(name: str, relative_path: str) -> ModuleType:
    """A module of the test tree that is not importable by name (the submission fixture builders)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / relative_path)
    module = sys.modules[name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def autograder(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "autograder", *map(str, args)]


def grade(submissions: Path | str, assignment: str, out: Path | str, *options: str, cwd: Path | None = None,
          check: bool = True) -> subprocess.CompletedProcess:
    """``python -m autograder grade`` in bubblewrap; with ``check``, it must succeed."""
    proc = subprocess.run(autograder("grade", submissions, "--assignment", assignment, "--out", out,
                                     "--sandbox", "bwrap", *options), env=ENV, cwd=cwd, capture_output=True,
                          text=True, timeout=2400)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def read_grades(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "grades.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0])[:8] == ["student", "score", "max_score", "status", "detail", "submitted", "late", "penalty"]
    return {row["student"]: row for row in rows}


def page_text(page: Path | str) -> str:
    """A feedback page (a file, or its HTML) as plain text, whitespace collapsed."""
    page = page.read_text(encoding="utf-8") if isinstance(page, Path) else page
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


def snapshot(folder: Path) -> dict[str, str]:
    """Every entry under ``folder`` (links not followed): a file's sha256, a link's target, "dir",
    "special" (a socket or pipe)."""
    found = {}
    for top, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(top, name)
            key = str(path.relative_to(folder))
            if path.is_symlink():
                found[key] = "link " + os.readlink(path)
            elif path.is_dir():
                found[key] = "dir"
            elif path.is_file():
                found[key] = hashlib.sha256(path.read_bytes()).hexdigest()
            else:  # a socket or a pipe (a kernel's, in a run's scratch folder)
                found[key] = "special"
    return found


fixtures = load_module("submission_fixtures", "tests/fixtures/submissions/build.py")
# Grading options of the fixture runs: a loaded 2-core machine takes minutes for some cells.
LIMITS = ("--cell-timeout", "240", "--notebook-timeout", "900", "--jobs", "2")
# Each assignment's points: automatic and manual together.
MAX_SCORES = {"logit_difference": 5, "residual_patching": 8, "attention_heads": 10, "attribution_patching": 8,
              "path_patching": 8, "choosing_corruption": 5}


def write_groups(base: Path, groups: list[str]) -> dict[str, Path]:
    """The fixtures of each group written to ``base/submissions/GROUP``."""
    folders = {group: base / "submissions" / group for group in groups}
    for group, folder in folders.items():
        fixtures.write(fixtures.GROUPS[group], folder)
    return folders


def check_submission(out: Path, fixture: Any) -> None:
    """The grade, status, diagnoses and page a fixture must get in the run that wrote ``out``."""
    from autograder.checks import REGISTRY
    from autograder.checks._check import messages

    told = {name: text for check in REGISTRY.values() for name, text in messages(check).items()}
    row = read_grades(out)[fixture.name]
    assert row["status"] == fixture.status, row
    expected = "" if fixture.score is None else f"{fixture.score:g}"
    assert row["score"] == expected, row
    assert float(row["max_score"]) == MAX_SCORES[fixture.assignment]
    text = page_text(out / "feedback" / f"{fixture.name}.html")
    for name in fixture.diagnoses:
        assert " ".join(told[name].split()) in text, f"diagnosis {name!r} missing from the feedback"
    if fixture.status in ("graded", "needs_manual_grade"):
        assert "Score" in text  # nbgrader's own feedback page, with the scores


def check_no_leaks(assignment: str, outs: list[Path]) -> None:
    """No feedback page of these runs holds a line of the assignment's hidden tests."""
    import nbformat

    from autograder.feedback import hidden_test_lines, leaks

    hidden = hidden_test_lines(nbformat.read(ROOT / "solutions" / assignment / f"{assignment}.ipynb", 4))
    assert hidden
    for out in outs:
        pages = sorted((out / "feedback").glob("*.html"))
        assert pages
        for page in pages:
            assert leaks(page.read_text(encoding="utf-8"), hidden) == [], page
