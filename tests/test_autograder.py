"""End to end: `python -m autograder grade` on the submission fixtures of tests/fixtures/submissions.

The fixtures are graded in four groups (two grading runs at a time, on ioi-mini):
logit_difference, residual_patching, an endless loop with a short cell timeout, and a
residual_patching group graded, given a manual grade, reported again (--no-run) and regraded.
The tests then read grades.csv and the feedback pages. The fast tests at the end check the grading
executor, the released notebooks and that they are current.
"""

from __future__ import annotations

import csv
import html
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from autograder.diagnose import MESSAGES
from autograder.feedback import hidden_test_lines, leaks

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("submission_fixtures", ROOT / "tests/fixtures/submissions/build.py")
fixtures = sys.modules["submission_fixtures"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fixtures)

ENV = {**os.environ, "PATCHLAB_MODEL": "ioi-mini"}
# Generous limits for the ordinary runs (CI machines are slow and shared); short ones for the loop.
LIMITS = ("--cell-timeout", "180", "--notebook-timeout", "600")
SHORT_LIMITS = ("--cell-timeout", "15", "--notebook-timeout", "90")


def autograder(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "autograder", *map(str, args)]


def finished(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=1500)
    assert proc.returncode == 0, out
    return out


def grade(submissions: Path, assignment: str, out: Path, *options: str) -> subprocess.Popen:
    return subprocess.Popen(autograder("grade", submissions, "--assignment", assignment, "--out", out, *options),
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def read_grades(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "grades.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["student", "score", "max_score", "status"]
    return {row["student"]: row for row in rows}


def page_text(page: Path | str) -> str:
    """A feedback page (a file, or its HTML) as plain text, whitespace collapsed."""
    page = page.read_text(encoding="utf-8") if isinstance(page, Path) else page
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Every group graded; for the rerun group, the results of each of its three runs."""
    base = tmp_path_factory.mktemp("autograder")
    folders = {}
    for group, group_fixtures in fixtures.GROUPS.items():
        folders[group] = base / "submissions" / group
        fixtures.write(group_fixtures, folders[group])
    submitted = {path: path.read_bytes() for folder in folders.values() for path in folder.iterdir()}
    out = {group: base / "out" / group for group in folders}

    # Two grading runs at a time: residual_patching alone, the other groups one after the other.
    residual = grade(folders["residual_patching"], "residual_patching", out["residual_patching"], *LIMITS)
    finished(grade(folders["logit_difference"], "logit_difference", out["logit_difference"], *LIMITS))
    finished(grade(folders["logit_difference_endless"], "logit_difference", out["logit_difference_endless"],
                   *SHORT_LIMITS))
    rerun, rerun_out = folders["residual_rerun"], out["residual_rerun"]
    finished(grade(rerun, "residual_patching", rerun_out, *LIMITS))
    runs = {"first": read_grades(rerun_out)}
    first_feedback = (rerun_out / "feedback" / "untouched.html").read_text(encoding="utf-8")
    scored = subprocess.run(autograder("score", rerun_out, "--assignment", "residual_patching", "--student",
                                       "answered", "--cell", "interpretation", "--points", "1.5", "--comment",
                                       "Good, but name the heads."), env=ENV, capture_output=True, text=True)
    assert scored.returncode == 0, scored.stderr
    finished(grade(rerun, "residual_patching", rerun_out, "--no-run"))
    runs["reported"] = read_grades(rerun_out)
    finished(grade(rerun, "residual_patching", rerun_out, *LIMITS))
    runs["regraded"] = read_grades(rerun_out)
    runs["feedback"] = (first_feedback, (rerun_out / "feedback" / "untouched.html").read_text(encoding="utf-8"))
    finished(residual)
    return {"folders": folders, "out": out, "submitted": submitted, "rerun": runs}


ONCE = [(group, f) for group in ("logit_difference", "logit_difference_endless", "residual_patching")
        for f in fixtures.GROUPS[group]]


@pytest.mark.slow
@pytest.mark.parametrize("group, fixture", ONCE, ids=[f"{g}-{f.name}" for g, f in ONCE])
def test_each_submission_gets_its_grade_status_and_diagnosis(graded, group, fixture):
    row = read_grades(graded["out"][group])[fixture.name]
    assert row["status"] == fixture.status
    expected = "" if fixture.score is None else f"{fixture.score:g}"
    assert row["score"] == expected, "a crashed or timed-out notebook must not look like an ordinary 0"
    assert float(row["max_score"]) == (5 if fixture.assignment == "logit_difference" else 8)
    text = page_text(graded["out"][group] / "feedback" / f"{fixture.name}.html")
    for name in fixture.diagnoses:
        assert " ".join(MESSAGES[name].split()) in text, f"diagnosis {name!r} missing from the feedback"
    if fixture.status in ("graded", "needs_manual_grade"):
        assert "Score" in text  # nbgrader's own feedback page, with the scores


@pytest.mark.slow
def test_wrong_submissions_get_partial_marks(graded):
    for group in ("logit_difference", "residual_patching"):
        rows = read_grades(graded["out"][group])
        for fixture in fixtures.GROUPS[group]:
            if fixture.diagnoses:
                assert 0 < float(rows[fixture.name]["score"]) < float(rows[fixture.name]["max_score"])


@pytest.mark.slow
def test_submitted_files_are_never_changed(graded):
    for path, content in graded["submitted"].items():
        assert path.read_bytes() == content, path
    assert {p for folder in graded["folders"].values() for p in folder.iterdir()} == set(graded["submitted"])


@pytest.mark.slow
def test_no_feedback_page_holds_hidden_test_source(graded):
    for assignment in ("logit_difference", "residual_patching"):
        hidden = hidden_test_lines(nbformat.read(ROOT / "solutions" / assignment / f"{assignment}.ipynb", 4))
        assert hidden
        for group, out in graded["out"].items():
            if not group.startswith(assignment):
                continue
            pages = sorted((out / "feedback").glob("*.html"))
            assert len(pages) == len(list(graded["folders"][group].glob("*.ipynb")))  # one per learner
            for page in pages:
                assert leaks(page.read_text(encoding="utf-8"), hidden) == [], page
    # The snooping learner printed the hidden test calling it; the feedback shows a placeholder.
    snooped = page_text(graded["out"]["logit_difference"] / "feedback" / "unnormalised.html")
    assert "[line of a hidden test removed]" in snooped


@pytest.mark.slow
def test_kernel_death_and_endless_loop_are_named(graded):
    lines = (graded["out"]["logit_difference"] / "grading.log").read_text(encoding="utf-8")
    assert re.search(r"kills_kernel: crashed .*the kernel died in cell \d+", lines)
    page = page_text(graded["out"]["logit_difference_endless"] / "feedback" / "endless_loop.html")
    assert "CellTimeoutError" in page or "NotebookTimeoutError" in page


@pytest.mark.slow
def test_manual_grades_survive_regrading_and_reruns_agree(graded):
    runs = graded["rerun"]
    assert runs["first"]["answered"] == {"student": "answered", "score": "6", "max_score": "8",
                                         "status": "needs_manual_grade"}
    assert runs["reported"]["answered"] == {"student": "answered", "score": "7.5", "max_score": "8",
                                            "status": "graded"}
    assert runs["regraded"] == runs["reported"]
    assert runs["first"]["untouched"] == runs["regraded"]["untouched"] == {
        "student": "untouched", "score": "0", "max_score": "8", "status": "graded"}
    first, again = runs["feedback"]
    assert page_text(first) == page_text(again)
    answered = page_text(graded["out"]["residual_rerun"] / "feedback" / "answered.html")
    assert "Good, but name the heads." in answered


def test_grade_refuses_an_output_folder_inside_the_submissions(tmp_path):
    (tmp_path / "learner.ipynb").write_text("{}", encoding="utf-8")
    proc = subprocess.run(autograder("grade", tmp_path, "--assignment", "logit_difference", "--out",
                                     tmp_path / "out"), env=ENV, capture_output=True, text=True)
    assert proc.returncode == 2 and "outside the submissions folder" in proc.stderr
    assert not (tmp_path / "out").exists()


def run_guarded(sources: list[str], notebook_timeout: int) -> nbformat.NotebookNode:
    """Execute a small notebook (no model) with the grading executor."""
    from autograder.execute import GuardedExecute

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    GuardedExecute(timeout=60, notebook_timeout=notebook_timeout).preprocess(nb, {"metadata": {"path": "."}})
    return nb


def errors(cell: nbformat.NotebookNode) -> list[str]:
    return [out.ename for out in cell.outputs if out.output_type == "error"]


def test_notebook_time_limit_cuts_the_running_cell_and_skips_the_rest():
    from autograder.grade import run_status

    nb = run_guarded(["import time", "time.sleep(60)", "x = 1"], notebook_timeout=12)
    assert errors(nb.cells[0]) == []
    assert "CellTimeoutError" in errors(nb.cells[1])  # after the KeyboardInterrupt that stopped it
    assert errors(nb.cells[2]) == ["NotebookTimeoutError"]
    assert run_status(nb) == ("timed_out", "time limit hit in cell 1")


def test_a_dead_kernel_is_recorded_and_the_rest_skipped():
    from autograder.grade import run_status

    nb = run_guarded(["x = 1", "import os\nos.kill(os.getpid(), 9)", "y = 2"], notebook_timeout=60)
    assert errors(nb.cells[0]) == []
    assert errors(nb.cells[1]) == errors(nb.cells[2]) == ["DeadKernelError"]
    assert run_status(nb) == ("crashed", "the kernel died in cell 1")


def test_released_notebooks_hold_no_solution_and_no_hidden_test():
    for assignment in ("logit_difference", "residual_patching"):
        source = nbformat.read(ROOT / "solutions" / assignment / f"{assignment}.ipynb", 4)
        released = (ROOT / "exercises" / assignment / f"{assignment}.ipynb").read_text(encoding="utf-8")
        for marker in ("BEGIN SOLUTION", "HIDDEN TESTS", "MARK SCHEME", "autograder"):
            assert marker not in released, (assignment, marker)
        assert leaks(released, hidden_test_lines(source)) == []
        solved = [line.strip() for cell in source.cells for line in
                  cell.source.split("### BEGIN SOLUTION")[-1].split("### END SOLUTION")[0].splitlines()
                  if "### BEGIN SOLUTION" in cell.source and len(line.strip()) > 12]
        code = "\n".join(c.source for c in nbformat.reads(released, 4).cells if c.cell_type == "code")
        assert solved and [line for line in solved if line in code] == [], assignment
        assert not list((ROOT / "exercises" / assignment).glob("*.md"))


def test_committed_exercises_are_a_fresh_release():
    proc = subprocess.run(autograder("release", "--check"), env=ENV, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
