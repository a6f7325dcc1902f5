"""Release: ``solutions/NAME/NAME.md`` -> ``NAME.ipynb`` (jupytext) -> ``exercises/NAME/NAME.ipynb``.

The nbgrader course root is the repository: source directory ``solutions/``, release directory
``exercises/``. ``nbgrader generate_assignment`` strips the solutions, hidden tests and mark
schemes, locks the read-only cells and records checksums; its gradebook goes to a temporary folder.
"""

from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path
from types import ModuleType

import nbformat

from autograder.config import EXERCISES_DIR, REPO_ROOT, SOLUTIONS_DIR, assignments, environment, nbgrader_config


class ReleaseError(RuntimeError):
    """nbgrader could not generate an assignment; the message holds its log."""


def notebook_tool() -> ModuleType:
    """``tools/notebooks.py``, the course's one .md -> .ipynb converter (reproducible cell ids)."""
    spec = importlib.util.spec_from_file_location("course_notebooks", REPO_ROOT / "tools" / "notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def source_notebook(name: str, solutions_dir: Path = SOLUTIONS_DIR) -> Path:
    """The generated instructor notebook of assignment ``name``."""
    return solutions_dir / name / f"{name}.ipynb"


def stale_solutions(names: list[str] | None = None) -> list[str]:
    """Why each solution .ipynb of ``names`` differs from its .md (empty when all are current)."""
    tool = notebook_tool()
    problems = []
    for name in names or assignments():
        reason = tool.stale(SOLUTIONS_DIR / name / f"{name}.md")
        if reason:
            problems.append(f"solutions/{name}/{name}.ipynb: {reason}")
    return problems


def sync_solutions(names: list[str]) -> list[Path]:
    """Regenerate the solution notebooks of ``names`` from their .md; return those rewritten."""
    return notebook_tool().sync([SOLUTIONS_DIR / name / f"{name}.md" for name in names])


def generate(names: list[str], release_dir: Path = EXERCISES_DIR) -> list[Path]:
    """Run ``nbgrader generate_assignment`` on the solution notebooks of ``names`` into
    ``release_dir/NAME/NAME.ipynb`` (the course root is the repository)."""
    from nbgrader.apps import NbGraderAPI

    written = []
    with tempfile.TemporaryDirectory(prefix="autograder-release-") as tmp:
        config = nbgrader_config(REPO_ROOT, Path(tmp) / "gradebook.db", source_directory=SOLUTIONS_DIR.name,
                                 release_directory=str(Path(release_dir).resolve()))
        api = NbGraderAPI(config=config)
        for name in names:
            with environment():
                result = api.generate_assignment(name, force=True, create=True)
            if not result["success"]:
                raise ReleaseError(f"nbgrader generate_assignment {name} failed:\n{result.get('log', '')}"
                                   f"\n{result.get('error', '')}")
            written.append(Path(release_dir) / name / f"{name}.ipynb")
    return written


def release(names: list[str] | None = None, release_dir: Path = EXERCISES_DIR) -> list[Path]:
    """Regenerate ``solutions/*.ipynb`` from their .md, then the learner notebooks."""
    names = names or assignments()
    unknown = sorted(set(names) - set(assignments()))
    if unknown:
        raise ReleaseError(f"no assignment {', '.join(unknown)}: choose from {', '.join(assignments())}")
    sync_solutions(names)
    return generate(names, release_dir)


def stale_exercises(names: list[str] | None = None) -> list[str]:
    """The committed learner notebooks that differ from a fresh generation (empty when current).
    A generation is reproducible (cell ids derive from the cells, checksums from the sources), so
    the notebooks are compared whole."""
    names = names or assignments()
    with tempfile.TemporaryDirectory(prefix="autograder-fresh-") as tmp:
        generate(names, Path(tmp))
        stale = []
        for name in names:
            committed, fresh = EXERCISES_DIR / name / f"{name}.ipynb", Path(tmp) / name / f"{name}.ipynb"
            if not committed.exists() or nbformat.read(committed, 4) != nbformat.read(fresh, 4):
                stale.append(f"exercises/{name}/{name}.ipynb")
        return stale
