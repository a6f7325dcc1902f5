"""Grade a folder of submitted notebooks with nbgrader, offline, one learner at a time.

``OUT_DIR`` receives ``grades.csv``, ``feedback/LEARNER.html`` and ``grading.log``; nbgrader's own
course folder (gradebook, autograded notebooks) is ``OUT_DIR/nbgrader``. The submitted files are
only read: each is copied into that folder before nbgrader sees it. The gradebook is kept between
runs, so that a rerun regrades every notebook the same way and keeps the manual grades.
"""

from __future__ import annotations

import csv
import html
import json
import re
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbgrader.api import Gradebook
from nbgrader.apps import NbGraderAPI

from autograder.config import (CELL_TIMEOUT, KERNEL_NAME, NOTEBOOK_TIMEOUT, REPO_ROOT, assignments, environment,
                               kernel_spec, nbgrader_config)
from autograder.execute import CELL_TIMEOUT_ERROR, DEAD_KERNEL_ERROR, NOTEBOOK_TIMEOUT_ERROR
from autograder.feedback import hidden_test_lines, leaks
from autograder.release import source_notebook, stale_solutions

CSV_FIELDS = ("student", "score", "max_score", "status")
LEARNER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]*$")


class GradingError(RuntimeError):
    """The grading run cannot start (unknown assignment, stale solutions, bad folders)."""


@dataclass
class Grade:
    """One learner's result. ``score`` is None (an empty cell in the CSV, never 0) when the notebook
    did not run to its end."""

    student: str
    score: float | None
    max_score: float
    status: str
    detail: str = ""
    seconds: float = 0.0

    def row(self) -> dict[str, str]:
        score = "" if self.score is None else f"{self.score:g}"
        return {"student": self.student, "score": score, "max_score": f"{self.max_score:g}", "status": self.status}


def run_status(nb: nbformat.NotebookNode) -> tuple[str, str] | None:
    """("crashed" | "timed_out", where) when an autograded notebook did not run to its end."""
    errors = [(index, out.ename) for index, cell in enumerate(nb.cells) if cell.cell_type == "code"
              for out in cell.get("outputs", []) if out.output_type == "error"]
    for status, names, what in (("crashed", {DEAD_KERNEL_ERROR}, "the kernel died"),
                                ("timed_out", {CELL_TIMEOUT_ERROR, NOTEBOOK_TIMEOUT_ERROR}, "time limit hit")):
        cells = [index for index, name in errors if name in names]
        if cells:
            return status, f"{what} in cell {cells[0]}"
    return None


def kernel_environment(course: Path, model: str) -> dict[str, str]:
    """Environment of the grading kernels: this interpreter's kernel, the course model, offline,
    one thread (a small model on a shared CPU only loses time to thread contention), and nothing
    that writes to stderr (warnings, progress bars)."""
    return {
        "JUPYTER_PATH": str(course / "jupyter"), "JUPYTER_PLATFORM_DIRS": "1", "PATCHLAB_MODEL": model,
        "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TQDM_DISABLE": "1", "PYTHONWARNINGS": "ignore",
        "PYTHONHASHSEED": "0", "MPLBACKEND": "Agg", "PLOTLY_RENDERER": "notebook_connected",
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
        # the hidden tests import autograder.checks from the repository (it is not in patchlab's wheel)
        "PYTHONPATH": str(REPO_ROOT),
    }


