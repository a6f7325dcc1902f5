"""The course's notebooks graded by plain `nbgrader autograde` (no sandbox), in a standard nbgrader
course directory, with patchlab installed and the repository on no path: the hidden tests find the
checks through `patchlab.grading`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from autograder.config import environment
from grading import ROOT  # tests/grading.py

ASSIGNMENT = "logit_difference"
# The course directory's nbgrader_config.py, as the instructors' guide gives it: nbgrader's own limits
# (30 s a cell, 4 s of silence) are shorter than the course's set-up cells and hidden tests take.
CONFIG = """c = get_config()
c.CourseDirectory.course_id = "course"
c.Execute.timeout = 300
c.Execute.iopub_timeout = 60
"""


def installed_env(tmp_path: Path) -> dict[str, str]:
    """An environment where patchlab imports as from an editable install (its folder, links resolved,
    lies in the clone) and nothing else of the repository is on the path."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "patchlab").symlink_to(ROOT / "patchlab")
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PATCHLAB_COURSE_REPO")}
    path = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])  # nbgrader runs alembic
    return {**env, "PYTHONPATH": str(site), "PATH": path, "PATCHLAB_MODEL": "ioi-mini", "OMP_NUM_THREADS": "1",
            "HF_HUB_OFFLINE": "1"}


@pytest.mark.slow
def test_nbgrader_autograde_grades_the_source_and_released_notebooks_without_pythonpath(tmp_path):
    from nbgrader.api import Gradebook

    env = installed_env(tmp_path)
    course = tmp_path / "course"
    probe = subprocess.run([sys.executable, "-c", "import patchlab, sys; print(patchlab.__file__); import autograder"],
                           env=env, cwd=tmp_path, capture_output=True, text=True)
    assert probe.stdout.startswith(str(tmp_path / "site")) and "No module named 'autograder'" in probe.stderr, probe
    (course / "source" / ASSIGNMENT).mkdir(parents=True)
    shutil.copy(ROOT / "solutions" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", course / "source" / ASSIGNMENT)
    (course / "nbgrader_config.py").write_text(CONFIG, encoding="utf-8")

    def nbgrader(*args: str) -> None:
        proc = subprocess.run([sys.executable, "-m", "nbgrader", *args], env=env, cwd=course, capture_output=True,
                              text=True, timeout=1800)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    nbgrader("generate_assignment", ASSIGNMENT, "--force")
    for student, notebook in (("solved", ROOT / "solutions" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"),
                              ("untouched", course / "release" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb")):
        (course / "submitted" / student / ASSIGNMENT).mkdir(parents=True)
        shutil.copy(notebook, course / "submitted" / student / ASSIGNMENT / f"{ASSIGNMENT}.ipynb")
    nbgrader("autograde", ASSIGNMENT)

    with environment(), Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        solved, untouched = (gb.find_submission(ASSIGNMENT, s) for s in ("solved", "untouched"))
        assert (solved.score, solved.max_score) == (5, 5)
        assert untouched.score == 0
    graded = (course / "autograded" / "untouched" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb").read_text(encoding="utf-8")
    assert "not implemented yet" in graded and "ImportError" not in graded and "ModuleNotFoundError" not in graded
