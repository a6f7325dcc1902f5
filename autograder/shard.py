"""Grading a class in shards (``grade --shard I/N``) and merging the shards' outputs (``merge``).

**Which shard grades what.** Every entry of the submissions folder (a learner's notebook, or an entry
that gets a ``skipped`` row) belongs to shard ``sha256(name) mod N``, ``name`` being the learner id or
the entry's file name. The folder is listed and checked as a whole first (so that two files with the
same learner id are still caught), then each shard keeps its own entries: the share depends on no
listing order and no other entry, so every entry is in exactly one shard even when learners are added
to the folder between two shards' runs.

**Merging.** ``merge --out OUT SHARD_OUT...`` checks that the shards are shards ``0..N-1`` of one
split of one assignment, graded on the current source with one model, and that none is in use or
holds hand-given scores; then it copies each shard's graded notebooks (``nbgrader/autograded``) into
``OUT`` and records them in ``OUT``'s gradebook as the ``--no-run`` path does (:func:`autograder.record.save`,
what :meth:`autograder.grade.Grader.collect` calls). What that keeps: the automatic scores (the verdicts
are the test cells' outputs in the graded notebook), the "No response." comments and which cells are
to grade by hand. What it cannot know (a sandbox killed after the last test, a notebook that never
ran) is in the shard's ``grades.csv``: each learner's row there is the merged row, so the merged
``grades.csv`` is the one a single run writes, byte for byte. The feedback pages are the shard's,
copied: nbgrader would write the same page again from the same notebook and scores, at one process
per learner, which would make the merge of a large class as slow as a sandbox. Hand-given scores
live only in a shard's gradebook: a shard holding some is refused (give them after merging).
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import time
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import nbformat
from nbgrader.api import Gradebook

from autograder import interrupt, record, sandbox, summary
from autograder.classrecord import BASE_FIELDS, ClassRecord, RecordError
from autograder.config import assignments, environment
from autograder.grade import GRADING_MODELS, TIMEOUTS, Grade, Grader, GradingError, OutputFolder, Submission, learner_id
from autograder.release import source_notebook


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (``0 <= index < count``)."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def owns(self, name: str) -> bool:
        """Whether the entry ``name`` (a learner id, or a skipped entry's file name) is this shard's."""
        return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big") % self.count == self.index

    def select(self, subs: list[Submission], skipped: list[Grade]) -> tuple[list[Submission], list[Grade]]:
        """This shard's share of a folder's inventory (:func:`autograder.grade.inventory`)."""
        return [s for s in subs if self.owns(s.student)], [g for g in skipped if self.owns(g.student)]


def parse_shard(text: str) -> Shard:
    """``I/N`` as a :class:`Shard`, or :class:`GradingError` saying what to write."""
    index, slash, count = text.partition("/")
    if slash and index.isdigit() and count.isdigit() and 0 <= int(index) < int(count) <= 10_000:
        return Shard(int(index), int(count))
    raise GradingError(
        f"--shard must be I/N, shard I of N counted from 0 (0 <= I < N <= 10000; e.g. 0/4 ... 3/4), not {text!r}"
    )


@dataclass
class ShardOutput:
    """What one shard's grading run left in its ``--out`` folder."""

    folder: Path
    run: dict
    rows: list[dict[str, str]]
    log: list[str]

    @property
    def shard(self) -> Shard:
        return Shard(self.run["shard"]["index"], self.run["shard"]["count"])


def read_shard(folder: Path, assignment: str) -> ShardOutput:
    """A shard's output folder, checked: a complete shard run of ``assignment`` on its current source."""
    book = ClassRecord.load(folder)
    run = book.runs[-1] if book.runs else {}
    if not isinstance(run.get("shard"), dict) or len(book.runs) != 1:
        raise GradingError(f"{folder} was not graded as one shard run: grade it with --shard I/N into an empty --out")
    if book.assignment != assignment:
        raise GradingError(f"{folder} holds {book.assignment!r}, not {assignment!r}")
    graded_on = folder / "nbgrader" / "source" / assignment / f"{assignment}.ipynb"
    if not graded_on.is_file() or graded_on.read_bytes() != source_notebook(assignment).read_bytes():
        raise GradingError(f"{folder} was graded on another version of {assignment}: grade that shard again")
    if hand_scored(folder / "nbgrader" / "gradebook.db", assignment):
        raise GradingError(
            f"{folder} holds hand-given scores, which a merge cannot carry: merge first, then "
            "give them in the merged folder (python -m autograder score)"
        )
    rows = list(book.rows.values())
    if any(tuple(row)[: len(BASE_FIELDS)] != BASE_FIELDS for row in rows):
        raise GradingError(f"{folder / 'grades.csv'} is not a grades.csv of this grader")
    log = [line for line in book.log.splitlines() if not line.startswith("grading run")]
    return ShardOutput(folder, run, rows, log)


def hand_scored(db: Path, assignment: str) -> bool:
    """Whether the gradebook ``db`` holds a score given by hand (``score`` or formgrader)."""
    if not db.is_file():
        return False
    with environment(), Gradebook(f"sqlite:///{db}") as gb:
        return any(
            grade.manual_score is not None
            for submission in gb.assignment_submissions(assignment)
            for notebook in submission.notebooks
            for grade in notebook.grades
        )


def check_split(shards: list[ShardOutput]) -> None:
    """The shards are ``0/N .. N-1/N`` of one split, each once, graded alike, no learner in two."""
    counts = {s.shard.count for s in shards}
    if len(counts) != 1:
        raise GradingError(
            f"the shards come from different splits ({', '.join(str(s.shard) for s in shards)}): "
            "merge the shards of one --shard I/N run"
        )
    count = counts.pop()
    indices = sorted(s.shard.index for s in shards)
    missing = sorted(set(range(count)) - set(indices))
    if missing or len(indices) != count:
        what = f"shard {missing[0]}/{count} is missing" if missing else "a shard is given twice"
        raise GradingError(f"{what}: give each of the {count} shard folders once")
    for key in ("model", "sandbox"):
        if len({s.run.get(key) for s in shards}) != 1:
            raise GradingError(f"the shards were graded with different --{key}: grade them alike")
    seen: dict[str, Path] = {}
    for s in shards:
        for row in s.rows:
            name = row["student"].casefold()
            if name in seen:
                raise GradingError(
                    f"{row['student']} is in both {seen[name]} and {s.folder}: the shards must "
                    "come from one submissions folder"
                )
            seen[name] = s.folder


def plain_file(folder: Path, relative: Path) -> Path | None:
    """``folder / relative`` if it is a file reached through no link, else None."""
    path, parts = folder, []
    for part in relative.parts:
        path = path / part
        parts.append(path)
    return None if any(p.is_symlink() for p in parts) or not path.is_file() else path


def as_grade(row: dict[str, str]) -> Grade:
    number = lambda text: float(text) if text else None  # noqa: E731
    return Grade(row["student"], number(row["score"]), number(row["max_score"]), row["status"], row["detail"])


def merge(assignment: str, out: Path, shard_folders: list[Path], progress: bool = False) -> list[Grade]:
    """Join the shard outputs ``shard_folders`` into ``out`` (gradebook, ``grades.csv``, feedback,
    ``grading.log``, ``run.json``) as one run grading the whole folder would have written them."""
    if assignment not in assignments():
        raise GradingError(f"unknown assignment {assignment!r}: choose from {', '.join(assignments())}")
    out = Path(out).resolve()
    folders = [Path(f).resolve() for f in shard_folders]
    if not folders:
        raise GradingError("give the shards' output folders to merge")
    if out in folders:
        raise GradingError(f"{out} is one of the shards: merge into another --out folder")
    start = time.monotonic()
    with interrupt.remembered(), contextlib.ExitStack() as held, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nbgrader's SQLAlchemy warnings
        shards = []
        for folder in folders:
            if not (folder / "run.json").is_file():
                raise GradingError(f"{folder} holds no finished grading run (no run.json): grade that shard first")
            held.enter_context(OutputFolder(folder))  # no shard run writes while it is read
            shards.append(read_shard(folder, assignment))
        check_split(shards)
        shards.sort(key=lambda s: s.shard.index)
        first = shards[0].run
        model = first["model"]
        merged = held.enter_context(OutputFolder(out))
        staging = merged.stage()
        limits = sandbox.Limits(
            **{k: v for k, v in first["limits"].items() if k not in ("enforced", "whole_submission")}
        )
        grader = Grader(assignment, staging, model, first["sandbox"], *TIMEOUTS[model], limits)
        grader.prepare()
        rows: list[dict[str, str]] = []
        for shard in shards:
            for row in shard.rows:
                rows.append(row)
                student = row["student"]
                if row["status"] == "skipped":
                    continue
                if learner_id(f"{student}.ipynb") != student:  # a name of this grader's, never a path
                    raise GradingError(
                        f"{shard.folder / 'grades.csv'} names a learner {student!r} no grading run "
                        "writes: grade that shard again"
                    )
                page = plain_file(shard.folder, Path("feedback", f"{student}.html"))
                if page is None:
                    raise GradingError(f"{shard.folder} has no feedback page of {student}: grade that shard again")
                notebook = plain_file(
                    shard.folder, Path("nbgrader", "autograded", student, assignment, f"{assignment}.ipynb")
                )
                if notebook is not None:  # none when the submission never ran (crashed before nbgrader)
                    target = grader.autograded(student)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(notebook, target)
                    record.save(
                        grader.db, grader.course, assignment, student, nbformat.read(target, as_version=4), grader.note
                    )
                grader.write_page(student, page.read_text(encoding="utf-8"))
                if progress:
                    print(f"  merged {student} from shard {shard.shard}", flush=True)
        rows.sort(key=lambda r: r["student"])
        run_record = {
            "assignment": assignment,
            "executed": True,
            "model": model,
            "models": GRADING_MODELS[model],
            "sandbox": first["sandbox"],
            "device": first.get("device", "cpu"),
            "jobs": first.get("jobs"),
            "limits": first["limits"],
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "seconds": round(time.monotonic() - start, 1),
            "late": first.get("late"),
            "submissions": sum(s.run["submissions"] for s in shards),
            "skipped": sum(s.run["skipped"] for s in shards),
            "merged": [
                {
                    "shard": str(s.shard),
                    "folder": str(s.folder),
                    "seconds": s.run.get("seconds"),
                    "finished": s.run.get("finished"),
                }
                for s in shards
            ],
        }
        log = [f"shard {shard.shard}: {line}" for shard in shards for line in shard.log]
        log += [f"merge: {line}" for line in grader.log]
        book = ClassRecord.load(out)
        try:
            book.check(assignment, out)
        except RecordError as err:
            raise GradingError(str(err)) from None
        book.update(rows, run_record, log, [r["student"] for r in rows if r["status"] != "skipped"])
        files = book.files(grader.questions)
        files[summary.PAGE] = summary.of(staging, assignment, files["grades.csv"], run_record)
        with interrupt.deferred():
            merged.commit(files)
    return [as_grade(row) for row in rows]