class Grader:
    """nbgrader's course folder ``out/nbgrader`` for one assignment, and the grading of submissions."""

    def __init__(self, assignment: str, out: Path, cell_timeout: int = CELL_TIMEOUT,
                 notebook_timeout: int = NOTEBOOK_TIMEOUT) -> None:
        self.assignment, self.out = assignment, out
        self.course = out / "nbgrader"
        self.db = self.course / "gradebook.db"
        self.feedback_dir = out / "feedback"
        self.log: list[str] = []
        self.api = NbGraderAPI(config=nbgrader_config(self.course, self.db, cell_timeout=cell_timeout,
                                                      notebook_timeout=notebook_timeout))
        self.hidden = hidden_test_lines(nbformat.read(source_notebook(assignment), as_version=4))

    def prepare(self) -> None:
        """Copy the assignment's source in and register it in the gradebook. A changed source
        starts a new gradebook (the old one is kept as gradebook.db.old)."""
        self.course.mkdir(parents=True, exist_ok=True)
        self.feedback_dir.mkdir(exist_ok=True)
        source = self.course / "source" / self.assignment / f"{self.assignment}.ipynb"
        new = source_notebook(self.assignment).read_bytes()
        if not source.exists() or source.read_bytes() != new:
            if self.db.exists():
                self.log.append("the assignment's source changed: new gradebook, the old one is gradebook.db.old")
                self.db.replace(self.course / "gradebook.db.old")
            source.parent.mkdir(parents=True, exist_ok=True)
            source.write_bytes(new)
        spec = self.course / "jupyter" / "kernels" / KERNEL_NAME / "kernel.json"
        spec.parent.mkdir(parents=True, exist_ok=True)
        spec.write_text(json.dumps(kernel_spec(), indent=1), encoding="utf-8")
        if not self.db.exists():
            result = self.api.generate_assignment(self.assignment, force=True, create=True)
            if not result["success"]:
                raise GradingError(f"nbgrader generate_assignment failed:\n{result.get('log', '')}")

    def max_score(self) -> float:
        with Gradebook(f"sqlite:///{self.db}") as gb:
            return gb.find_assignment(self.assignment).max_score

    def not_run(self, student: str, detail: str) -> Grade:
        """A submission that could not be run at all: crashed, with a page saying why."""
        grade = Grade(student, None, self.max_score(), "crashed", detail)
        self._write_feedback(student, self._fallback_page(grade))
        return grade

    def grade(self, path: Path) -> Grade:
        """Autograde one submission and write its feedback page; a bad submission never raises."""
        start = time.perf_counter()
        grade = self._grade(path)
        grade.seconds = time.perf_counter() - start
        self.log.append(f"----- {grade.student}: {grade.status} {grade.row()['score']}/{grade.max_score:g} "
                        f"{grade.detail} ({grade.seconds:.1f} s)")
        return grade

    def _grade(self, path: Path) -> Grade:
        student = path.stem
        if not LEARNER_ID.match(student):
            return self.not_run(student, "the file name is not a usable learner id (letters, digits, ._@+-)")
        try:
            nb = nbformat.read(path, as_version=4)
            nbformat.validate(nb)
        except Exception as err:  # any unreadable file: report it, go on with the others
            return self.not_run(student, f"not a readable notebook ({type(err).__name__}: {err})"[:300])
        submitted = self.course / "submitted" / student / self.assignment / f"{self.assignment}.ipynb"
        shutil.rmtree(submitted.parent, ignore_errors=True)
        submitted.parent.mkdir(parents=True)
        nbformat.write(nb, submitted)
        result = self.api.autograde(self.assignment, student, force=True, create=True)
        self.log.append(result.get("log", "") + result.get("error", ""))
        if not result["success"] or not self.autograded(student).exists():
            return self.not_run(student, "nbgrader could not autograde it (see grading.log)")
        return self.collect(student)

    def autograded(self, student: str) -> Path:
        return self.course / "autograded" / student / self.assignment / f"{self.assignment}.ipynb"

    def collect(self, student: str) -> Grade:
        """The grade of an autograded submission, from the gradebook (manual grades included) and
        the executed notebook; writes its feedback page."""
        with Gradebook(f"sqlite:///{self.db}") as gb:
            submission = gb.find_submission(self.assignment, student)
            score, max_score = submission.score, submission.max_score
            ungraded = [g.name for nb in submission.notebooks for g in nb.grades
                        if g.auto_score is None and g.manual_score is None]
        stopped = run_status(nbformat.read(self.autograded(student), as_version=4))
        if stopped:
            grade = Grade(student, None, max_score, *stopped)
        elif ungraded:
            grade = Grade(student, score, max_score, "needs_manual_grade", f"to grade by hand: {', '.join(ungraded)}")
        else:
            grade = Grade(student, score, max_score, "graded")
        self._write_feedback(student, self._feedback_page(grade))
        return grade

    def set_manual_score(self, student: str, cell: str, points: float, comment: str | None = None) -> None:
        """Record a hand-given score (and comment) for a manually graded cell of ``student``."""
        with Gradebook(f"sqlite:///{self.db}") as gb:
            grade = gb.find_grade(cell, self.assignment, self.assignment, student)
            if not 0 <= points <= grade.max_score:
                raise GradingError(f"{cell} is worth 0 to {grade.max_score:g} points, not {points:g}")
            grade.manual_score = points
            grade.needs_manual_grade = False
            if comment is not None:
                gb.find_comment(cell, self.assignment, self.assignment, student).manual_comment = comment
            gb.db.commit()

    def _feedback_page(self, grade: Grade) -> str:
        """nbgrader's feedback page, or the fallback page if it failed or quotes a hidden test."""
        result = self.api.generate_feedback(self.assignment, grade.student, force=True)
        self.log.append(result.get("log", "") + result.get("error", ""))
        page = self.course / "feedback" / grade.student / self.assignment / f"{self.assignment}.html"
        text = page.read_text(encoding="utf-8") if result["success"] and page.exists() else ""
        leaked = leaks(text, self.hidden)
        if text and not leaked:
            return text
        self.log.append("feedback replaced: " + ("it quoted hidden tests" if leaked else "nbgrader wrote none"))
        return self._fallback_page(grade)

    def _fallback_page(self, grade: Grade) -> str:
        """A plain page with the status and score, when nbgrader's page is missing or unsafe."""
        title = html.escape(f"{self.assignment}: {grade.student}")
        score = "not scored" if grade.score is None else f"{grade.score:g}"
        return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{title}</title></head><body>"
                f"<h1>{title}</h1><p>Status: <b>{grade.status}</b></p><p>Score: {score} / {grade.max_score:g}</p>"
                f"<p>{html.escape(grade.detail)}</p></body></html>\n")

    def _write_feedback(self, student: str, text: str) -> None:
        (self.feedback_dir / f"{student}.html").write_text(text, encoding="utf-8")


