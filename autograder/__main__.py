"""Command line: ``python -m autograder {release,grade,merge,score,import,export,summary,bench} ...`` (see ``--help``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from autograder import interrupt
from autograder.config import CELL_TIMEOUT, NOTEBOOK_TIMEOUT, assignments

if TYPE_CHECKING:
    from autograder.grade import Grade
    from autograder.shard import Shard

# As in the sandbox (sandbox_path/rfc3987_syntax.py): jsonschema, imported with nbformat, skips its IRI
# checks instead of building some 40 lark grammars (seconds of CPU in every grading run).
sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]  # None: "not importable"


class Parser(argparse.ArgumentParser):
    """argparse, with a bad option value told in one line."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _release(args: argparse.Namespace) -> int:
    from autograder.release import ReleaseError, release, stale_exercises, stale_solutions

    if args.check:
        problems = stale_solutions(args.names) + stale_exercises(args.names)
        for line in problems:
            print(f"out of date: {line}")
        if problems:
            print("run: python -m autograder release", file=sys.stderr)
        return 1 if problems else 0
    try:
        written = release(args.names)
    except ReleaseError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path}")
    return 0


def _grade(args: argparse.Namespace) -> int:
    from autograder.grade import LIMIT_OPTIONS, GradingError, grade

    chosen = {name: getattr(args, name) for name in LIMIT_OPTIONS if getattr(args, name) is not None}
    try:
        grades = grade(
            args.submissions,
            args.assignment,
            args.out,
            cell_timeout=args.cell_timeout,
            notebook_timeout=args.notebook_timeout,
            model=args.model,
            run=not args.no_run,
            sandbox_kind=args.sandbox,
            jobs=args.jobs,
            progress=True,
            shard=args.shard,
            device=args.device,
            submission_limits=chosen,
            students=args.student,
            late=(args.deadline, args.late_penalty, args.late_penalty_max),
        )
    except GradingError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return _report(grades, args.out, "reported again" if args.no_run else "graded")


def _merge(args: argparse.Namespace) -> int:
    from autograder.grade import GradingError
    from autograder.shard import merge

    try:
        grades = merge(args.assignment, args.out, args.shards, progress=True)
    except GradingError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return _report(grades, args.out, "merged")


def _report(grades: list[Grade], out: Path, done: str) -> int:
    """Print each learner's row and where the results are."""
    for g in grades:
        score = "-" if g.score is None else f"{g.score:g}"
        total = "-" if g.max_score is None else f"{g.max_score:g}"
        late = f" (late {g.late:.1f} days, -{g.penalty:g} points)" if g.late and g.penalty else ""
        print(f"{g.student:<24} {score:>5} / {total:<5} {g.status:<18} {g.detail}{late}")
    skipped = sum(g.status == "skipped" for g in grades)
    print(
        f"{len(grades) - skipped} submissions {done}, {skipped} entries skipped; every learner graded into this "
        f"folder: {out / 'grades.csv'}, feedback in {out / 'feedback'}"
    )
    return 0


def _score(args: argparse.Namespace) -> int:
    from autograder.grade import GradingError, set_manual_score

    try:
        set_manual_score(args.out, args.assignment, args.student, args.cell, args.points, args.comment)
    except GradingError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{args.student}: {args.cell} = {args.points:g}; rerun `grade ... --no-run` to update grades.csv")
    return 0


def _import(args: argparse.Namespace) -> int:
    from autograder.lms import LMSError, import_download, read_roster

    try:
        report = import_download(args.download, args.lms, read_roster(args.roster), args.into, args.replace)
    except LMSError as err:
        print("\n".join(f"error: {line}" for line in str(err).splitlines()), file=sys.stderr)
        return 2
    for line in report.lines:
        print(line)
    for line in report.problems:
        print(f"not imported: {line}")
    print(f"{report.written} notebooks written into {args.into}, {len(report.problems)} files not imported")
    return 0


def _export(args: argparse.Namespace) -> int:
    from autograder.grade import GradingError, OutputFolder
    from autograder.lms import LMSError, export, read_roster, write_export
    from autograder.results import ResultsError, read

    path = args.to or args.out / f"{args.assignment}-{args.format}.csv"
    try:
        if not args.out.is_dir():
            raise LMSError(f"{args.out} is not a folder: give the --out folder of a grading run")
        roster = read_roster(args.roster) if args.roster else None
        with OutputFolder(args.out):  # no grading run commits meanwhile
            done = export(read(args.out, args.assignment), args.format, roster, args.canvas_assignment_id or "")
            write_export(path, done.text)
    except (LMSError, ResultsError, GradingError) as err:
        print("\n".join(f"error: {line}" for line in str(err).splitlines()), file=sys.stderr)
        return 2
    for line in done.notes:
        print(line)
    print(f"wrote {path}")
    return 0


