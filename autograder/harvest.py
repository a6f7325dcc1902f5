"""What a graded test cell runs in the learner's kernel: call the learner's function on the graded
inputs and record what it returns. Nothing is judged here.

The grader replaces each hidden test ``check_NAME(learner_function, model)`` of an exercise by
``collect(GRADE_ID, "check_NAME", learner_function)``; this module (copied read-only into the
sandbox) calls the function on every case of ``cases`` and writes the returned values, as plain JSON,
to ``results/GRADE_ID.json`` in the sandbox's scratch folder. The grader outside the sandbox rebuilds
the same inputs, computes the references itself and compares (:mod:`autograder.checks`). Learner code
can change anything in this kernel, this module included: all it can gain is to write values, and
values are only accepted when they are right.

The cases are shared with the trusted side: each check of the registry (:mod:`autograder.checks`,
copied beside this module as ``autograder_checks``) lists its cases and builds their inputs, the same
way on both sides.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

if __package__:  # autograder.harvest, in the repository
    from autograder.checks import REGISTRY, Models, cases as check_cases, record
else:  # autograder_harvest, in the sandbox, beside the copy of the checks package
    from autograder_checks import REGISTRY, Models, cases as check_cases, record  # type: ignore[no-redef]

RESULTS = Path("results")
MODELS_VARIABLE = "AUTOGRADER_MODELS"  # comma-separated model names the checks run on
DEVICE_VARIABLE = "AUTOGRADER_DEVICE"  # where they run: cpu (default) or cuda (grade --device cuda)


def cases(check: str, models: Models) -> list[dict[str, Any]]:
    """The calls the check named ``check`` makes, as keys: model, prompt set index and what varies within a set."""
    return check_cases(REGISTRY[check], models)


def run_case(check: str, key: dict[str, Any], fn: Any, models: Models) -> dict[str, Any]:
    """Call ``fn`` on the inputs of one case of the check named ``check``; the record of what came back."""
    return record(REGISTRY[check], key, fn, models)


_MODELS: Models | None = None


def collect(grade_id: str, check: str, fn: Any) -> None:
    """Run ``fn`` on every case of ``check`` and write the records to ``results/GRADE_ID.json``."""
    global _MODELS
    if _MODELS is None:
        _MODELS = Models(
            os.environ.get(MODELS_VARIABLE, "ioi-mini,ioi-mini-reshaped").split(","),
            os.environ.get(DEVICE_VARIABLE, "cpu"),
        )
    if not callable(fn):
        records: list[dict[str, Any]] = [{"error": "missing"}]
    else:
        records = []
        for key in cases(check, _MODELS):
            _MODELS.model(key["model"]).reset_hooks()
            records.append({"case": key, **run_case(check, key, fn, _MODELS)})
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{grade_id}.json").write_text(json.dumps({"check": check, "records": records}))
    print("Recorded for grading.")
