"""Scores into nbgrader's gradebook, and hand-given scores that stay tied to the answer they scored.

``save`` does what nbgrader's ``SaveAutoGrades`` does (auto scores from the test cells' outputs, "No
response." for untouched answers) with one difference: a hand-given score counts only while the
answer it scored is unchanged. Each run records a hash of the answer behind every graded cell
(``manual_answers.json`` in nbgrader's course folder: the answer cell's own source for a written
answer, the answer cells above it for a test cell); a score given by hand in between, with
``python -m autograder score`` or in nbgrader's formgrader (a ``manual_score`` on the grade row), was
given to that answer. When a later run finds another answer, the score and comment are cleared,
logged, and the cell is to grade again. Nothing else (nbgrader's checksums, timestamps or
``needs_manual_grade`` flag) decides it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import nbformat
from nbgrader import utils
from nbgrader.api import Gradebook, MissingEntry

ANSWERS_FILE = "manual_answers.json"


@dataclass
class Scores:
    score: float
    max_score: float
    to_grade: list[str] = field(default_factory=list)  # answered, manually graded cells with no score
    cells: dict[str, float | None] = field(default_factory=dict)  # points per graded cell; None: not scored
    penalty: float = 0.0  # points taken off for lateness (``score`` is before it)


def answer_hash(source: str) -> str:
    return hashlib.sha256(source.strip().encode("utf-8")).hexdigest()


def answer_behind(nb: nbformat.NotebookNode, grade_id: str) -> str:
    """The hash of the answer a graded cell scores: a written answer's own source; for a test cell,
    the learner's answer cells above it."""
    answers: list[str] = []
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("grade_id") == grade_id:
            return answer_hash(cell.source if meta.get("solution") else "\n\0".join(answers))
        if meta.get("solution"):
            answers.append(cell.source.strip())
    return answer_hash("")


def _answers(course: Path) -> dict:
    path = course / ANSWERS_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def max_score(db: Path, assignment: str) -> float:
    with Gradebook(f"sqlite:///{db}") as gb:
        return gb.find_assignment(assignment).max_score


def save(
    db: Path,
    course: Path,
    assignment: str,
    student: str,
    nb: nbformat.NotebookNode,
    note: Callable[[str], None],
    submitted: datetime | None = None,
    penalty: Callable[[float], float] | None = None,
) -> Scores:
    """Record the graded notebook ``nb`` of ``student``, handed in at ``submitted``; ``penalty`` gives
    the points a late submission loses for a maximum score (at most the points earned), recorded as
    nbgrader's late-submission penalty (its feedback page shows it). Return the scores as the
    gradebook has them."""
    recorded = _answers(course)
    answers = recorded.setdefault(student, {})
    with Gradebook(f"sqlite:///{db}") as gb:
        gb.update_or_create_student(student)
        gb.update_or_create_submission(assignment, student)
        for cell in nb.cells:
            if not (utils.is_grade(cell) or utils.is_solution(cell)):
                continue
            gid = cell.metadata.nbgrader["grade_id"]
            if utils.is_grade(cell):
                grade = gb.find_grade(gid, assignment, assignment, student)
                grade.auto_score, _ = utils.determine_grade(cell)
                answer = answer_behind(nb, gid)
                # a score given by hand (here or in formgrader) since the last run scored the answer then
                # recorded; none recorded (a gradebook older than these records): kept
                if grade.manual_score is not None and answers.get(gid, answer) != answer:
                    # nbgrader keeps comments on answer cells only, not on test cells
                    comment = gb.find_comment(gid, assignment, assignment, student) if utils.is_solution(cell) else None
                    given = comment.manual_comment if comment is not None else None
                    note(
                        f"{student}: the answer '{gid}' changed since it was scored ({grade.manual_score:g} points"
                        f"{', comment: ' + repr(given) if given else ''}): to grade again"
                    )
                    grade.manual_score = None
                    if comment is not None:
                        comment.manual_comment = None
                grade.needs_manual_grade = grade.auto_score is None and grade.manual_score is None
                answers[gid] = answer
            if utils.is_solution(cell) or utils.is_task(cell):
                comment = gb.find_comment(gid, assignment, assignment, student)
                unchanged = cell.metadata.nbgrader.get("checksum") == utils.compute_checksum(cell)
                comment.auto_comment = "No response." if unchanged and not utils.is_task(cell) else None
        if submitted is not None:
            gb.find_submission(assignment, student).timestamp = submitted.astimezone(timezone.utc).replace(tzinfo=None)
        gb.db.commit()
        _write_answers(course, recorded)
        submission = gb.find_submission(assignment, student)
        notebook = gb.find_submission_notebook(assignment, assignment, student)
        notebook.late_submission_penalty = min(penalty(submission.max_score), submission.score) if penalty else 0.0
        gb.db.commit()
        grades = [g for n in submission.notebooks for g in n.grades]
        to_grade = [g.name for g in grades if g.auto_score is None and g.manual_score is None]
        cells = {g.name: None if g.auto_score is None and g.manual_score is None else g.score for g in grades}
        order = [c.metadata.nbgrader["grade_id"] for c in nb.cells if utils.is_grade(c)]
        cells = {gid: cells[gid] for gid in order if gid in cells}
        return Scores(submission.score, submission.max_score, to_grade, cells, notebook.late_submission_penalty)


def set_manual(
    db: Path,
    course: Path,
    assignment: str,
    student: str,
    cell: str,
    points: float,
    comment: str | None,
    autograded: Path,
    error: type[Exception],
) -> None:
    """Give ``cell`` of ``student`` ``points`` by hand (and a comment), tied to the answer graded."""
    if not autograded.exists():
        raise error(f"no graded notebook of learner {student!r}: check the id in grades.csv")
    nb = nbformat.read(autograded, as_version=4)
    with Gradebook(f"sqlite:///{db}") as gb:
        try:
            grade = gb.find_grade(cell, assignment, assignment, student)
        except MissingEntry:
            raise error(f"no grade {cell!r} for learner {student!r}: see the cell names in the feedback") from None
        if not 0 <= points <= grade.max_score:
            raise error(f"{cell} is worth 0 to {grade.max_score:g} points, not {points:g}")
        grade.manual_score = points
        grade.needs_manual_grade = False
        if comment is not None:
            try:
                gb.find_comment(cell, assignment, assignment, student).manual_comment = comment
            except MissingEntry:
                raise error(
                    f"{cell} is a test cell, which takes no comment (nbgrader keeps comments on answers): "
                    "give its points alone"
                ) from None
        gb.db.commit()
    answers = _answers(course)
    answers.setdefault(student, {})[cell] = answer_behind(nb, cell)
    _write_answers(course, answers)


def _write_answers(course: Path, answers: dict) -> None:
    (course / ANSWERS_FILE).write_text(json.dumps(answers, indent=1, sort_keys=True), encoding="utf-8")
