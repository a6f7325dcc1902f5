"""The class's record in an output folder, one per assignment, that only grows.

``grades.csv`` holds one row per learner (and per entry that was skipped), ``grading.log`` every
run's lines, ``run.json`` every run's settings. A run into an existing folder adds or updates the
rows of the learners it graded and keeps every other row; a learner graded again keeps the newest
row, and the log keeps the history. Whatever adds results to a folder (a grading run, ``--no-run``,
a merge of shards) goes through :meth:`ClassRecord.update`, then writes :meth:`ClassRecord.files`
in the same commit as the gradebook and the feedback pages.

``run.json`` is ``{"assignment": NAME, "runs": [RUN, ...], "learners": {ID: INDEX}}``: each run's
settings (sandbox, models, limits, late rule) in order, and for each learner the index in ``runs`` of
the run that produced its current result.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

BASE_FIELDS = ("student", "score", "max_score", "status", "detail")
# When the submission was handed in (UTC), days late, points taken off (see autograder/late.py).
LATE_FIELDS = ("submitted", "late", "penalty")
FILES = ("grades.csv", "grading.log", "run.json")


class RecordError(RuntimeError):
    """The folder's record belongs to something else; the message says what to do."""


@dataclass
class ClassRecord:
    assignment: str | None = None
    rows: dict[str, dict[str, str]] = field(default_factory=dict)  # by learner id (or skipped entry's name)
    runs: list[dict] = field(default_factory=list)
    learners: dict[str, int] = field(default_factory=dict)
    log: str = ""

    @classmethod
    def load(cls, out: Path) -> ClassRecord:
        """The record of the last complete state of ``out`` (empty when nothing was graded there)."""
        record = cls()
        if (out / "grades.csv").is_file():
            with open(out / "grades.csv", newline="", encoding="utf-8") as handle:
                record.rows = {row["student"]: row for row in csv.DictReader(handle) if row.get("student")}
        if (out / "run.json").is_file():
            saved = json.loads((out / "run.json").read_text(encoding="utf-8"))
            if "runs" not in saved:  # written by a grader before this record: one run
                saved = {"assignment": saved.get("assignment"), "runs": [saved]}
            record.assignment, record.runs = saved.get("assignment"), list(saved["runs"])
            record.learners = dict(saved.get("learners", {}))
        if (out / "grading.log").is_file():
            record.log = (out / "grading.log").read_text(encoding="utf-8")
        return record

    def check(self, assignment: str, out: Path) -> None:
        """Refuse to mix two assignments in one folder."""
        if self.assignment and self.assignment != assignment:
            raise RecordError(
                f"{out} holds the grades of {self.assignment}: grade {assignment} into another "
                "--out folder (one folder per assignment)"
            )

    def last(self, key: str) -> object:
        """The value of ``key`` in the newest run that recorded one (None if none did)."""
        return next((run[key] for run in reversed(self.runs) if run.get(key) is not None), None)

    def update(self, rows: list[dict[str, str]], run: dict, log: list[str], produced: list[str]) -> list[str]:
        """Add the run ``run`` (its rows, its log lines; ``produced``: the learners whose results it
        computed, for ``learners``). A ``skipped`` row never replaces a learner's result: it is
        logged instead. Returns the log lines of such rows."""
        self.assignment = self.assignment or run.get("assignment")
        self.runs.append(run)
        kept = []
        for row in rows:
            old = self.rows.get(row["student"])
            if row["status"] == "skipped" and old is not None and old["status"] != "skipped":
                kept.append(f"{row['student']}: {row['detail']}; its earlier result is kept")
                continue
            self.rows[row["student"]] = row
        for student in produced:
            self.learners[student] = len(self.runs) - 1
        header = f"grading run {len(self.runs)}: {json.dumps(run)}"
        self.log += "\n".join([header, *log, *kept]) + "\n"
        return kept

    def files(self, questions: list[str]) -> dict[str, str]:
        """``grades.csv`` (one column of points per graded cell in ``questions``), ``grading.log``,
        ``run.json``: {name: text}."""
        fields = [*BASE_FIELDS, *LATE_FIELDS, *questions]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        writer.writerows({name: row.get(name, "") for name in fields} for _, row in sorted(self.rows.items()))
        record = {"assignment": self.assignment, "runs": self.runs, "learners": dict(sorted(self.learners.items()))}
        return {
            "grades.csv": buffer.getvalue(),
            "grading.log": self.log,
            "run.json": json.dumps(record, indent=1, ensure_ascii=False) + "\n",
        }
