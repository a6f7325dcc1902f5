"""pytest set-up for nbval's run of the reader notebooks (``make test``).

The learner notebooks in exercises/ run as learners get them: unsolved. A cell that calls an
exercise function still raising ``NotImplementedError``, or that uses a name such a cell was to
define (``NameError``), is an expected failure (xfail); any other error fails the run.
"""

from __future__ import annotations

import re

import pytest

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _expecting_unsolved_exercises(item: pytest.Item):
    run, notebook = item.runtest, item.parent

    def runtest() -> None:
        try:
            run()
        except Exception as error:  # nbval's NbCellError carries the kernel's traceback
            lines = [l for l in ANSI.sub("", str(getattr(error, "inner_traceback", "") or "")).splitlines() if l.strip()]
            last = lines[-1] if lines else ""
            undefined = re.match(r"NameError: name '(\w+)' is not defined", last)
            unsolved = getattr(notebook, "unsolved_names", set())
            if last.startswith("NotImplementedError") or (undefined and undefined.group(1) in unsolved):
                notebook.unsolved_names = unsolved | set(re.findall(r"^(\w+)\s*=", item.cell.source, re.M))
                pytest.xfail(f"unsolved exercise: {last}")
            raise

    return runtest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if type(item).__name__ == "IPyNbCell" and "exercises" in item.path.parts:
            item.runtest = _expecting_unsolved_exercises(item)
