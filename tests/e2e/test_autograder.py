"""End to end: `python -m autograder grade` on the submission fixtures, through the real sandbox.

The fixtures (tests/fixtures/submissions/build.py) are graded in three runs (`--jobs 2`, bubblewrap):
logit_difference (with entries that must be skipped, and a relative --out), residual_patching, and an
endless loop with a short cell timeout. The other assignments are graded in
tests/e2e/test_grading_assignments.py; a term of one class (hand scores, --no-run, regrading, late
work, a changed answer) in tests/e2e/test_grading_term.py; the lifecycle of a run (interruptions, held
folders, bad options) in tests/e2e/test_grading_lifecycle.py; the hostile submissions in
tests/e2e/test_grading_attacks.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import nbformat
import pytest

from autograder.feedback import hidden_test_lines, leaks
from grading import ENV, ROOT, autograder, grade, page_text, read_grades, snapshot  # tests/grading.py
from grading import HAS_BWRAP, LIMITS, MAX_SCORES, check_no_leaks, check_submission, fixtures, needs_sandbox, write_groups

GROUPS = ("logit_difference", "logit_difference_endless", "residual_patching")

# The endless loop's cell is stopped after 60 s; the set-up cell must fit in that too, on a loaded machine.
SHORT_LIMITS = ("--cell-timeout", "60", "--notebook-timeout", "300")


def add_entries_to_skip(folder: Path) -> None:
    (folder / "notes.txt").write_text("my notes", encoding="utf-8")
    (folder / "nested").mkdir()
    shutil.copy(ROOT / "exercises/logit_difference/logit_difference.ipynb", folder / "nested" / "hidden.ipynb")
    (folder / "outside.ipynb").symlink_to("/etc/passwd")
    (folder / "-dash.ipynb").write_text("{}", encoding="utf-8")


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Every group graded, with the submissions folders before and after."""
    if not HAS_BWRAP and not os.environ.get("CI"):
        pytest.skip("bubblewrap is not installed")
    base = tmp_path_factory.mktemp("autograder")
    folders = write_groups(base, list(GROUPS))
    add_entries_to_skip(folders["logit_difference"])
    before = {group: snapshot(folder) for group, folder in folders.items()}
    out = {group: base / "out" / group for group in folders}

    # Relative paths, as the instructors' guide prints them.
    grade(Path("submissions/logit_difference"), "logit_difference", Path("out/logit_difference"), *LIMITS, cwd=base)
    grade(folders["residual_patching"], "residual_patching", out["residual_patching"], *LIMITS)
    grade(folders["logit_difference_endless"], "logit_difference", out["logit_difference_endless"], *SHORT_LIMITS)

    after = {group: snapshot(folder) for group, folder in folders.items()}
    return {"folders": folders, "out": out, "before": before, "after": after}


ONCE = [(group, f) for group in GROUPS for f in fixtures.GROUPS[group]]


@pytest.mark.slow
@needs_sandbox
@pytest.mark.parametrize("group, fixture", ONCE, ids=[f"{g}-{f.name}" for g, f in ONCE])
def test_each_submission_gets_its_grade_status_and_diagnosis(graded, group, fixture):
    check_submission(graded["out"][group], fixture)


@pytest.mark.slow
@needs_sandbox
def test_every_entry_that_is_not_graded_gets_a_skipped_row(graded):
    rows = read_grades(graded["out"]["logit_difference"])  # a name a spreadsheet would compute starts with '
    for name, reason in (("notes.txt", "not a notebook"), ("nested", "a folder"),
                         ("outside.ipynb", "symbolic link"), ("'-dash.ipynb", "learner id")):
        assert rows[name]["status"] == "skipped" and reason in rows[name]["detail"], rows[name]
    pages = " ".join(p.read_text(encoding="utf-8") for p in (graded["out"]["logit_difference"] / "feedback").iterdir())
    assert "root:x:0:0" not in pages


@pytest.mark.slow
@needs_sandbox
def test_the_run_records_its_sandbox(graded):
    record = (graded["out"]["logit_difference"] / "run.json").read_text(encoding="utf-8")
    assert '"sandbox": "bwrap"' in record and '"ioi-mini-reshaped"' in record


@pytest.mark.slow
@needs_sandbox
def test_submitted_files_are_never_changed(graded):
    for group in GROUPS:
        assert graded["after"][group] == graded["before"][group], group


@pytest.mark.slow
@needs_sandbox
def test_no_feedback_page_holds_hidden_test_source(graded):
    for assignment in ("logit_difference", "residual_patching"):
        check_no_leaks(assignment, [out for group, out in graded["out"].items() if group.startswith(assignment)])


@pytest.mark.slow
@needs_sandbox
def test_a_stuck_cell_is_interrupted_and_named(graded):
    page = page_text(graded["out"]["logit_difference_endless"] / "feedback" / "endless_loop.html")
    assert "CellTimeoutError" in page
    detail = read_grades(graded["out"]["logit_difference_endless"])["endless_loop"]["detail"]
    assert "(4.2 Mean logit difference) stopped by the cell time limit (--cell-timeout)" in detail, detail


# --- the release --------------------------------------------------------------------------------

def test_released_notebooks_hold_no_solution_and_no_hidden_test():
    for assignment in MAX_SCORES:
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
