"""Grade a folder of submitted notebooks: each run in a sandbox, scored outside it, nothing lost.

A run, start to end:

1. **Take the output folder**: ``OUT_DIR/.lock`` (an exclusive ``flock``) or refuse with one line; put
   back what an interrupted earlier run left half-swapped; copy the last complete state (nbgrader's
   course folder with the gradebook, the feedback pages) into ``OUT_DIR/.staging``.
2. **List the submissions**: ``SUBMISSIONS_DIR/LEARNER.ipynb``, read once and never written; every
   other entry (a folder, a symbolic link, another extension, a bad learner id, a file too large)
   gets a ``skipped`` row saying why.
3. **Run** (``--jobs`` at a time): each submission is rebuilt on the assignment's cells
   (:mod:`autograder.restore`) and executed in its own sandbox (:mod:`autograder.sandbox`,
   :mod:`autograder.runner`); its test cells only record what the learner's functions return
   (:mod:`autograder.harvest`).
4. **Score** (here, outside every sandbox): the recorded values are judged against references
   computed here (:mod:`autograder.checks`), the verdicts become the test cells' outputs, nbgrader's
   gradebook records the scores (:mod:`autograder.record`) and nbgrader writes the feedback pages.
5. **Commit**: ``grades.csv``, ``grading.log``, ``run.json`` (the class's record, which only grows:
   :mod:`autograder.classrecord`), ``summary.html`` (:mod:`autograder.summary`),
   the feedback pages and the course folder replace the previous ones,
   each by an atomic rename. An interruption before this step changes nothing; the next run starts
   again from the last complete state.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import html
import os
import re
import shutil
import sys
import threading
import time
import unicodedata
import warnings
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, TYPE_CHECKING, Callable, Iterator, Sequence, cast

import nbformat
from nbgrader.apps import NbGraderAPI

import patchlab
from patchlab.explore import STATIC_FIGURES

from autograder import gpu, interrupt, lms, record, restore, sandbox, summary, untrusted
from autograder.checks import REGISTRY, References, judge
from autograder.classrecord import ClassRecord, RecordError
from autograder.config import (
    CELL_TIMEOUT,
    NOTEBOOK_TIMEOUT,
    REPO_ROOT,
    assignments,
    environment,
    nbgrader_config,
    release_notebook,
)
from autograder.feedback import exercise_titles, hidden_test_lines, leaks, polish
from autograder.late import LatePolicy, LateRuleError, combine, timestamp
from autograder.release import source_notebook, stale_solutions
from autograder.sanitise import csv_cell, one_line, printable, with_csp

if TYPE_CHECKING:
    from autograder.shard import Shard

GRADING_MODELS = {"ioi-mini": ["ioi-mini", "ioi-mini-reshaped"], "gpt2-small": ["gpt2-small", "ioi-mini"]}
# Default (cell, notebook) time limits per model: GPT-2 small's patching loop is slow on a CPU.
TIMEOUTS = {"ioi-mini": (CELL_TIMEOUT, NOTEBOOK_TIMEOUT), "gpt2-small": (1800, 5400)}
MAX_SUBMISSION_BYTES = 20 * 1024 * 1024
# A test's records, by grading model (GPT-2 small with ioi-mini: ~10 MB in JSON; ioi-mini with its reshaped
# twin, about half as wide: ~4 MB): read and parsed in memory, so no larger than they need be.
MAX_RESULT_BYTES = {"ioi-mini": 16 * 1024 * 1024, "gpt2-small": 60 * 1024 * 1024}
MAX_EXECUTED_BYTES = 40 * 1024 * 1024
MAX_OUTPUT_CHARS = 20_000  # per output of a cell, in the feedback
STATE = ("nbgrader", "feedback")  # the folders a run replaces as a whole
COMPLETE = ".complete"  # in the staging folder: its run finished, the commit has begun (lists its files)
# What the learner's kernel imports as it starts, before the first cell (autograder/preload.py): the
# course's libraries, which every notebook imports, loaded with the garbage collector paused.
PRELOAD = ("torch", "transformer_lens.model_bridge", "patchlab", "patchlab.plots", "plotly.graph_objects")
# Errors the runner writes into a cell where the run stopped (the kernel died, a time limit).
STOP_ERRORS = ("DeadKernelError", "NotebookTimeoutError", "CellTimeoutError")


class GradingError(RuntimeError):
    """The grading run cannot start or go on; the message is one line saying what to do."""


@dataclass
class Grade:
    """One learner's result (or one skipped entry). ``score`` is None (an empty cell in the CSV,
    never 0) when the notebook did not run to its end or was not graded."""

    student: str
    score: float | None
    max_score: float | None
    status: str
    detail: str = ""
    seconds: float = 0.0
    submitted: datetime | None = None
    late: float | None = None  # days after the deadline (None: no deadline)
    penalty: float | None = None  # points taken off ``score`` for lateness
    questions: dict[str, float | None] = field(default_factory=dict)  # points per graded cell; None: not scored
    to_grade: list[str] = field(default_factory=list)  # answers waiting for a score by hand

    def __post_init__(self) -> None:  # a skipped file's name, a detail quoting the sandbox: safe to print
        self.student, self.detail = one_line(self.student, 300), one_line(self.detail, 1000)

    def row(self) -> dict[str, str]:
        fmt = lambda v: "" if v is None else f"{round(v, 4):g}"  # noqa: E731
        return {
            "student": csv_cell(self.student),
            "score": fmt(self.score),
            "max_score": fmt(self.max_score),
            "status": self.status,
            "detail": csv_cell(self.detail),
            "submitted": timestamp(self.submitted.timestamp()) if self.submitted else "",
            "late": "" if self.late is None else f"{self.late:.2f}",
            "penalty": fmt(self.penalty),
            **{gid: fmt(points) for gid, points in self.questions.items()},
        }

    def outcome(self) -> str:
        """One line for the console: the learner, its status and score, its run's time."""
        score = "" if self.score is None else f" {self.score:g}/{self.max_score:g}"
        took = f" in {self.seconds:.1f} s" if self.seconds else ""
        return f"{self.student}: {self.status}{score}{took}" + (f" ({self.detail})" if self.detail else "")


@dataclass
class Submission:
    student: str
    data: bytes
    mtime: float = 0.0  # the file's modification time (the time it was handed in, for --deadline)


