"""Command line: ``python -m autograder {release,grade,score,bench} ...`` (see ``--help``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from autograder import interrupt
from autograder.config import CELL_TIMEOUT, NOTEBOOK_TIMEOUT, assignments

# As in the sandbox (sandbox_path/rfc3987_syntax.py): jsonschema, imported with nbformat, skips its IRI
# checks instead of building some 40 lark grammars (seconds of CPU in every grading run).
sys.modules.setdefault("rfc3987_syntax", None)


class Parser(argparse.ArgumentParser):
    """argparse, with a bad option value told in one line."""

    def error(self, message: str) -> None:
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
    from autograder.grade import GradingError, grade

    try:
        grades = grade(args.submissions, args.assignment, args.out, cell_timeout=args.cell_timeout,
                       notebook_timeout=args.notebook_timeout, model=args.model, run=not args.no_run,
                       sandbox_kind=args.sandbox, jobs=args.jobs, progress=True, students=args.student,
                       late=(args.deadline, args.late_penalty, args.late_penalty_max))
    except GradingError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for g in grades:
        score = "-" if g.score is None else f"{g.score:g}"
        total = "-" if g.max_score is None else f"{g.max_score:g}"
        late = f" (late {g.late:.1f} days, -{g.penalty:g} points)" if g.late and g.penalty else ""
        print(f"{g.student:<24} {score:>5} / {total:<5} {g.status:<18} {g.detail}{late}")
    skipped = sum(g.status == "skipped" for g in grades)
    done = "reported again" if args.no_run else "graded"
    print(f"{len(grades) - skipped} submissions {done}, {skipped} entries skipped; every learner graded into this "
          f"folder: {args.out / 'grades.csv'}, feedback in {args.out / 'feedback'}")
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


def _bench(args: argparse.Namespace) -> int:
    from autograder.bench import bench

    bench(args.assignment, args.submissions)
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
    grade.add_argument("--notebook-timeout", type=seconds,
                       help=f"seconds per notebook ({NOTEBOOK_TIMEOUT}; 5400 on gpt2-small)")
    grade.add_argument("--model", default="ioi-mini", choices=("ioi-mini", "gpt2-small"),
                       help="the model the notebooks and the hidden tests run (%(default)s; the tests also run "
                            "on a second model of another shape)")
    grade.add_argument("--sandbox", default="auto", choices=("auto", "bwrap", "none"),
                       help="auto (default): bubblewrap, refused when missing; none: run learner code with your "
                            "own rights")
    grade.add_argument("--jobs", type=positive, default=1, help="submissions run at a time (%(default)s)")
    grade.add_argument("--no-run", action="store_true",
                       help="do not execute again: report every learner graded so far again from the last "
                            "run and the gradebook (after manual grading)")
    grade.add_argument("--student", action="append", metavar="ID",
                       help="grade only this learner (repeatable); the others in OUT_DIR are kept")
    grade.add_argument("--deadline", metavar="ISO8601",
                       help="the deadline (e.g. 2026-12-01T23:59, local time unless it says +01:00): a file "
                            "modified later is late; kept for later runs into OUT_DIR")
    grade.add_argument("--late-penalty", metavar="RATE",
                       help="points off per day or part of a day late, as a percentage of the maximum score "
                            "(e.g. 10%%/day; default 0%%/day)")
    grade.add_argument("--late-penalty-max", metavar="MAX",
                       help="the most a late submission loses (default 100%% of the maximum score)")
    grade.set_defaults(run=_grade)

    score = commands.add_parser("score", help="record a manual grade (e.g. of the written interpretation)")
    score.add_argument("out", type=Path, metavar="OUT_DIR", help="the --out folder of the grading run")
    score.add_argument("--assignment", required=True, choices=assignments())
    score.add_argument("--student", required=True)
    score.add_argument("--cell", required=True, help="grade id of the answer cell, e.g. interpretation")
    score.add_argument("--points", required=True, type=float)
    score.add_argument("--comment", help="a comment shown in the learner's feedback")
    score.set_defaults(run=_score)

    bench = commands.add_parser("bench", help="seconds per submission for a class of 20, --jobs 1 and 2, sandbox on")
    bench.add_argument("--assignment", choices=assignments(), help="default: every assignment")
    bench.add_argument("--submissions", type=positive, default=20, help="class size (%(default)s)")
    bench.set_defaults(run=_bench)

    args = parser.parse_args(argv)
    try:
        with interrupt.remembered():
            return args.run(args)
    except KeyboardInterrupt:
        print("interrupted: nothing was changed (the last complete run's grades, feedback and gradebook are "
              "kept); run the same command again", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
