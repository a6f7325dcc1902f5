"""Scores into nbgrader's gradebook (``autograder/record.py``), on a gradebook and graded notebooks
written here: automatic scores from the test cells' outputs, written answers left to grade by hand,
and a hand-given score that counts only while the answer it scored is unchanged."""

from __future__ import annotations

import hashlib
import shutil
from datetime import datetime, timezone
from pathlib import Path

import nbformat
import pytest
from nbformat import NotebookNode
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output
from nbgrader import utils
from nbgrader.api import Gradebook

from autograder import record
from autograder.config import environment

A, LEARNER = "ld", "ada"
STUB = "def mean_logit_diff(logits):\n    raise NotImplementedError\n"
PROMPT = "YOUR ANSWER HERE"


class Refused(Exception):
    pass


def graded_cell(cell: NotebookNode, grade_id: str, released_source: str | None = None, **flags: object) -> NotebookNode:
    """``cell`` with nbgrader metadata; an answer cell carries the checksum of its released (unanswered) form."""
    cell.metadata["nbgrader"] = {"grade_id": grade_id, "grade": False, "solution": False, "locked": False, **flags}
    if released_source is not None:
        released = nbformat.from_dict(dict(cell, source=released_source, metadata=nbformat.from_dict(dict(cell.metadata))))
        cell.metadata.nbgrader["checksum"] = utils.compute_checksum(released)
    return cell


def graded(answer: str = "def mean_logit_diff(logits):\n    return logits.mean()\n", test_passed: bool = True,
           written: str = "About 20 times as likely.") -> NotebookNode:
    """A graded notebook: a function answer, its test cell (2 points) as it ran, a written answer (1 point)."""
    test = new_code_cell("check_mean(mean_logit_diff, model)")
    if not test_passed:
        test.outputs = [new_output("error", ename="AssertionError", evalue="wrong sign", traceback=[])]
    return new_notebook(cells=[
        graded_cell(new_code_cell(answer), "answer_fn", STUB, solution=True),
        graded_cell(test, "test_fn", grade=True, points=2, locked=True),
        graded_cell(new_markdown_cell(written), "written", PROMPT, solution=True, grade=True, points=1),
    ])


