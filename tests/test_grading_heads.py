"""End to end: the attention_heads fixtures graded by `python -m autograder grade` in bubblewrap (a
module of its own, so that a second pytest worker grades it beside tests/test_autograder.py)."""

from __future__ import annotations

import pytest

from grading import LIMITS, check_no_leaks, check_submission, fixtures, grade, needs_sandbox, snapshot, write_groups

ASSIGNMENT = "attention_heads"
pytestmark = [pytest.mark.slow, needs_sandbox]


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    base = tmp_path_factory.mktemp(ASSIGNMENT)
    folder = write_groups(base, [ASSIGNMENT])[ASSIGNMENT]
    before = snapshot(folder)
    grade(folder, ASSIGNMENT, base / "out", *LIMITS)
    return {"out": base / "out", "before": before, "after": snapshot(folder)}


@pytest.mark.parametrize("fixture", fixtures.GROUPS[ASSIGNMENT], ids=lambda f: f.name)
def test_each_submission_gets_its_grade_status_and_diagnosis(graded, fixture):
    check_submission(graded["out"], fixture)


def test_submitted_files_are_never_changed(graded):
    assert graded["after"] == graded["before"]


def test_no_feedback_page_holds_hidden_test_source(graded):
    check_no_leaks(ASSIGNMENT, [graded["out"]])
