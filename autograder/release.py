"""Release: ``solutions/NAME/NAME.md`` -> ``NAME.ipynb`` (jupytext) -> ``exercises/NAME/NAME.ipynb``.

The nbgrader course root is the repository: source directory ``solutions/``, release directory
``exercises/``. ``nbgrader generate_assignment`` strips the solutions, hidden tests and mark
schemes, locks the read-only cells and records checksums; its gradebook goes to a temporary folder.
"""

from __future__ import annotations

import importlib.util
import os
import re
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
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {REPO_ROOT / 'tools' / 'notebooks.py'}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def source_notebook(name: str, solutions_dir: Path | None = None) -> Path:
    """The generated instructor notebook of assignment ``name`` (under ``SOLUTIONS_DIR`` by default,
    read when called)."""
    return (solutions_dir or SOLUTIONS_DIR) / name / f"{name}.ipynb"


def stale_solutions(names: list[str] | None = None) -> list[str]:
    """Why each solution .ipynb of ``names`` differs from its .md (empty when all are current)."""
    tool = notebook_tool()
    problems = []
    for name in names or assignments():
        reason = tool.stale(SOLUTIONS_DIR / name / f"{name}.md")
        if reason:
            problems.append(f"solutions/{name}/{name}.ipynb: {reason}")
    return problems


def md_line(md_path: Path, grade_id: str | None, nth: int = 1) -> str:
    """``path:line`` of the cell ``grade_id`` in a MyST source (the file alone if it is not found)."""
    shown = md_path.relative_to(REPO_ROOT) if md_path.is_relative_to(REPO_ROOT) else md_path
    if grade_id:
        lines = [
            number
            for number, line in enumerate(md_path.read_text(encoding="utf-8").splitlines(), 1)
            if re.search(rf"grade_id\"?:\s*\"?{re.escape(grade_id)}\b", line)
        ]
        if len(lines) >= nth:
            return f"{shown}:{lines[nth - 1]}"
    return str(shown)


def problems(name: str, nb: nbformat.NotebookNode) -> list[str]:
    """What nbgrader or the grader would trip on, each as ``file:line: what``."""
    from autograder.checks import REGISTRY  # (imports torch: a few seconds, once per release)
    from autograder.restore import HIDDEN_CHECK, grade_id, is_test

    md_path = SOLUTIONS_DIR / name / f"{name}.md"
    seen: set[str] = set()
    found = []
    for cell in nb.cells:
        gid = grade_id(cell)
        if gid and gid in seen:
            found.append(f"{md_line(md_path, gid, 2)}: grade_id {gid!r} is used by two cells")
        if gid:
            seen.add(gid)
        called = HIDDEN_CHECK.search(cell.source) if is_test(cell) else None
        if is_test(cell) and not called:
            found.append(
                f"{md_line(md_path, gid)}: the test cell {gid!r} calls no check_NAME(function, model) "
                "between its HIDDEN TESTS markers"
            )
        elif called and called.group(1) not in REGISTRY:
            found.append(
                f"{md_line(md_path, gid)}: the test cell {gid!r} calls {called.group(1)}, which no module of "
                "autograder/checks/ declares: declare it there (autograder/README.md) or fix the name"
            )
    return found


def sync_solutions(names: list[str]) -> list[Path]:
    """Regenerate the solution notebooks of ``names`` from their .md (each written whole, atomically);
    return those rewritten."""
    tool = notebook_tool()
    written = []
    for name in names:
        md_path = SOLUTIONS_DIR / name / f"{name}.md"
        try:
            text = tool.convert(md_path)
        except Exception as err:  # jupytext's own message names the problem
            raise ReleaseError(f"{md_line(md_path, None)}: {err}") from None
        errors = problems(name, nbformat.reads(text, as_version=4))
        if errors:
            raise ReleaseError("; ".join(errors))
        if tool.stale(md_path):
            atomic_write(source_notebook(name), text)
            written.append(source_notebook(name))
    return written


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def generate(names: list[str], release_dir: Path = EXERCISES_DIR) -> list[Path]:
    """Run ``nbgrader generate_assignment`` on the solution notebooks of ``names`` into a temporary
    folder, then put each learner notebook in ``release_dir/NAME/NAME.ipynb`` by an atomic rename:
    a failure leaves the committed notebooks as they were, and names the .md file and line."""
    from nbgrader.apps import NbGraderAPI

    written = []
    with tempfile.TemporaryDirectory(prefix="autograder-release-") as tmp:
        fresh = Path(tmp) / "release"
        config = nbgrader_config(
            REPO_ROOT, Path(tmp) / "gradebook.db", source_directory=SOLUTIONS_DIR.name, release_directory=str(fresh)
        )
        api = NbGraderAPI(config=config)
        for name in names:
            with environment():
                result = api.generate_assignment(name, force=True, create=True)
            if not result["success"]:
                log = f"{result.get('log', '')}\n{result.get('error', '')}"
                ids = re.findall(r"[\"'](\w+)[\"']", log)
                where = next(
                    (
                        md_line(SOLUTIONS_DIR / name / f"{name}.md", gid)
                        for gid in ids
                        if ":" in md_line(SOLUTIONS_DIR / name / f"{name}.md", gid)
                    ),
                    f"solutions/{name}/{name}.md",
                )
                reason = next((line.strip() for line in log.splitlines() if "rror" in line), "see nbgrader's log")
                raise ReleaseError(f"{where}: nbgrader could not release it: {reason[:300]}")
        for name in names:
            target = Path(release_dir) / name / f"{name}.ipynb"
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(target, (fresh / name / f"{name}.ipynb").read_text(encoding="utf-8"))
            written.append(target)
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