def _summary(args: argparse.Namespace) -> int:
    from autograder import summary
    from autograder.grade import GradingError, OutputFolder, atomic_write
    from autograder.results import ResultsError

    try:
        if not args.out.is_dir():
            raise ResultsError(f"{args.out} is not a folder: give the --out folder of a grading run")
        with OutputFolder(args.out):
            atomic_write(args.out / summary.PAGE, summary.of(args.out, args.assignment))
    except (ResultsError, GradingError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.out / summary.PAGE}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from autograder.bench import bench

    bench(args.assignment, args.submissions, rounds=args.rounds, out=args.out)
    return 0


def positive(text: str) -> int:
    """An argparse type: a whole number from 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not 1 or more")
    return value


def seconds(text: str) -> int:
    """An argparse type: a time limit in whole seconds, 1 to 86400."""
    value = positive(text)
    if value > 86400:
        raise argparse.ArgumentTypeError(f"{value} s is more than a day")
    return value


def shard(text: str) -> Shard:
    """An argparse type: ``I/N`` (:func:`autograder.shard.parse_shard`)."""
    from autograder.grade import GradingError
    from autograder.shard import parse_shard

    try:
        return parse_shard(text)
    except GradingError as err:
        raise argparse.ArgumentTypeError(str(err).removeprefix("--shard ")) from None


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python -m autograder", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    release = commands.add_parser("release", help="solutions/NAME/NAME.md -> NAME.ipynb -> exercises/NAME/")
    release.add_argument("names", nargs="*", help=f"assignments (default: all of {', '.join(assignments())})")
    release.add_argument("--check", action="store_true", help="only check that the committed files are current")
    release.set_defaults(run=_release)

    grade = commands.add_parser("grade", help="autograde SUBMISSIONS_DIR/LEARNER.ipynb into OUT_DIR")
    grade.add_argument("submissions", type=Path, metavar="SUBMISSIONS_DIR")
    grade.add_argument("--assignment", required=True, choices=assignments())
    grade.add_argument("--out", required=True, type=Path, metavar="OUT_DIR")
    grade.add_argument("--cell-timeout", type=seconds, help=f"seconds per cell ({CELL_TIMEOUT}; 1800 on gpt2-small)")
    grade.add_argument(
        "--notebook-timeout", type=seconds, help=f"seconds per notebook ({NOTEBOOK_TIMEOUT}; 5400 on gpt2-small)"
    )
    grade.add_argument(
        "--model",
        default="ioi-mini",
        choices=("ioi-mini", "gpt2-small"),
        help="the model the notebooks and the hidden tests run (%(default)s; the tests also run "
        "on a second model of another shape)",
    )
    grade.add_argument(
        "--sandbox",
        default="auto",
        choices=("auto", "bwrap", "none"),
        help="auto (default): bubblewrap, refused when missing; none: run learner code with your own rights",
    )
    grade.add_argument("--jobs", type=positive, default=1, help="submissions run at a time (%(default)s)")
    whole = grade.add_argument_group("limits of each submission as a whole (recorded in run.json)")
    whole.add_argument(
        "--memory-mib",
        dest="submission_memory_mib",
        type=positive,
        help="memory of all its processes and in-memory files together (4096; 16384 on gpt2-small)",
    )
    whole.add_argument("--scratch-mib", dest="scratch_mib", type=positive, help="its scratch folder (1024)")
    whole.add_argument("--tmp-mib", dest="tmp_mib", type=positive, help="its /tmp, and its /dev/shm (512 each)")
    whole.add_argument(
        "--output-kib",
        dest="output_kib",
        type=positive,
        help="of what the sandbox prints, kept (1024; the rest is read and dropped)",
    )
    whole.add_argument(
        "--max-notebook-mib",
        dest="notebook_mib",
        type=positive,
        help="a larger submitted notebook is skipped unread (20)",
    )
    whole.add_argument("--max-cells", dest="cells", type=positive, help="a notebook with more cells is not run (2000)")
    grade.add_argument(
        "--no-run",
        action="store_true",
        help="do not execute again: report every learner graded so far again from the last "
        "run and the gradebook (after manual grading)",
    )
    grade.add_argument(
        "--student",
        action="append",
        metavar="ID",
        help="grade only this learner (repeatable); the others in OUT_DIR are kept",
    )
    grade.add_argument(
        "--deadline",
        metavar="ISO8601",
        help="the deadline (e.g. 2026-12-01T23:59, local time unless it says +01:00): a file "
        "modified later is late; kept for later runs into OUT_DIR",
    )
    grade.add_argument(
        "--late-penalty",
        metavar="RATE",
        help="points off per day or part of a day late, as a percentage of the maximum score "
        "(e.g. 10%%/day; default 0%%/day)",
    )
    grade.add_argument(
        "--late-penalty-max",
        metavar="MAX",
        help="the most a late submission loses (default 100%% of the maximum score)",
    )
    grade.add_argument(
        "--device",
        default="cpu",
        choices=("cpu", "cuda"),
        help="cpu (default), or cuda: the NVIDIA GPU bound into the sandbox (its device nodes and "
        "driver libraries only), the references and the learner's code on it",
    )
    grade.add_argument(
        "--shard",
        type=shard,
        metavar="I/N",
        help="grade only shard I of N (from 0), into its own --out; join them with merge",
    )
    grade.set_defaults(run=_grade)

    merge = commands.add_parser("merge", help="join the --out folders of grade --shard 0/N ... N-1/N into one")
    merge.add_argument("shards", nargs="+", type=Path, metavar="SHARD_OUT", help="each shard's --out folder")
    merge.add_argument("--assignment", required=True, choices=assignments())
    merge.add_argument("--out", required=True, type=Path, metavar="OUT_DIR")
    merge.set_defaults(run=_merge)

    score = commands.add_parser("score", help="record a manual grade (e.g. of the written interpretation)")
    score.add_argument("out", type=Path, metavar="OUT_DIR", help="the --out folder of the grading run")
    score.add_argument("--assignment", required=True, choices=assignments())
    score.add_argument("--student", required=True)
    score.add_argument("--cell", required=True, help="grade id of the answer cell, e.g. interpretation")
    score.add_argument("--points", required=True, type=float)
    score.add_argument("--comment", help="a comment shown in the learner's feedback")
    score.set_defaults(run=_score)

    from autograder.lms import FORMATS, LMSS

    importing = commands.add_parser("import", help="an LMS's download of submissions -> SUBMISSIONS_DIR/LEARNER.ipynb")
    importing.add_argument("download", type=Path, metavar="DOWNLOAD", help="the zip file or the folder it unzips to")
    importing.add_argument("--lms", required=True, choices=LMSS)
    importing.add_argument("--roster", required=True, type=Path, help="CSV file: id, name, email, lms_id")
    importing.add_argument("--into", required=True, type=Path, metavar="SUBMISSIONS_DIR")
    importing.add_argument(
        "--replace",
        action="store_true",
        help="replace a learner's notebook already there that differs (each one is named)",
    )
    importing.set_defaults(run=_import)

    exporting = commands.add_parser("export", help="a grades file Canvas or Moodle imports, or a per-question CSV")
    exporting.add_argument("out", type=Path, metavar="OUT_DIR", help="the --out folder of the grading run")
    exporting.add_argument("--assignment", required=True, choices=assignments())
    exporting.add_argument("--format", required=True, choices=FORMATS)
    exporting.add_argument("--roster", type=Path, help="CSV file: id, name, email, lms_id (needed for canvas)")
    exporting.add_argument(
        "--canvas-assignment-id",
        help="the assignment's id in Canvas (in its address): the "
        "column is then titled 'NAME (ID)' and Canvas matches it to that assignment",
    )
    exporting.add_argument("--to", type=Path, help="the file to write (default: OUT_DIR/NAME-FORMAT.csv)")
    exporting.set_defaults(run=_export)

    summarising = commands.add_parser("summary", help="write OUT_DIR/summary.html, the class at a glance")
    summarising.add_argument("out", type=Path, metavar="OUT_DIR", help="the --out folder of the grading run")
    summarising.add_argument("--assignment", required=True, choices=assignments())
    summarising.set_defaults(run=_summary)

    bench = commands.add_parser(
        "bench",
        help="seconds per submission for a class, --jobs 1 and 2 interleaved over "
        "rounds, sandbox on: medians with their min-max",
    )
    bench.add_argument("--assignment", choices=assignments(), help="default: every assignment")
    bench.add_argument("--submissions", type=positive, default=8, help="class size (%(default)s)")
    bench.add_argument("--rounds", type=positive, default=5, help="rounds, --jobs 1 and 2 once each (%(default)s)")
    bench.add_argument("--out", type=Path, metavar="DIR", help="write DIR/bench.json")
    bench.set_defaults(run=_bench)

    args = parser.parse_args(argv)
    try:
        with interrupt.remembered():
            return args.run(args)
    except KeyboardInterrupt:
        print(
            "interrupted: nothing was changed (the last complete run's grades, feedback and gradebook are "
            "kept); run the same command again",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
