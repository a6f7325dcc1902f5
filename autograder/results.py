"""What grading left in an output folder, read back for the LMS exports and the class summary.

Each learner's per-question scores come from nbgrader's gradebook (``nbgrader/gradebook.db``: a
grade's hand-given score if it has one, else its automatic score), so a score given by hand (with
``score`` or in formgrader) counts as soon as it is entered. ``grades.csv`` adds the learners that
no gradebook entry holds (a notebook that never ran) and says whose run stopped: a learner whose
notebook timed out or crashed has no score (empty, never 0), as in ``grades.csv``.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbgrader.api import Gradebook, MissingEntry

from autograder.config import environment

STOPPED = ("timed_out", "crashed")
MAX_NOTEBOOK_BYTES = 40 * 1024 * 1024  # an autograded notebook holds the learner's outputs


@dataclass
class Question:
    name: str  # the grade id of the test or answer cell
    max_score: float


@dataclass
class Learner:
    student: str
    status: str  # graded, needs_manual_grade, timed_out, crashed
    score: float | None  # None: not scored (the run stopped)
    max_score: float | None
    detail: str = ""
    scores: dict[str, float | None] = field(default_factory=dict)  # by question; None: not scored


@dataclass
class Results:
    assignment: str
    questions: list[Question]
    learners: dict[str, Learner]
    run: dict

    @property
    def max_score(self) -> float:
        return sum(q.max_score for q in self.questions)


class ResultsError(RuntimeError):
    """The folder holds no grading results; the message is one line saying what to do."""


def autograded(root: Path, assignment: str, student: str) -> Path:
    """The graded notebook of ``student`` (test cells hold the verdicts) in the folder ``root``."""
    return root / "nbgrader" / "autograded" / student / assignment / f"{assignment}.ipynb"


def read_notebook(path: Path) -> nbformat.NotebookNode | None:
    """A notebook of the output folder, or None if it is missing, a link, too large or unreadable
    (its cells were written by the learner's code)."""
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > MAX_NOTEBOOK_BYTES:
            return None
        return nbformat.reads(path.read_text(encoding="utf-8"), as_version=4)
    except Exception:  # anything a learner's outputs can make of the file
        return None


def question_order(root: Path, assignment: str) -> list[str]:
    """The grade ids in the order of the assignment's source notebook (as the grader copied it)."""
    nb = read_notebook(root / "nbgrader" / "source" / assignment / f"{assignment}.ipynb")
    if nb is None:
        return []
    return [
        c.metadata.nbgrader["grade_id"]
        for c in nb.cells
        if c.metadata.get("nbgrader", {}).get("grade") and c.metadata.nbgrader.get("grade_id")
    ]


def read(root: Path, assignment: str, grades_csv: str | None = None, run: dict | None = None) -> Results:
    """The results of ``assignment`` in ``root`` (an output folder, or a run's staging copy with the
    ``grades.csv`` text and run record it is about to commit)."""
    db = root / "nbgrader" / "gradebook.db"
    if grades_csv is None:
        path = root / "grades.csv"
        grades_csv = path.read_text(encoding="utf-8") if path.is_file() else ""
    if run is None:
        path = root / "run.json"
        saved = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        run = saved["runs"][-1] if saved.get("runs") else saved  # the class record: its newest run
    rows = {r["student"]: r for r in csv.DictReader(io.StringIO(grades_csv)) if r.get("status") != "skipped"}
    if not db.is_file() and not rows:
        raise ResultsError(f"no grading results in {root}: grade the submissions into it first")
    questions: list[Question] = []
    learners: dict[str, Learner] = {}
    if db.is_file():
        with environment(), Gradebook(f"sqlite:///{db}") as gb:  # nbgrader runs alembic from the venv
            try:
                found = gb.find_assignment(assignment)
            except MissingEntry:
                raise ResultsError(f"{root} holds no grades of {assignment!r}: check --assignment") from None
            cells = {c.name: Question(c.name, float(c.max_score)) for nb in found.notebooks for c in nb.grade_cells}
            order = [name for name in question_order(root, assignment) if name in cells]
            questions = [cells[n] for n in order] + [q for n, q in cells.items() if n not in order]
            for submission in found.submissions:
                student = submission.student.id
                scores = {
                    g.name: g.manual_score if g.manual_score is not None else g.auto_score
                    for nb in submission.notebooks
                    for g in nb.grades
                }
                learners[student] = _learner(student, scores, questions, rows.get(student))
    maximum = sum(q.max_score for q in questions) or None
    for student, row in rows.items():
        if student not in learners:  # its notebook never ran: no gradebook entry
            learners[student] = Learner(
                student, row["status"], None, _number(row.get("max_score")) or maximum, row.get("detail", "")
            )
    return Results(assignment, questions, dict(sorted(learners.items())), run)


def _learner(student: str, scores: dict[str, float | None], questions: list[Question], row: dict | None) -> Learner:
    maximum = sum(q.max_score for q in questions)
    detail = row.get("detail", "") if row else ""
    if row and row.get("status") in STOPPED:
        return Learner(student, row["status"], None, maximum, detail, {q.name: None for q in questions})
    missing = [q.name for q in questions if scores.get(q.name) is None]
    status = "needs_manual_grade" if missing else "graded"
    if status == "graded" and row and row.get("status") == "needs_manual_grade":
        detail = ""  # scored by hand since grades.csv was written
    total = sum(s for s in scores.values() if s is not None)
    return Learner(student, status, total, maximum, detail, {q.name: scores.get(q.name) for q in questions})


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None