@pytest.fixture(scope="module")
def empty_gradebook(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A gradebook that knows the assignment's cells (made once: nbgrader runs alembic to make one)."""
    db = tmp_path_factory.mktemp("gradebook") / "gradebook.db"
    with environment(), Gradebook(f"sqlite:///{db}") as gb:
        gb.add_assignment(A)
        gb.add_notebook(A, A)
        gb.add_solution_cell("answer_fn", A, A)
        gb.add_grade_cell("test_fn", A, A, max_score=2, cell_type="code")
        gb.add_grade_cell("written", A, A, max_score=1, cell_type="markdown")
        gb.add_solution_cell("written", A, A)
    return db


@pytest.fixture
def course(tmp_path: Path, empty_gradebook: Path) -> Path:
    """nbgrader's course folder, with a copy of the empty gradebook."""
    shutil.copy(empty_gradebook, tmp_path / "gradebook.db")
    return tmp_path


def save(course: Path, nb: NotebookNode, notes: list[str] | None = None, **options: object) -> record.Scores:
    return record.save(course / "gradebook.db", course, A, LEARNER, nb, (notes if notes is not None else []).append,
                       **options)


def give(course: Path, nb: NotebookNode, cell: str, points: float, comment: str | None = None) -> None:
    """A score given by hand on the graded notebook ``nb`` (as ``python -m autograder score`` does)."""
    nbformat.write(nb, course / "autograded.ipynb")
    record.set_manual(course / "gradebook.db", course, A, LEARNER, cell, points, comment, course / "autograded.ipynb",
                      Refused)


def comment(course: Path, cell: str) -> tuple[str | None, str | None]:
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        found = gb.find_comment(cell, A, A, LEARNER)
        return found.auto_comment, found.manual_comment


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_the_answer_behind_a_cell_is_its_own_text_or_the_answers_above_it() -> None:
    nb = graded(answer="  def mean_logit_diff(x):\n    return 1\n\n")
    assert record.answer_behind(nb, "written") == sha("About 20 times as likely.")
    assert record.answer_behind(nb, "test_fn") == sha("def mean_logit_diff(x):\n    return 1")
    two = graded()
    two.cells.insert(1, graded_cell(new_code_cell("HELPER = 2"), "answer_helper", "", solution=True))
    assert record.answer_behind(two, "test_fn") == sha(f"{two.cells[0].source.strip()}\n\0HELPER = 2")
    assert record.answer_behind(nb, "no_such_cell") == sha("")


def test_tests_are_scored_from_their_outputs_and_written_answers_wait_for_a_hand(course: Path) -> None:
    scores = save(course, graded())
    assert (scores.score, scores.max_score, scores.penalty) == (2, 3, 0)
    assert scores.cells == {"test_fn": 2, "written": None} and scores.to_grade == ["written"]
    assert comment(course, "answer_fn") == (None, None)

    failed = save(course, graded(answer=STUB, test_passed=False, written=PROMPT))
    assert failed.cells == {"test_fn": 0, "written": 0} and failed.to_grade == []  # an unanswered answer scores 0
    assert comment(course, "answer_fn")[0] == "No response." and comment(course, "written")[0] == "No response."


def test_a_hand_given_score_counts_while_its_answer_is_unchanged(course: Path) -> None:
    first = graded()
    save(course, first)
    give(course, first, "written", 1, "right, and well put")
    notes: list[str] = []
    again = save(course, graded(), notes)  # the same answers graded again
    assert again.cells == {"test_fn": 2, "written": 1} and again.score == 3 and again.to_grade == []
    assert notes == [] and comment(course, "written")[1] == "right, and well put"

    changed = save(course, graded(written="About twice as likely."), notes)
    assert changed.cells == {"test_fn": 2, "written": None} and changed.to_grade == ["written"]
    assert notes == [f"{LEARNER}: the answer 'written' changed since it was scored (1 points, comment: "
                     "'right, and well put'): to grade again"]
    assert comment(course, "written")[1] is None


def test_a_hand_given_test_score_goes_with_the_function_it_scored(course: Path) -> None:
    first = graded()
    save(course, first)
    give(course, first, "test_fn", 1.5)
    assert save(course, graded()).cells["test_fn"] == 1.5
    notes: list[str] = []
    rewritten = save(course, graded(answer="def mean_logit_diff(logits):\n    return logits.mean(0)\n"), notes)
    assert rewritten.cells["test_fn"] == 2 and len(notes) == 1 and "'test_fn' changed" in notes[0]


def test_a_score_given_before_answers_were_recorded_is_kept(course: Path) -> None:
    first = graded()
    save(course, first)
    give(course, first, "written", 0.5)
    (course / record.ANSWERS_FILE).unlink()  # a gradebook older than the records
    notes: list[str] = []
    assert save(course, graded(written="Something else."), notes).cells["written"] == 0.5 and notes == []


def test_a_late_submission_loses_its_penalty_at_most_what_it_earned(course: Path) -> None:
    when = datetime(2026, 12, 1, 9, 30, tzinfo=timezone.utc)
    late = save(course, graded(), submitted=when, penalty=lambda maximum: 0.5 * maximum)
    assert (late.score, late.penalty) == (2, 1.5)
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        assert gb.find_submission(A, LEARNER).timestamp == when.replace(tzinfo=None)
    nothing = save(course, graded(answer=STUB, test_passed=False, written=PROMPT), penalty=lambda maximum: maximum)
    assert (nothing.score, nothing.penalty) == (0, 0)


def test_a_hand_given_score_is_refused_in_one_line_when_it_cannot_be_given(course: Path) -> None:
    nb = graded()
    save(course, nb)
    with pytest.raises(Refused, match="no graded notebook of learner 'ada'"):
        record.set_manual(course / "gradebook.db", course, A, LEARNER, "written", 1, None, course / "missing.ipynb",
                          Refused)
    with pytest.raises(Refused, match="no grade 'answer_fn' for learner 'ada'"):
        give(course, nb, "answer_fn", 1)
    with pytest.raises(Refused, match="written is worth 0 to 1 points, not 2"):
        give(course, nb, "written", 2)
    with pytest.raises(Refused, match="not -1"):
        give(course, nb, "written", -1)
    with pytest.raises(Refused, match="test_fn is a test cell, which takes no comment"):
        give(course, nb, "test_fn", 1, "a comment")
    assert save(course, nb).cells == {"test_fn": 2, "written": None}  # nothing was given
