"""End to end: each later assignment's submission fixtures graded by `python -m autograder grade` in
bubblewrap, one class per assignment, so that pytest's workers (``--dist loadscope``) grade them side
by side with tests/e2e/test_autograder.py."""

from __future__ import annotations

import pytest

from grading import LIMITS, check_no_leaks, check_submission, fixtures, grade, needs_sandbox, snapshot, write_groups

pytestmark = [pytest.mark.slow, needs_sandbox]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "fixture" in metafunc.fixturenames:
        group = fixtures.GROUPS[metafunc.cls.assignment]
        metafunc.parametrize("fixture", group, ids=[f.name for f in group])


class GradedAssignment:
    """The fixtures of ``assignment`` graded in one run, checked one by one."""

    assignment: str

    @pytest.fixture(scope="class")
    def graded(self, tmp_path_factory: pytest.TempPathFactory) -> dict:
        base = tmp_path_factory.mktemp(self.assignment)
        folder = write_groups(base, [self.assignment])[self.assignment]
        before = snapshot(folder)
        grade(folder, self.assignment, base / "out", *LIMITS)
        return {"out": base / "out", "before": before, "after": snapshot(folder)}

    def test_each_submission_gets_its_grade_status_and_diagnosis(self, graded: dict, fixture) -> None:
        check_submission(graded["out"], fixture)

    def test_submitted_files_are_never_changed(self, graded: dict) -> None:
        assert graded["after"] == graded["before"]

    def test_no_feedback_page_holds_hidden_test_source(self, graded: dict) -> None:
        check_no_leaks(self.assignment, [graded["out"]])


class TestAttentionHeads(GradedAssignment):
    assignment = "attention_heads"


class TestPathPatching(GradedAssignment):
    assignment = "path_patching"


class TestAttributionPatching(GradedAssignment):
    assignment = "attribution_patching"


class TestChoosingCorruption(GradedAssignment):
    assignment = "choosing_corruption"