@dataclass
class Execution:
    """What came back from one sandboxed run (all of it untrusted, read through :mod:`autograder.untrusted`)."""

    executed: nbformat.NotebookNode | None
    results: dict[str | None, list[dict]] = field(default_factory=dict)  # grade id: its records (checked)
    problem: str = ""  # why nothing usable came back
    killed: str = ""
    seconds: float = 0.0
    refused: dict[str | None, str] = field(default_factory=dict)  # grade id: why its result file was not used
    returncode: int | None = None
    oom_kills: int = 0


def learner_id(name: str) -> str | None:
    """The learner id of a file name ``ID.ipynb``: letters (any script), digits, ``._@+-``; not
    starting with a dot or a dash."""
    if not name.endswith(".ipynb"):
        return None
    stem = unicodedata.normalize("NFC", name[: -len(".ipynb")])
    return stem if re.fullmatch(r"[^\W_][\w.@+-]*", stem) and len(stem) <= 100 else None


def inventory(folder: Path, max_bytes: int = MAX_SUBMISSION_BYTES) -> tuple[list[Submission], list[Grade]]:
    """The submissions of ``folder`` and a ``skipped`` row for everything else in it."""
    subs, skipped, seen = [], [], set()
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        name = entry.name
        if name == lms.SIDECAR:  # what `import` took from the LMS of each submission
            continue
        why, student = "", learner_id(name)
        if entry.is_symlink():
            why = "a symbolic link: refused (copy the notebook itself into the folder)"
        elif entry.is_dir():
            why = "a folder: submissions must be notebooks directly in the submissions folder"
        elif not name.endswith(".ipynb"):
            why = "not a notebook (.ipynb)"
        elif student is None:
            why = "the file name is not a usable learner id (letters, digits, ._@+-; not starting with . or -)"
        elif student.casefold() in seen:
            why = "another file has the same learner id (names differing only in case or accents' encoding)"
        if not why:
            assert student is not None  # a None id sets `why` above
            try:
                fd = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW)
                with os.fdopen(fd, "rb") as handle:
                    data = handle.read(max_bytes + 1)
                    mtime = os.fstat(fd).st_mtime
            except OSError as err:
                why = f"could not be read ({err.strerror})"
            else:
                if len(data) > max_bytes:
                    why = f"larger than {max_bytes / 2**20:g} MiB: clear its outputs and submit again"
                else:
                    subs.append(Submission(student, data, mtime))
                    seen.add(student.casefold())
        if why:
            skipped.append(Grade(name, None, None, "skipped", why))
    return subs, skipped