def check_folders(submissions: Path, out: Path) -> None:
    """The submissions folder exists, and the output folder neither is nor contains nor lies in it."""
    if not submissions.is_dir():
        raise GradingError(f"{submissions} is not a folder of submitted notebooks")
    sub, dest = submissions.resolve(), out.resolve()
    if dest == sub or sub in dest.parents or dest in sub.parents:
        raise GradingError("the output folder must lie outside the submissions folder (and not contain it)")


def grade(
    submissions: Path,
    assignment: str,
    out: Path,
    cell_timeout: int = CELL_TIMEOUT,
    notebook_timeout: int = NOTEBOOK_TIMEOUT,
    model: str = "ioi-mini",
    run: bool = True,
) -> list[Grade]:
    """Autograde every ``submissions/LEARNER.ipynb`` for ``assignment`` with the course model
    ``model``; write ``grades.csv``, ``feedback/LEARNER.html`` and ``grading.log`` into ``out``.
    With ``run=False`` nothing is executed again: the grades (manual ones included) and feedback
    are rewritten from the previous run's gradebook and notebooks."""
    submissions, out = Path(submissions), Path(out)
    if assignment not in assignments():
        raise GradingError(f"unknown assignment {assignment!r}: choose from {', '.join(assignments())}")
    stale = stale_solutions([assignment])
    if stale:
        raise GradingError(f"{'; '.join(stale)}: run `python -m autograder release` first")
    check_folders(submissions, out)
    grader = Grader(assignment, out, cell_timeout, notebook_timeout)
    with environment(**kernel_environment(grader.course, model)), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nbgrader's SQLAlchemy warnings
        grader.prepare()
        grades = [grader.grade(path) if run or not grader.autograded(path.stem).exists()
                  else grader.collect(path.stem) for path in sorted(submissions.glob("*.ipynb"))]
    with open(out / "grades.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(g.row() for g in grades)
    (out / "grading.log").write_text("\n".join(grader.log) + "\n", encoding="utf-8")
    return grades


def set_manual_score(out: Path, assignment: str, student: str, cell: str, points: float,
                     comment: str | None = None) -> None:
    """Record a hand-given score for ``cell`` (e.g. ``interpretation``) of ``student`` in the gradebook
    of a previous ``grade`` run into ``out``; the next run (``run=False`` is enough) reports it."""
    grader = Grader(assignment, Path(out))
    if not grader.db.exists():
        raise GradingError(f"no gradebook in {grader.course}: grade the submissions first")
    try:
        grader.set_manual_score(student, cell, points, comment)
    except GradingError:
        raise
    except Exception as err:  # nbgrader's MissingEntry for an unknown learner or cell
        raise GradingError(f"no grade {cell!r} for learner {student!r} ({type(err).__name__}: {err})") from None
