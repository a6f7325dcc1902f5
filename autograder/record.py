"""Scores into nbgrader's gradebook, and hand-given scores that stay tied to the answer they scored.

``save`` does what nbgrader's ``SaveAutoGrades`` does (auto scores from the test cells' outputs, "No
response." for untouched answers) with one difference: a hand-given score counts only while the
answer it scored is unchanged. ``set_manual`` stores, next to the score, a hash of the answer
(``manual_answers.json`` in nbgrader's course folder); when a later run finds another answer, the
score and comment are cleared, logged, and the cell is to grade again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
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


def answer_hash(source: str) -> str:
    return hashlib.sha256(source.strip().encode("utf-8")).hexdigest()


def _answers(course: Path) -> dict:
    path = course / ANSWERS_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def max_score(db: Path, assignment: str) -> float:
    with Gradebook(f"sqlite:///{db}") as gb:
        return gb.find_assignment(assignment).max_score


def save(db: Path, course: Path, assignment: str, student: str, nb: nbformat.NotebookNode,
         note: Callable[[str], None]) -> Scores:
    """Record the graded notebook ``nb`` of ``student``; return the scores as the gradebook has them."""
    answers = _answers(course).get(student, {})
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
                if grade.manual_score is not None and answers.get(gid) != answer_hash(cell.source):
                    comment = gb.find_comment(gid, assignment, assignment, student)
                    note(f"{student}: the answer '{gid}' changed since it was scored ({grade.manual_score:g} points"
                         f"{', comment: ' + repr(comment.manual_comment) if comment.manual_comment else ''}): "
                         "to grade again")
                    grade.manual_score, comment.manual_comment = None, None
                grade.needs_manual_grade = grade.auto_score is None and grade.manual_score is None
            if utils.is_solution(cell) or utils.is_task(cell):
                comment = gb.find_comment(gid, assignment, assignment, student)
                unchanged = cell.metadata.nbgrader.get("checksum") == utils.compute_checksum(cell)
                comment.auto_comment = "No response." if unchanged and not utils.is_task(cell) else None
        gb.db.commit()
        submission = gb.find_submission(assignment, student)
        to_grade = [g.name for n in submission.notebooks for g in n.grades
                    if g.auto_score is None and g.manual_score is None]
        return Scores(submission.score, submission.max_score, to_grade)


def set_manual(db: Path, course: Path, assignment: str, student: str, cell: str, points: float,
               comment: str | None, autograded: Path, error: type[Exception]) -> None:
    """Give ``cell`` of ``student`` ``points`` by hand (and a comment), tied to the answer graded."""
    if not autograded.exists():
        raise error(f"no graded notebook of learner {student!r}: check the id in grades.csv")
    nb = nbformat.read(autograded, as_version=4)
    sources = {c.metadata.get("nbgrader", {}).get("grade_id"): c.source for c in nb.cells}
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
            gb.find_comment(cell, assignment, assignment, student).manual_comment = comment
        gb.db.commit()
    answers = _answers(course)
    answers.setdefault(student, {})[cell] = answer_hash(sources.get(cell, ""))
    (course / ANSWERS_FILE).write_text(json.dumps(answers, indent=1), encoding="utf-8")