class OutputFolder:
    """``OUT_DIR``, held by one run at a time, with its last complete state and a staging copy."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.staging = out / ".staging"
        self._lock: IO[str] | None = None
        self._gradebook: tuple[int, int] | None = None  # the live gradebook as staged

    def __enter__(self) -> OutputFolder:
        self.out.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.out / ".lock", "a+")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise GradingError(
                f"another grading run is using {self.out}: wait for it to finish, or grade into another --out folder"
            ) from None
        self.recover()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.recover()
        finally:
            assert self._lock is not None  # opened by __enter__
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()

    def recover(self) -> None:
        """Finish or undo what a run left: a commit that had begun is carried to its end, a staging
        folder whose run had not finished is removed (its scratch folders unmounted first), or, where
        something in it cannot be removed, set aside as ``.staging.aside-STAMP``: never in the way."""
        sandbox.unmount_below(self.out)
        if (self.staging / COMPLETE).exists():
            self.roll_forward()
        for name in STATE:  # a swap left half-done by a version of the grader without roll-forward
            live, old = self.out / name, self.out / f".old-{name}"
            if old.exists() and not live.exists():
                old.rename(live)
            self.discard(old)
        self.discard(self.staging)

    def discard(self, path: Path) -> None:
        """Remove ``path`` (:func:`untrusted.remove_tree`); what cannot be removed is renamed aside."""
        if not untrusted.remove_tree(path) and os.path.lexists(path):
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
            path.rename(path.with_name(f"{path.name}.aside-{stamp}"))

    def stage(self) -> Path:
        """A copy of the last complete state to work on."""
        self._gradebook = self.gradebook_state()
        self.staging.mkdir()
        for name in STATE:
            if (self.out / name).exists():
                shutil.copytree(self.out / name, self.staging / name, symlinks=True)
            else:
                (self.staging / name).mkdir()
        return self.staging

    def commit(self, files: dict[str, str]) -> None:
        """Replace the state folders and the top-level ``files`` ({name: text}) with the staging copy:
        once the staging copy is marked complete, a run stopped at any moment (even by kill -9) is
        carried to its end by the next (:meth:`recover`), so the folder never mixes two runs. Refused
        when the live gradebook changed since :meth:`stage` (scores typed into formgrader meanwhile),
        which the staging copy would overwrite."""
        if self.gradebook_state() != self._gradebook:
            raise GradingError(
                f"the gradebook {self.out / 'nbgrader' / 'gradebook.db'} changed during this run (scores "
                "entered in formgrader?): nothing was written, and they are kept; run the command again"
            )
        for name, text in files.items():
            atomic_write(self.staging / name, text)
        atomic_write(self.staging / COMPLETE, "".join(f"{name}\n" for name in files))
        self.roll_forward()

    def gradebook_state(self) -> tuple[int, int] | None:
        try:
            stat = (self.out / "nbgrader" / "gradebook.db").stat()
        except FileNotFoundError:
            return None
        return stat.st_mtime_ns, stat.st_size

    def roll_forward(self) -> None:
        """Move each part of a complete staging copy into place, each by an atomic rename; at any
        point it can be stopped and run again."""
        for name in STATE:
            new, live, old = self.staging / name, self.out / name, self.out / f".old-{name}"
            if new.exists():
                if live.exists():
                    self.discard(old)
                    live.rename(old)
                new.rename(live)
            self.discard(old)
        for name in (self.staging / COMPLETE).read_text(encoding="utf-8").split():
            if (self.staging / name).exists():
                os.replace(self.staging / name, self.out / name)
        self.discard(self.staging)


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


class Grader:
    """One grading run of one assignment into a staging copy of ``OUT_DIR``."""

    def __init__(
        self,
        assignment: str,
        staging: Path,
        model: str,
        sandbox_kind: str,
        cell_timeout: int,
        notebook_timeout: int,
        limits: sandbox.Limits,
        device: str = "cpu",
        devices: Sequence[str] = (),
    ) -> None:
        self.assignment, self.staging, self.model = assignment, staging, model
        self.device, self.devices = device, devices  # devices: the GPU's bubblewrap arguments (autograder.gpu)
        self.sandbox_kind, self.limits = sandbox_kind, limits
        self.cell_timeout, self.notebook_timeout = cell_timeout, notebook_timeout
        self.course = staging / "nbgrader"
        self.db = self.course / "gradebook.db"
        self.log: list[str] = []
        self._log_lock = threading.Lock()
        self.api = NbGraderAPI(config=nbgrader_config(self.course, self.db))
        self.source = nbformat.read(source_notebook(assignment), as_version=4)
        self.release = nbformat.read(release_notebook(assignment), as_version=4)
        self.hidden = hidden_test_lines(self.source)
        titles = exercise_titles(self.source)
        graded = [
            (i, c.metadata.nbgrader)
            for i, c in enumerate(self.source.cells)
            if c.metadata.get("nbgrader", {}).get("grade")
        ]
        self.questions = [meta["grade_id"] for _, meta in graded]  # grades.csv's columns of points
        self.titles = {meta["grade_id"]: titles[i] for i, meta in graded if titles[i]}
        self.points = {meta["grade_id"]: float(meta.get("points", 0)) for _, meta in graded}
        self.references = References(GRADING_MODELS[model], device)
        self.sandboxes = sandbox.Group()
        self.pages_due: list[Grade] = []  # scored, their feedback page to write (write_feedback)
        self.late: LatePolicy | None = None
        self.submitted: dict[str, datetime] = {}  # when each learner handed in, for the late rule

    def note(self, line: str) -> None:
        with self._log_lock:
            self.log.append(printable(line))

    # --- the gradebook ------------------------------------------------------------------------
    def prepare(self) -> None:
        """The assignment's source in nbgrader's course folder; a changed source starts a new gradebook,
        the old one kept under a name no later run reuses."""
        source = self.course / "source" / self.assignment / f"{self.assignment}.ipynb"
        new = source_notebook(self.assignment).read_bytes()
        if not source.exists() or source.read_bytes() != new:
            if self.db.exists():
                stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
                kept = self.course / f"gradebook.{stamp}.db.old"
                self.db.rename(kept)
                self.note(f"the assignment's source changed: new gradebook; the old one is {kept.name}")
            source.parent.mkdir(parents=True, exist_ok=True)
            source.write_bytes(new)
        if not self.db.exists():
            with environment():
                result = self.api.generate_assignment(self.assignment, force=True, create=True)
            interrupt.check()  # nbgrader catches a Ctrl-C as any other error
            if not result["success"]:
                raise GradingError(f"nbgrader could not register the assignment: {result.get('error', '')[-300:]}")

    def sort_out(self, subs: list[Submission]) -> tuple[list[Submission], list[Grade]]:
        """The submissions that are notebooks of this assignment, and a ``skipped`` row for each
        notebook of another (told by its grade ids, or its read-only cells' text when an editor
        stripped them). A file that is no readable notebook stays: its run reports it."""
        found = {name: restore.marks(nbformat.read(release_notebook(name), as_version=4)) for name in assignments()}
        own = {name: found[name] - set().union(*(m for other, m in found.items() if other != name)) for name in found}
        kept, skipped = [], []
        for sub in subs:
            try:
                nb = nbformat.reads(sub.data.decode("utf-8"), as_version=4)
                ours = restore.belongs(nb, own[self.assignment])
                other = next((name for name in own if restore.belongs(nb, own[name])), None)
            except Exception:  # not a notebook nbformat and nbgrader can read: its run says so
                ours = True
            if ours:
                kept.append(sub)
                continue
            why = (
                f"a notebook of {other}, not {self.assignment}: grade it with --assignment {other}"
                if other
                else f"not a notebook of {self.assignment} (none of its cells is the assignment's)"
            )
            self.note(f"{sub.student}: skipped: {why}")
            skipped.append(Grade(sub.student, None, None, "skipped", why))
        return kept, skipped

    def check_models(self) -> None:
        """Every grading model loads here (the references need them), or one line saying what to do."""
        from patchlab.models import ModelUnavailableError

        for name in self.references.models.names:
            try:
                self.references.models.model(name)
            except ModelUnavailableError as err:  # the ways out it names are a learner's: the grader's instead
                if not err.ways_out:
                    raise GradingError(f"cannot grade on {name}: {err}") from None
                raise GradingError(
                    f"cannot grade on {name}: {err.reason}. Load it once while online (python -c "
                    f"\"import patchlab; patchlab.load_model('{name}')\"), or grade with "
                    "--model ioi-mini"
                ) from None
        interrupt.check()  # a library on the way (torch, transformers) may have caught a Ctrl-C

    # --- phase 1: the sandboxed run ----------------------------------------------------------
    def execute(self, sub: Submission) -> tuple[restore.Rebuilt | None, Execution]:
        """Rebuild and run one submission in its sandbox; never raises for what the submission is (nor
        for anything but an interruption: that learner gets the grader's one-line reason)."""
        try:
            return self._execute(sub)
        except (sandbox.Stopped, KeyboardInterrupt):
            raise
        except Exception as err:  # noqa: BLE001 (one learner's run never ends the others')
            reason = f"the grader could not run it ({type(err).__name__}: {one_line(err, 200)})"
            self.note(f"{sub.student}: {reason}")
            return None, Execution(None, problem=reason)

    def _execute(self, sub: Submission) -> tuple[restore.Rebuilt | None, Execution]:
        if len(sub.data) > self.limits.notebook_mib * 2**20:
            return None, Execution(None, problem=f"larger than {self.limits.notebook_mib} MiB")
        try:  # its cells counted before nbformat reads them
            nb = untrusted.parse_notebook(sub.data, self.limits.cells)
            nbformat.validate(nb)
        except untrusted.Refused as why:
            return None, Execution(None, problem=str(why))
        except Exception as err:  # any unreadable file: reported, the others go on
            return None, Execution(None, problem=f"not a readable notebook ({type(err).__name__})")
        try:
            rebuilt = restore.rebuild(nb, self.release, self.source)
        except Exception as err:  # metadata no editor writes: report it, go on with the others
            return None, Execution(
                None, problem=f"its cells could not be matched to the assignment's ({type(err).__name__})"
            )
        work = self.staging / "work" / hashlib.sha256(sub.student.encode()).hexdigest()[:16]
        grader_dir = work.parent / "grader"
        with sandbox.Scratch(work, self.limits) as scratch:
            nbformat.write(restore.for_sandbox(rebuilt), work / "run.ipynb")
            result = sandbox.run(
                self.sandbox_kind,
                [
                    sys.executable,
                    "{grader}/runner.py",
                    "run.ipynb",
                    "executed.ipynb",
                    "--cell-timeout",
                    str(self.cell_timeout),
                    "--notebook-timeout",
                    str(self.notebook_timeout),
                    "--max-output",
                    str(MAX_OUTPUT_CHARS),
                    "--preload",
                    ",".join(PRELOAD),
                ],
                work,
                self.read_only(),
                grader_dir,
                self.kernel_env(),
                self.limits,
                group=self.sandboxes,
                devices=self.devices,
            )
            execution = self.read_back(work, rebuilt, result)
        self.note(
            f"{sub.student}: ran in {result.seconds:.1f} s in sandbox '{self.sandbox_kind}'"
            + (f", peak memory {result.peak_mib} MiB" if result.peak_mib is not None else "")
            + (f", killed: {result.killed}" if result.killed else "")
            + (f", {result.oom_kills} process(es) killed at the memory limit" if result.oom_kills else "")
            + ("" if not scratch.left else ", its scratch folder could not be removed (set aside at the end)")
        )
        return rebuilt, execution

    def read_back(self, work: Path, rebuilt: restore.Rebuilt, result: sandbox.Result) -> Execution:
        """What the run left in ``work``, read as hostile data: the executed notebook (as many cells as
        were run) and each test cell's own result file, checked against their schemas."""
        execution = Execution(
            None, killed=result.killed, seconds=result.seconds, returncode=result.returncode, oom_kills=result.oom_kills
        )
        try:
            data = untrusted.read_beneath(work, "executed.ipynb", MAX_EXECUTED_BYTES)
            execution.executed = untrusted.parse_notebook(data, len(rebuilt.notebook.cells), "its executed notebook")
        except untrusted.Refused as why:
            printed = one_line(result.output.strip()[-300:], 2000)[-300:]  # its end, escaped
            execution.problem = f"it left no usable executed notebook ({why})" + (
                f"; the sandbox printed: {printed}" if printed and not result.killed else ""
            )
        for index, (check, _) in rebuilt.checks.items():
            gid = restore.grade_id(rebuilt.notebook.cells[index])
            try:  # only the test cells' own files are read
                data = untrusted.read_beneath(work, f"results/{gid}.json", MAX_RESULT_BYTES[self.model])
                execution.results[gid] = untrusted.parse_results(data, check, REGISTRY[check].record_fields)
            except untrusted.Refused as why:
                execution.refused[gid] = str(why)
        return execution

    def read_only(self) -> list[Path]:
        paths = sandbox.python_read_only_paths()
        if self.model == "gpt2-small":
            from huggingface_hub.constants import HF_HUB_CACHE

            paths.append(Path(HF_HUB_CACHE))
        return paths

    def kernel_env(self) -> dict[str, str]:
        """The sandbox's whole environment: the grading models, offline, one thread, nothing on stderr."""
        env = {
            "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
            "HOME": "/tmp",
            "LANG": "C.UTF-8",
            # patchlab from the folder the references use (bound read-only), whatever the venv points at
            "PYTHONPATH": os.pathsep.join(["{grader}", str(Path(patchlab.__file__).resolve().parent.parent)]),
            "PATCHLAB_MODEL": self.model,
            "JUPYTER_PLATFORM_DIRS": "1",
            "JUPYTER_RUNTIME_DIR": "/tmp/jupyter-runtime",
            "IPYTHONDIR": "/tmp/ipython",
            "MPLCONFIGDIR": "/tmp/mpl",
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "OMP_WAIT_POLICY": "PASSIVE",
            "TQDM_DISABLE": "1",
            "PYTHONWARNINGS": "ignore",
            "PYTHONHASHSEED": "0",
            "MPLBACKEND": "Agg",
            "PLOTLY_RENDERER": "notebook_connected",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "AUTOGRADER_MODELS": ",".join(GRADING_MODELS[self.model]),
            "AUTOGRADER_DEVICE": self.device,
            # feedback pages drop scripts: explorable maps are drawn plain, without re-running their cells
            STATIC_FIGURES: "1",
        }
        if self.device == "cpu":  # no GPU for the learner's code either, whatever the sandbox
            env["CUDA_VISIBLE_DEVICES"] = ""
        if self.model == "gpt2-small":
            from huggingface_hub.constants import HF_HUB_CACHE

            env["HF_HUB_CACHE"] = str(Path(HF_HUB_CACHE).resolve())
        if self.sandbox_kind == "none":
            env["PATH"] += ":" + os.environ.get("PATH", "")
        return env

    def install_grader_files(self) -> None:
        """The modules the sandbox runs (runner, harvest with the checks package, preload) and the
        stand-ins of ``sandbox_path/``, copied where it can read them (and nothing else of ours)."""
        grader_dir = self.staging / "work" / "grader"
        grader_dir.mkdir(parents=True, exist_ok=True)
        here = Path(__file__).parent
        shutil.copy(here / "runner.py", grader_dir / "runner.py")
        shutil.copy(here / "harvest.py", grader_dir / f"{restore.HARVEST_MODULE}.py")
        (grader_dir / "autograder_checks").mkdir(exist_ok=True)
        for module in (here / "checks").glob("*.py"):  # the registry: how harvest calls the learner's functions
            shutil.copy(module, grader_dir / "autograder_checks" / module.name)
        shutil.copy(here / "preload.py", grader_dir / "autograder_preload.py")
        for module in (here / "sandbox_path").glob("*.py"):
            shutil.copy(module, grader_dir / module.name)

    # --- phase 2: trusted scoring -------------------------------------------------------------
    def score(self, sub: Submission, rebuilt: restore.Rebuilt | None, execution: Execution) -> Grade:
        """Judge, record in the gradebook and write the feedback page of one executed submission; any
        error while doing so makes this learner ``crashed`` with the grader's one-line reason, and
        leaves every other learner's row as it is."""
        try:
            return self._score(sub, rebuilt, execution)
        except KeyboardInterrupt:
            raise
        except Exception as err:  # noqa: BLE001 (never the whole class's run)
            reason = f"the grader could not score it ({type(err).__name__}: {one_line(err, 200)})"
            self.note(f"{sub.student}: {reason}")
            self.pages_due = [g for g in self.pages_due if g.student != sub.student]
            return self.not_run(sub.student, reason)

    def _score(self, sub: Submission, rebuilt: restore.Rebuilt | None, execution: Execution) -> Grade:
        if rebuilt is None or execution.executed is None:
            return self.not_run(sub.student, execution.problem or "it did not run", execution.killed)
        graded = rebuilt.notebook
        if len(execution.executed.cells) != len(graded.cells):
            return self.not_run(sub.student, "its executed notebook does not match what was run")
        stopped, never_ran = "", []  # never_ran: grade ids (None: a test cell without one)
        for index, (cell, ran) in enumerate(zip(graded.cells, execution.executed.cells)):
            if cell.cell_type != "code":
                continue
            outputs = untrusted.clean_outputs(ran.get("outputs"))
            if restore.is_test(cell):
                gid = restore.grade_id(cell)
                if not outputs and gid not in execution.results:  # the run ended before this test
                    never_ran.append(gid)
                    outputs = [
                        restore_error(
                            "NotebookTimeoutError" if execution.killed else "DeadKernelError",
                            "not run: the run had ended before this test",
                        )
                    ]
                cell.outputs = self.verdict(cell, rebuilt.checks.get(index), execution, outputs)
                stopped = stopped or stopped_by(outputs)
            else:
                cell.outputs = outputs
        if execution.killed and not stopped:
            stopped = "timed_out"
        grade = self.finish(sub.student, graded, stopped, execution)
        grade.detail = "; ".join(filter(None, [grade.detail, self.what_stopped(graded, execution, never_ran)]))
        return grade

    def what_stopped(self, graded: nbformat.NotebookNode, execution: Execution, never_ran: list[str | None]) -> str:
        """Which cell ran past which limit, where the kernel died, which tests never ran (for ``detail``)."""
        said = []
        for number, cell in enumerate(graded.cells, 1):
            names = [o.get("ename") for o in cell.get("outputs", []) if o.get("output_type") == "error"]
            label = f"cell {number}" + (f" ({restore.grade_id(cell)})" if restore.grade_id(cell) else "")
            evalues = " ".join(str(o.get("evalue", "")) for o in cell.get("outputs", []))
            if "CellTimeoutError" in names:
                said.append(f"{label} ran past its time limit ({self.cell_timeout} s per cell)")
            elif "NotebookTimeoutError" in names and not evalues.startswith("not run"):
                said.append(f"{label} ran past the notebook's {self.notebook_timeout} s limit")
            elif "DeadKernelError" in names and "not run" not in evalues:
                said.append(f"the kernel died in {label}")
        if execution.oom_kills:
            said.append(
                f"the memory limit ({self.limits.submission_memory_mib} MiB, all its processes together) "
                f"was reached ({execution.oom_kills} process(es) killed)"
            )
        if never_ran:
            code = "" if execution.returncode in (0, None) else f" (exit code {execution.returncode})"
            said.append(f"its run ended{code} before {', '.join(map(str, never_ran))} ran")
        return one_line("; ".join(dict.fromkeys(said)), 500)

    def verdict(
        self, cell: nbformat.NotebookNode, check: tuple[str, str] | None, execution: Execution, outputs: Sequence[dict]
    ) -> list[nbformat.NotebookNode]:
        """The test cell's output, decided here: a pass line, or an error with the diagnosis."""
        gid = restore.grade_id(cell)
        errors = [o for o in outputs if o.get("output_type") == "error" and o.get("ename") in STOP_ERRORS]
        if errors:
            return [restore_error(errors[0].get("ename", "Error"), str(errors[0].get("evalue", ""))[:300])]
        records = execution.results.get(gid)
        if check is None or records is None:
            raised = next(
                (
                    f" (it stopped with {o.get('ename')}: {str(o.get('evalue', ''))[:200]})"
                    for o in outputs
                    if o.get("output_type") == "error"
                ),
                "",
            )
            refused = f" (its result file was not used: {execution.refused[gid]})" if gid in execution.refused else ""
            return [
                restore_error(
                    "AssertionError",
                    "this test could not record your results"
                    + raised
                    + refused
                    + ": run every cell of the notebook in order and keep the test cells as they are",
                )
            ]
        try:
            message = judge(check[0], records, self.references)
        except Exception as err:  # records that pass the schema and still cannot be judged
            message = f"your results could not be checked ({type(err).__name__})"
        if message is None:
            return [nbformat.v4.new_output("stream", name="stdout", text="Passed.\n")]
        return [restore_error("AssertionError", f"{check[1]}: {message}")]

    def finish(self, student: str, graded: nbformat.NotebookNode, stopped: str, execution: Execution) -> Grade:
        autograded = self.autograded(student)
        autograded.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(graded, autograded)
        when, late = self.submitted.get(student), self.late
        penalty = (lambda max_score: late.penalty(when, max_score)) if late and when else None
        scores = record.save(self.db, self.course, self.assignment, student, graded, self.note, when, penalty)
        grade = self.grade_of(student, scores, stopped, stopped_cells(graded))
        grade.seconds, grade.submitted = execution.seconds, when
        if self.late and when:
            grade.late = self.late.days_late(when)
        self.pages_due.append(grade)
        return grade

    def grade_of(self, student: str, scores: record.Scores, stopped: str, where: str) -> Grade:
        """The learner's row; ``where``: the cells a limit stopped (:func:`stopped_cells`)."""
        penalty = scores.penalty if self.late else None
        if stopped:
            before = {
                "crashed": "the kernel died before every test had run",
                "timed_out": "a time limit was hit before every test had run",
            }[stopped]
            return Grade(
                student,
                None,
                scores.max_score,
                stopped,
                "; ".join(filter(None, [before, where])),
                questions=dict.fromkeys(scores.cells),
            )
        score = scores.score - scores.penalty
        if scores.to_grade:
            return Grade(
                student,
                score,
                scores.max_score,
                "needs_manual_grade",
                "; ".join(filter(None, [f"to grade by hand: {', '.join(scores.to_grade)}", where])),
                penalty=penalty,
                questions=scores.cells,
                to_grade=scores.to_grade,
            )
        return Grade(student, score, scores.max_score, "graded", where, penalty=penalty, questions=scores.cells)

    def autograded(self, student: str) -> Path:
        return self.course / "autograded" / student / self.assignment / f"{self.assignment}.ipynb"

    def graded_learners(self) -> list[str]:
        """Every learner with a graded notebook of this assignment in the gradebook's folder."""
        folder = self.course / "autograded"
        return sorted(p.name for p in folder.iterdir() if self.autograded(p.name).is_file()) if folder.is_dir() else []

    def collect(self, student: str) -> Grade:
        """``--no-run``: the grade and feedback from the last run's notebook and the gradebook."""
        graded = nbformat.read(self.autograded(student), as_version=4)
        stopped = ""
        for cell in graded.cells:
            if restore.is_test(cell):
                stopped = stopped or stopped_by(cell.get("outputs", []))
        return self.finish(student, graded, stopped, Execution(graded))

    def not_run(self, student: str, detail: str, killed: str = "") -> Grade:
        status = "timed_out" if killed else "crashed"
        grade = Grade(
            student,
            None,
            None,
            status,
            one_line(detail or killed, 500),
            submitted=self.submitted.get(student),
            questions=dict.fromkeys(self.questions),
        )
        if self.late and grade.submitted:
            grade.late = self.late.days_late(grade.submitted)
        # an earlier run's graded notebook is not this result: --no-run must not report it again
        shutil.rmtree(self.autograded(student).parent, ignore_errors=True)
        try:  # the gradebook or the page may be what failed: the row is this one all the same
            grade.max_score = record.max_score(self.db, self.assignment)
            self.write_page(student, self.fallback_page(grade))
        except Exception as err:  # noqa: BLE001
            self.note(f"{student}: no feedback page ({type(err).__name__}: {one_line(err, 200)})")
        return grade

    # --- feedback -----------------------------------------------------------------------------
    def write_feedback(self) -> None:
        """The page of each scored submission not written yet, from nbgrader run for that learner
        (during a run, as each is scored, beside the submissions still running); a page nbgrader could
        not write, or one quoting a hidden test, is replaced by a plain one."""
        for grade in self.pages_due:
            folder = self.course / "feedback" / grade.student
            shutil.rmtree(folder, ignore_errors=True)  # only this run's page is read
            try:
                with environment():
                    self.api.generate_feedback(self.assignment, student_id=grade.student, force=True)
                page = folder / self.assignment / f"{self.assignment}.html"
                text = page.read_text(encoding="utf-8") if page.is_file() else ""
            except Exception as err:  # noqa: BLE001 (one learner's page never stops the others')
                self.note(f"{grade.student}: nbgrader's feedback failed ({type(err).__name__}: {one_line(err, 200)})")
                text = ""
            interrupt.check()  # nbgrader catches a Ctrl-C as any other error
            if text:
                text = polish(text, self.titles, {gid: self.points.get(gid, 0) for gid in grade.to_grade})
            leaked = leaks(text, self.hidden)
            if not text or leaked:
                self.note(
                    f"{grade.student}: feedback replaced: "
                    + ("it quoted hidden tests" if leaked else "nbgrader wrote none")
                )
                text = self.fallback_page(grade)
            self.write_page(grade.student, text)
        self.pages_due = []

    def write_page(self, student: str, text: str) -> None:
        """A feedback page, with the Content-Security-Policy that lets nothing in it run or load."""
        atomic_write(self.staging / "feedback" / f"{student}.html", with_csp(text))

    def fallback_page(self, grade: Grade) -> str:
        title = html.escape(f"{self.assignment}: {grade.student}")
        score = "not scored" if grade.score is None else f"{grade.score:g}"
        total = "" if grade.max_score is None else f" / {grade.max_score:g}"
        return (
            f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{title}</title></head><body>"
            f"<h1>{title}</h1><p>Status: <b>{grade.status}</b></p><p>Score: {score}{total}</p>"
            f"<p>{html.escape(grade.detail)}</p></body></html>\n"
        )


class Runs:
    """The sandboxed runs of a grading run, ``jobs`` at a time (threads waiting on their sandboxes),
    handed back as each ends; on any exception or Ctrl-C in the ``with`` block, the runs not started
    are cancelled and ``sandboxes`` stopped (those running killed, none started after)."""

    def __init__(
        self,
        execute: Callable[[Submission], tuple[restore.Rebuilt | None, Execution]],
        subs: list[Submission],
        jobs: int,
        sandboxes: sandbox.Group,
    ) -> None:
        self.execute, self.subs, self.jobs, self.sandboxes = execute, subs, jobs, sandboxes

    def __enter__(self) -> Runs:
        self.pool = ThreadPoolExecutor(max_workers=self.jobs)
        try:
            self.futures = {self.pool.submit(self.execute, sub): sub for sub in self.subs}
        except BaseException:  # Ctrl-C while the runs are handed out: stop those already started
            self.__exit__(*sys.exc_info())
            raise
        return self

    def completed(self) -> Iterator[tuple[Submission, tuple[restore.Rebuilt | None, Execution]]]:
        for future in as_completed(self.futures):
            yield self.futures[future], future.result()

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        if kind is None:
            self.pool.shutdown()
            return
        self.sandboxes.stop()  # the running ones killed, no more started: the threads end at once
        self.pool.shutdown(wait=True, cancel_futures=True)


# What stopped a cell, for grades.csv's detail (runner.py writes these errors into the cell).
STOP_LIMITS = {
    "CellTimeoutError": "the cell time limit (--cell-timeout)",
    "NotebookTimeoutError": "the notebook time limit (--notebook-timeout)",
    "DeadKernelError": "the kernel dying (it exited, was killed or ran out of memory)",
}


def stopped_cells(nb: nbformat.NotebookNode, most: int = 3) -> str:
    """The cells of a graded notebook that a limit stopped, in words ('' if none): "cell 12 (1.2 Mean
    logit difference) stopped by the cell time limit (--cell-timeout)". Cells left unrun after a
    notebook timeout or a dead kernel are not named again."""
    titles = exercise_titles(nb)
    found: list[tuple[int, str]] = []
    for index, cell in enumerate(nb.cells):
        errors = (
            [o.get("ename") for o in cell.get("outputs", []) if isinstance(o, dict) and o.get("output_type") == "error"]
            if cell.cell_type == "code"
            else []
        )
        stop = next((name for name in errors if name in STOP_LIMITS), None)
        if stop and (not found or stop == "CellTimeoutError" or found[-1][1] != stop):
            found.append((index, stop))
    words = [
        f"cell {index + 1}" + (f" ({titles[index]})" if titles[index] else "") + f" stopped by {STOP_LIMITS[stop]}"
        for index, stop in found[:most]
    ]
    return "; ".join(words + ([f"{len(found) - most} more"] if len(found) > most else []))


def stopped_by(outputs: Sequence[dict]) -> str:
    """``crashed`` or ``timed_out`` when a test cell's outputs say the run stopped there, else ''."""
    names = {o.get("ename") for o in outputs if o.get("output_type") == "error"}
    if not names & set(STOP_ERRORS):
        return ""
    return "crashed" if "DeadKernelError" in names else "timed_out"


def restore_error(ename: str, evalue: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_output("error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"])


def check_folders(submissions: Path, out: Path) -> None:
    """The submissions folder exists, and the output folder neither is nor contains nor lies in it."""
    if not submissions.is_dir():
        raise GradingError(f"{submissions} is not a folder of submitted notebooks")
    sub, dest = submissions.resolve(), out.resolve()
    if dest == sub or sub in dest.parents or dest in sub.parents:
        raise GradingError("the output folder must lie outside the submissions folder (and not contain it)")
    if REPO_ROOT.resolve() == dest or dest in REPO_ROOT.resolve().parents:
        raise GradingError("the output folder must not contain the course repository: choose a folder of its own")


def check_options(assignment: str, model: str, cell_timeout: int, notebook_timeout: int, jobs: int) -> None:
    if assignment not in assignments():
        raise GradingError(f"unknown assignment {assignment!r}: choose from {', '.join(assignments())}")
    if model not in GRADING_MODELS:
        raise GradingError(f"--model {model!r} cannot grade: choose {' or '.join(GRADING_MODELS)}")
    for name, value in (("--cell-timeout", cell_timeout), ("--notebook-timeout", notebook_timeout)):
        if not 1 <= value <= 24 * 3600:
            raise GradingError(f"{name} must be a number of seconds from 1 to 86400, not {value}")
    if not 1 <= jobs <= 64:
        raise GradingError(f"--jobs must be from 1 to 64, not {jobs}")


# What each whole-submission limit may be set to (--memory-mib ... --max-cells): (option, lowest, highest).
LIMIT_OPTIONS = {
    "submission_memory_mib": ("--memory-mib", 256, 2**20),
    "scratch_mib": ("--scratch-mib", 16, 2**20),
    "tmp_mib": ("--tmp-mib", 16, 2**16),
    "output_kib": ("--output-kib", 16, 2**20),
    "notebook_mib": ("--max-notebook-mib", 1, 1024),
    "cells": ("--max-cells", 10, 100_000),
}


def check_limits(limits: sandbox.Limits) -> sandbox.Limits:
    """``limits``, each whole-submission limit within :data:`LIMIT_OPTIONS`, or one line saying which is not."""
    for name, (option, low, high) in LIMIT_OPTIONS.items():
        value = getattr(limits, name)
        if not isinstance(value, int) or not low <= value <= high:
            raise GradingError(f"{option} must be a whole number from {low} to {high}, not {value}")
    return limits


def grade(
    submissions: Path,
    assignment: str,
    out: Path,
    cell_timeout: int | None = None,
    notebook_timeout: int | None = None,
    model: str = "ioi-mini",
    run: bool = True,
    sandbox_kind: str = "auto",
    jobs: int = 1,
    limits: sandbox.Limits | None = None,
    progress: bool = False,
    shard: Shard | None = None,
    device: str = "cpu",
    submission_limits: dict[str, int] | None = None,
    students: list[str] | None = None,
    late: tuple[str | None, str | None, str | None] = (None, None, None),
    submitted: dict[str, datetime] | None = None,
) -> list[Grade]:
    """Grade every ``submissions/LEARNER.ipynb`` for ``assignment`` (only ``students`` when given) into
    ``out``: the learners graded are added to, or updated in, ``grades.csv``, ``feedback/LEARNER.html``,
    ``grading.log`` and ``run.json``; every other learner there is kept (:mod:`autograder.classrecord`).
    With ``run=False`` nothing is executed again: every learner graded so far is reported again from
    the last run and the gradebook (after manual grading). ``late``: the deadline, the penalty per day
    and its maximum as written on the command line (:func:`autograder.late.combine`; what is not given
    comes from the last rule recorded in ``out``); ``submitted``: when each learner handed in (default:
    the time in ``submissions/.lms.csv``, written by ``import``, else the file's modification time). Returns this run's rows. Raises :class:`GradingError` (one line)
    when the run cannot start. With ``shard``, only that shard's share
    (:mod:`autograder.shard`)."""
    submissions, out = Path(submissions).resolve(), Path(out).resolve()
    if model in TIMEOUTS:
        cell_timeout = cell_timeout or TIMEOUTS[model][0]
        notebook_timeout = notebook_timeout or TIMEOUTS[model][1]
    check_options(assignment, model, cell_timeout or 0, notebook_timeout or 0, jobs)
    assert cell_timeout and notebook_timeout  # check_options refused 0 (no timeout given, no default)
    # GPT-2 small and its caches need more address space than the course model.
    limits = limits or sandbox.Limits(
        memory_mib=6144 if model == "ioi-mini" else 16384,
        cpu_seconds=notebook_timeout + 60,
        wall_seconds=notebook_timeout + 120,
        submission_memory_mib=4096 if model == "ioi-mini" else 16384,
    )
    limits = check_limits(dataclasses.replace(limits, **(submission_limits or {})))
    stale = stale_solutions([assignment])
    if stale:
        raise GradingError(f"{'; '.join(stale)}: run `python -m autograder release` first")
    check_folders(submissions, out)
    if device not in gpu.DEVICES:
        raise GradingError(f"--device {device!r}: choose {' or '.join(gpu.DEVICES)}")
    try:
        kind = sandbox.resolve_kind(sandbox_kind) if run else "none"
        devices = gpu.bind_args() if device == "cuda" and run else []
        if device == "cuda":
            gpu.check_torch()
    except (sandbox.SandboxError, gpu.GpuError) as err:
        raise GradingError(str(err)) from None
    try:  # the LMS's times (``import`` wrote them) before the files' own
        submitted = {**lms.submitted_times(submissions), **(submitted or {})}
    except lms.LMSError as err:
        raise GradingError(str(err)) from None
    subs, skipped = inventory(submissions, limits.notebook_mib * 2**20)
    if shard is not None:
        subs, skipped = shard.select(subs, skipped)
    if students:
        subs, skipped = chosen(subs, skipped, students, submissions, need_files=run)
    start = time.monotonic()
    with interrupt.remembered(), OutputFolder(out) as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nbgrader's SQLAlchemy warnings
        book = ClassRecord.load(out)
        try:
            book.check(assignment, out)
        except RecordError as err:
            raise GradingError(str(err)) from None
        try:
            rule = combine(*late, cast("dict | None", book.last("late")))  # as LatePolicy.record wrote it
        except LateRuleError as err:
            raise GradingError(str(err)) from None
        staging = folder.stage()
        grader = Grader(assignment, staging, model, kind, cell_timeout, notebook_timeout, limits, device, devices)
        grader.late = rule
        grades: list[Grade] = []
        if run:
            subs, foreign = grader.sort_out(subs)
            skipped += foreign
            grader.submitted = {sub.student: datetime.fromtimestamp(sub.mtime, timezone.utc) for sub in subs}
            grader.submitted.update(submitted or {})
            grader.install_grader_files()
            with Runs(grader.execute, subs, jobs, grader.sandboxes) as runs:
                # While the first submissions run: the gradebook, the grading models (a model that
                # cannot load stops the run here, its sandboxes killed, nothing written), then each
                # submission scored, and its feedback page written, as its run ends (the references
                # computed at the first).
                grader.prepare()
                grader.check_models()
                for done, (sub, (rebuilt, execution)) in enumerate(runs.completed(), 1):
                    grades.append(grader.score(sub, rebuilt, execution))
                    grader.write_feedback()
                    if progress:
                        print(f"  [{done}/{len(subs)}] {grades[-1].outcome()}", flush=True)
        else:
            grader.prepare()
            on_disk = {sub.student: sub for sub in subs}
            wanted = {s.casefold() for s in students or []}
            learners = [s for s in grader.graded_learners() if not wanted or s.casefold() in wanted]
            for student in learners:  # as handed in when graded (the row's time), else the file's
                earlier = book.rows.get(student, {}).get("submitted", "")
                try:
                    grader.submitted[student] = datetime.fromisoformat(earlier)
                except ValueError:  # no time recorded (or the cell was edited by hand)
                    if student in on_disk:
                        grader.submitted[student] = datetime.fromtimestamp(on_disk[student].mtime, timezone.utc)
            grader.submitted.update(submitted or {})
            grades = [grader.collect(student) for student in learners]
            grades += [
                Grade(sub.student, None, None, "skipped", "not graded yet: grade without --no-run")
                for sub in subs
                if sub.student not in learners and sub.student not in book.rows
            ]
            grader.write_feedback()
        grades += skipped
        grades.sort(key=lambda g: g.student)
        entry = {
            "assignment": assignment,
            "executed": run,
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "seconds": round(time.monotonic() - start, 1),
            "late": rule.record() if rule else None,
        }
        if run:  # the sandbox, models and limits that produced the results of this run's learners
            entry.update(
                {
                    "model": model,
                    "models": GRADING_MODELS[model],
                    "sandbox": kind,
                    "device": device,
                    "jobs": jobs,
                    "limits": {
                        **limits.__dict__,
                        "enforced": sandbox.enforced_limits(kind),
                        "whole_submission": sandbox.whole_limits(kind),
                    },
                    "submissions": len(subs),
                    "skipped": len(skipped),
                }
            )
            if shard is not None:
                entry["shard"] = {"index": shard.index, "count": shard.count}
        else:
            entry["reported"] = sum(g.status != "skipped" for g in grades)
        produced = [g.student for g in grades if run and g.status != "skipped"]
        book.update([g.row() for g in grades], entry, grader.log, produced)
        files = book.files(grader.questions)
        files[summary.PAGE] = summary.of(staging, assignment, files["grades.csv"], entry)  # the class at a glance
        with interrupt.deferred():
            folder.commit(files)
    return grades


def chosen(
    subs: list[Submission], skipped: list[Grade], students: list[str], folder: Path, need_files: bool
) -> tuple[list[Submission], list[Grade]]:
    """``--student``: only these learners' submissions (and none of the other entries' rows); an id
    with no file is refused when the run needs the files."""
    wanted = {s.casefold() for s in students}
    found = {sub.student.casefold() for sub in subs}
    missing = [s for s in students if s.casefold() not in found]
    if need_files and missing:
        raise GradingError(
            f"no submission {missing[0]}.ipynb in {folder}: check the learner id (the file name without .ipynb)"
        )
    return (
        [sub for sub in subs if sub.student.casefold() in wanted],
        [g for g in skipped if g.student.removesuffix(".ipynb").casefold() in wanted],
    )


def set_manual_score(
    out: Path, assignment: str, student: str, cell: str, points: float, comment: str | None = None
) -> None:
    """Record a hand-given score for ``cell`` of ``student`` in the gradebook of an earlier run into
    ``out`` (the answer it scores is remembered: if it changes, the cell is to grade again)."""
    out = Path(out).resolve()
    if assignment not in assignments():
        raise GradingError(f"unknown assignment {assignment!r}: choose from {', '.join(assignments())}")
    with interrupt.remembered(), OutputFolder(out) as folder:
        if not (out / "nbgrader" / "gradebook.db").exists():
            raise GradingError(f"no gradebook in {out}: grade the submissions first")
        staging = folder.stage()
        course = staging / "nbgrader"
        autograded = course / "autograded" / student / assignment / f"{assignment}.ipynb"
        record.set_manual(
            course / "gradebook.db", course, assignment, student, cell, points, comment, autograded, GradingError
        )
        with interrupt.deferred():
            folder.commit({})
