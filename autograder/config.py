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
KERNEL_NAME = "python3"  # the kernelspec every exercise notebook names

# Defaults of the grading command (seconds).
CELL_TIMEOUT = 120
NOTEBOOK_TIMEOUT = 600


def assignments(solutions_dir: Path = SOLUTIONS_DIR) -> list[str]:
    """The assignments: each is ``solutions/NAME/NAME.md`` (with its generated ``NAME.ipynb``)."""
    return sorted(p.parent.name for p in solutions_dir.glob("*/*.md") if p.stem == p.parent.name)


def nbgrader_config(
    root: Path,
    db_path: Path,
    source_directory: str = "source",
    release_directory: str = "release",
    cell_timeout: int = CELL_TIMEOUT,
    notebook_timeout: int = NOTEBOOK_TIMEOUT,
) -> Config:
    """The nbgrader configuration of a course directory ``root`` whose gradebook is ``db_path``.

    Grading puts back the test and read-only cells a learner deleted (:mod:`autograder.restore`),
    runs each notebook with :class:`autograder.execute.GuardedExecute` (a per-cell and a
    whole-notebook timeout, a dead kernel recorded instead of aborting), and builds feedback without
    hidden-test source (:mod:`autograder.feedback`).
    """
    from nbconvert.preprocessors import ClearMetadataPreprocessor, CSSHTMLHeaderPreprocessor
    from nbgrader.preprocessors import (AssignLatePenalties, CheckCellMetadata, ClearHiddenTests, ClearOutput,
                                        DeduplicateIds, GetGrades, IgnorePattern, LimitOutput,
                                        OverwriteKernelspec, SaveAutoGrades)

    from autograder.execute import GuardedExecute
    from autograder.feedback import ScrubOutputs
    from autograder.restore import RestoreCells

    c = Config()
    c.CourseDirectory.root = str(root)
    c.CourseDirectory.course_id = COURSE_ID
    c.CourseDirectory.source_directory = source_directory
    c.CourseDirectory.release_directory = release_directory
    c.CourseDirectory.db_url = f"sqlite:///{db_path}"
    # The MyST sources hold the solutions in clear: never copy them next to a learner notebook.
    c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback", "*.md"]
    c.Autograde.sanitize_preprocessors = [ClearOutput, DeduplicateIds, OverwriteKernelspec, RestoreCells,
                                          CheckCellMetadata]
    c.RestoreCells.add_missing_cells = True  # a deleted test or read-only cell is put back and run
    c.RestoreCells.source_root = str(Path(root) / source_directory)
    c.Autograde.autograde_preprocessors = [
        GuardedExecute, IgnorePattern, ClearMetadataPreprocessor, LimitOutput, SaveAutoGrades,
        AssignLatePenalties, CheckCellMetadata,
    ]
    c.GuardedExecute.timeout = cell_timeout
    c.GuardedExecute.notebook_timeout = notebook_timeout
    c.GenerateFeedback.preprocessors = [GetGrades, ScrubOutputs, ClearHiddenTests, CSSHTMLHeaderPreprocessor]
    return c


def kernel_spec() -> dict:
    """A ``python3`` kernelspec that runs this very interpreter (the one with patchlab installed)."""
    return {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}",
                 "--IPKernelApp.log_level=ERROR"],
        "display_name": "Python 3 (autograder)",
        "language": "python",
    }


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
    finally:
        os.environ.clear()
        os.environ.update(saved)
