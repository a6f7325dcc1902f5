"""The graded checks, one module per assignment, each check one :class:`Check` object.

``REGISTRY`` maps each hidden test's name (``check_NAME``) to its object, found by :func:`discover`
in this package's modules (those not starting with ``_``): adding a check, or an assignment, is
adding its object to an assignment's module, or a new module beside them. Everything else is a loop
over the registry: the learner's kernel records what the learner's function returns on each case
(:mod:`autograder.harvest`, with ``_inputs``), the grader judges the records against its references
(``_judge``), and ``check_NAME(fn, model)`` does both in this process, for an instructor running a
solution notebook by hand (``patchlab.grading`` finds them here).

In the sandbox this package is copied as ``/grader/autograder_checks/``: its modules import each
other relatively and need only torch, numpy and patchlab.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterable

from ._check import Candidate, Check, Expected, Key, cases, record
from ._inputs import Models, PromptSet
from ._judge import References, decode, judge as judge_check

HERE = Path(__file__).resolve().parent


def _module(path: Path) -> ModuleType:
    """The assignment module at ``path``, imported as a module of this package (so that it imports
    ``._check`` and the others relatively, wherever its file is)."""
    name = f"{__name__}.{path.stem}"
    if name not in sys.modules:
        if path.parent == HERE:
            return importlib.import_module(name)
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load the check module {path}")
        module = sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return sys.modules[name]


def discover(folders: Iterable[Path] = (HERE,)) -> dict[str, Check]:
    """Every :class:`Check` defined at the top level of the modules in ``folders``, by name."""
    found: dict[str, Check] = {}
    for folder in folders:
        for path in sorted(Path(folder).glob("*.py")):
            if path.name.startswith("_"):
                continue
            for value in vars(_module(path)).values():
                if isinstance(value, Check):
                    if found.get(value.name, value) is not value:
                        raise ValueError(f"two checks are named {value.name} ({path})")
                    found[value.name] = value
    return found


REGISTRY: dict[str, Check] = discover()


def judge(check: str, records: list[dict[str, Any]], refs: References) -> str | None:
    """None if every recorded case of the check named ``check`` is right; else what the learner is told."""
    return judge_check(REGISTRY[check], records, refs)


# --- the hidden tests run in-process, for an instructor running a solution notebook by hand --------

_IN_PROCESS: dict[str, Any] = {}
IN_PROCESS_MODELS = ["ioi-mini", "ioi-mini-reshaped"]


def in_process(check: Check) -> Callable[..., None]:
    """``check_NAME(fn, model)`` as a hidden test calls it, run here."""

    def run(fn: Callable[..., Any], model: Any = None) -> None:
        """Record ``fn`` on every graded case here, as the sandbox would, and judge it; an
        AssertionError with the learner's message when it is wrong. ``model`` is not used: the
        grading models are."""
        if not _IN_PROCESS:
            _IN_PROCESS["inside"] = Models(IN_PROCESS_MODELS)
            _IN_PROCESS["refs"] = References(IN_PROCESS_MODELS)
        inside = _IN_PROCESS["inside"]
        records = [{"case": key, **record(check, key, fn, inside)} for key in cases(check, inside)]
        message = judge_check(check, json.loads(json.dumps(records)), _IN_PROCESS["refs"])
        if message:
            raise AssertionError(message)
        print("Passed.")

    run.__name__ = check.name
    return run


def __getattr__(name: str) -> Callable[..., None]:
    """``check_NAME``: the registry's check of that name, run in-process."""
    if name in REGISTRY:
        return in_process(REGISTRY[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# Kept importable from here for the tests that write learners' loops with them.
from .attention_heads import loop_patching  # noqa: E402
from .path_patching import path_loop  # noqa: E402
from .residual_patching import array, heatmap_problem  # noqa: E402

__all__ = [
    "Candidate",
    "Check",
    "Expected",
    "Key",
    "Models",
    "PromptSet",
    "REGISTRY",
    "References",
    "array",
    "cases",
    "decode",
    "discover",
    "heatmap_problem",
    "in_process",
    "judge",
    "loop_patching",
    "path_loop",
    "record",
]
