"""Where the exercises live and how nbgrader is configured for them (one place for both)."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Iterator

from traitlets.config import Config

REPO_ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS_DIR = REPO_ROOT / "solutions"  # nbgrader's source directory: instructor notebooks
EXERCISES_DIR = REPO_ROOT / "exercises"  # nbgrader's release directory: learner notebooks
COURSE_ID = "activation-patching"

# Defaults of the grading command (seconds).
CELL_TIMEOUT = 300  # attention_heads 8.2: about 2 minutes on a busy 2-core machine
NOTEBOOK_TIMEOUT = 900


def assignments(solutions_dir: Path = SOLUTIONS_DIR) -> list[str]:
    """The assignments: each is ``solutions/NAME/NAME.md`` (with its generated ``NAME.ipynb``)."""
    return sorted(p.parent.name for p in solutions_dir.glob("*/*.md") if p.stem == p.parent.name)


def nbgrader_config(
    root: Path,
    db_path: Path,
    source_directory: str = "source",
    release_directory: str = "release",
) -> Config:
    """The nbgrader configuration of a course directory ``root`` whose gradebook is ``db_path``.

    Only nbgrader's release (``generate_assignment``) and feedback (``generate_feedback``, without
    hidden-test source: :mod:`autograder.feedback`) run through it; grading runs each notebook in a
    sandbox and scores it outside (:mod:`autograder.grade`).
    """
    from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor
    from nbgrader.preprocessors import ClearHiddenTests, GetGrades

    from autograder.feedback import ScrubOutputs
    from autograder.sanitise import SanitiseLearnerContent

    c = Config()
    c.CourseDirectory.root = str(root)
    c.CourseDirectory.course_id = COURSE_ID
    c.CourseDirectory.source_directory = source_directory
    c.CourseDirectory.release_directory = release_directory
    c.CourseDirectory.db_url = f"sqlite:///{db_path}"
    # The MyST sources hold the solutions in clear: never copy them next to a learner notebook.
    c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback", "*.md"]
    c.GenerateFeedback.preprocessors = [
        GetGrades,
        ScrubOutputs,
        SanitiseLearnerContent,
        ClearHiddenTests,
        CSSHTMLHeaderPreprocessor,
    ]
    return c


def release_notebook(name: str) -> Path:
    """The learner notebook of assignment ``name``, as released."""
    return EXERCISES_DIR / name / f"{name}.ipynb"


@contextlib.contextmanager
def environment(**variables: str) -> Iterator[None]:
    """Set environment variables for nbgrader and its kernels, restored afterwards. The
    interpreter's own bin folder goes first on PATH: nbgrader runs ``alembic`` from there, and a
    venv need not be activated."""
    saved = dict(os.environ)
    os.environ.update(variables)
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    try:
        yield
    finally:  # key by key: the grading threads start sandboxes meanwhile and read PATH
        for key in set(os.environ) - set(saved):
            del os.environ[key]
        for key, value in saved.items():
            if os.environ.get(key) != value:
                os.environ[key] = value
