"""End to end: `python -m autograder grade` on the submission fixtures, through the real sandbox.

The fixtures (tests/fixtures/submissions/build.py) are graded in six runs (`--jobs 2`, bubblewrap):
logit_difference (with entries that must be skipped, and a relative --out), residual_patching,
attention_heads, path_patching, an endless loop with a short cell timeout, and a residual_patching class graded, given a manual grade,
reported again (--no-run), and regraded after a learner changed the scored answer. Then the
lifecycle: a second run into a held folder, Ctrl-C and kill -9 in the middle of a run, a changed
assignment source, bad options, a failed release. The hostile submissions are in
tests/test_grading_attacks.py.
"""

from __future__ import annotations

import csv
import hashlib
import html
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from autograder.diagnose import MESSAGES
from autograder.feedback import hidden_test_lines, leaks

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("submission_fixtures", ROOT / "tests/fixtures/submissions/build.py")
fixtures = sys.modules["submission_fixtures"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fixtures)

# `python -m autograder` runs from the repository (it is not in the installed package), here from a temporary folder.
ENV = {**os.environ, "PATCHLAB_MODEL": "ioi-mini", "OMP_NUM_THREADS": "1",
       "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
LIMITS = ("--cell-timeout", "240", "--notebook-timeout", "900", "--jobs", "2")
SHORT_LIMITS = ("--cell-timeout", "20", "--notebook-timeout", "300")
HAS_BWRAP = shutil.which("bwrap") is not None
needs_sandbox = pytest.mark.skipif(not HAS_BWRAP and not os.environ.get("CI"),
                                   reason="bubblewrap is not installed (apt-get install bubblewrap)")


def autograder(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "autograder", *map(str, args)]


def grade(submissions: Path | str, assignment: str, out: Path | str, *options: str, cwd: Path | None = None,
          check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(autograder("grade", submissions, "--assignment", assignment, "--out", out,
                                     "--sandbox", "bwrap", *options), env=ENV, cwd=cwd, capture_output=True,
                          text=True, timeout=2400)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def read_grades(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "grades.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["student", "score", "max_score", "status", "detail"]
    return {row["student"]: row for row in rows}


def page_text(page: Path | str) -> str:
    """A feedback page (a file, or its HTML) as plain text, whitespace collapsed."""
    page = page.read_text(encoding="utf-8") if isinstance(page, Path) else page
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (relative path -> sha256), symlinks as their target."""
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            found[str(path.relative_to(folder))] = "-> " + os.readlink(path)
        elif path.is_file():
            found[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def add_entries_to_skip(folder: Path) -> None:
    (folder / "notes.txt").write_text("my notes", encoding="utf-8")
    (folder / "nested").mkdir()
    shutil.copy(ROOT / "exercises/logit_difference/logit_difference.ipynb", folder / "nested" / "hidden.ipynb")
    (folder / "outside.ipynb").symlink_to("/etc/passwd")
    (folder / "-dash.ipynb").write_text("{}", encoding="utf-8")


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Every group graded; for the rerun group, the results and pages of each of its runs."""
    if not HAS_BWRAP and not os.environ.get("CI"):
        pytest.skip("bubblewrap is not installed")
    base = tmp_path_factory.mktemp("autograder")
    folders = {}
    for group, group_fixtures in fixtures.GROUPS.items():
        folders[group] = base / "submissions" / group
        fixtures.write(group_fixtures, folders[group])
    add_entries_to_skip(folders["logit_difference"])
    before = {group: snapshot(folder) for group, folder in folders.items()}
    out = {group: base / "out" / group for group in folders}

    # Relative paths, as the instructors' guide prints them.
    grade(Path("submissions/logit_difference"), "logit_difference", Path("out/logit_difference"), *LIMITS, cwd=base)
    grade(folders["residual_patching"], "residual_patching", out["residual_patching"], *LIMITS)
    grade(folders["attention_heads"], "attention_heads", out["attention_heads"], *LIMITS)
    grade(folders["path_patching"], "path_patching", out["path_patching"], *LIMITS)
    grade(folders["logit_difference_endless"], "logit_difference", out["logit_difference_endless"], *SHORT_LIMITS)

    rerun, rerun_out = folders["residual_rerun"], out["residual_rerun"]
    grade(rerun, "residual_patching", rerun_out, *LIMITS)
    runs = {"first": read_grades(rerun_out), "first_pages": snapshot(rerun_out / "feedback")}
    grade(rerun, "residual_patching", rerun_out, "--no-run")
    runs["no_run_pages"] = snapshot(rerun_out / "feedback")
    scored = subprocess.run(autograder("score", rerun_out, "--assignment", "residual_patching", "--student",
                                       "answered", "--cell", "interpretation", "--points", "1.5", "--comment",
                                       "Good, but name the heads."), env=ENV, capture_output=True, text=True)
    assert scored.returncode == 0, scored.stderr
    grade(rerun, "residual_patching", rerun_out, "--no-run")
    runs["reported"] = read_grades(rerun_out)
    runs["reported_page"] = page_text(rerun_out / "feedback" / "answered.html")
    grade(rerun, "residual_patching", rerun_out, *LIMITS)
    runs["regraded"] = read_grades(rerun_out)
    # The learner hands in a new answer to the question already scored by hand.
    changed = nbformat.read(rerun / "answered.ipynb", as_version=4)
    next(c for c in changed.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "interpretation").source = (
        "A different answer.")
    nbformat.write(changed, rerun / "answered.ipynb")
    grade(rerun, "residual_patching", rerun_out, *LIMITS)
    runs["changed"] = read_grades(rerun_out)
    runs["changed_log"] = (rerun_out / "grading.log").read_text(encoding="utf-8")
    after = {group: snapshot(folder) for group, folder in folders.items()}
    return {"folders": folders, "out": out, "before": before, "after": after, "rerun": runs}


ONCE = [(group, f) for group in ("logit_difference", "logit_difference_endless", "residual_patching",
                                  "attention_heads", "path_patching") for f in fixtures.GROUPS[group]]
# Each assignment's points: automatic and manual together.
MAX_SCORES = {"logit_difference": 5, "residual_patching": 8, "attention_heads": 10, "path_patching": 8}


@pytest.mark.slow
@needs_sandbox
@pytest.mark.parametrize("group, fixture", ONCE, ids=[f"{g}-{f.name}" for g, f in ONCE])
def test_each_submission_gets_its_grade_status_and_diagnosis(graded, group, fixture):
    row = read_grades(graded["out"][group])[fixture.name]
    assert row["status"] == fixture.status, row
    expected = "" if fixture.score is None else f"{fixture.score:g}"
    assert row["score"] == expected, row
    assert float(row["max_score"]) == MAX_SCORES[fixture.assignment]
    text = page_text(graded["out"][group] / "feedback" / f"{fixture.name}.html")
    for name in fixture.diagnoses:
        assert " ".join(MESSAGES[name].split()) in text, f"diagnosis {name!r} missing from the feedback"
    if fixture.status in ("graded", "needs_manual_grade"):
        assert "Score" in text  # nbgrader's own feedback page, with the scores


@pytest.mark.slow
@needs_sandbox
def test_every_entry_that_is_not_graded_gets_a_skipped_row(graded):
    rows = read_grades(graded["out"]["logit_difference"])
    for name, reason in (("notes.txt", "not a notebook"), ("nested", "a folder"),
                         ("outside.ipynb", "symbolic link"), ("-dash.ipynb", "learner id")):
        assert rows[name]["status"] == "skipped" and reason in rows[name]["detail"], rows[name]
    pages = " ".join(p.read_text(encoding="utf-8") for p in (graded["out"]["logit_difference"] / "feedback").iterdir())
    assert "root:x:0:0" not in pages


@pytest.mark.slow
@needs_sandbox
def test_the_run_records_its_sandbox(graded):
    record = (graded["out"]["logit_difference"] / "run.json").read_text(encoding="utf-8")
    assert '"sandbox": "bwrap"' in record and '"ioi-mini-reshaped"' in record


@pytest.mark.slow
@needs_sandbox
def test_submitted_files_are_never_changed(graded):
    assert graded["after"] == graded["before"] or set(graded["after"]) == set(graded["before"])
    for group in ("logit_difference", "residual_patching", "logit_difference_endless", "attention_heads",
                  "path_patching"):
        assert graded["after"][group] == graded["before"][group], group


@pytest.mark.slow
@needs_sandbox
def test_no_feedback_page_holds_hidden_test_source_or_a_big_output(graded):
    for assignment in MAX_SCORES:
        hidden = hidden_test_lines(nbformat.read(ROOT / "solutions" / assignment / f"{assignment}.ipynb", 4))
        assert hidden
        for group, out in graded["out"].items():
            if group.startswith(assignment):
                for page in sorted((out / "feedback").glob("*.html")):
                    assert leaks(page.read_text(encoding="utf-8"), hidden) == [], page


@pytest.mark.slow
@needs_sandbox
def test_a_stuck_cell_is_interrupted_and_named(graded):
    page = page_text(graded["out"]["logit_difference_endless"] / "feedback" / "endless_loop.html")
    assert "CellTimeoutError" in page


@pytest.mark.slow
@needs_sandbox
def test_manual_grades_are_kept_until_the_answer_changes(graded):
    runs = graded["rerun"]
    assert runs["first"]["answered"]["status"] == "needs_manual_grade" and runs["first"]["answered"]["score"] == "6"
    assert runs["no_run_pages"] == runs["first_pages"], "--no-run must rewrite the very same feedback"
    assert runs["reported"]["answered"]["score"] == "7.5" and runs["reported"]["answered"]["status"] == "graded"
    assert "Good, but name the heads." in runs["reported_page"]
    assert runs["regraded"] == runs["reported"]
    assert runs["first"]["untouched"] == runs["regraded"]["untouched"]
    assert runs["regraded"]["untouched"]["score"] == "0"
    assert runs["changed"]["answered"]["status"] == "needs_manual_grade"
    assert runs["changed"]["answered"]["score"] == "6"
    assert "the answer 'interpretation' changed since it was scored (1.5 points" in runs["changed_log"]


# --- the lifecycle ---------------------------------------------------------------------------------

def one_submission(tmp_path: Path) -> Path:
    folder = tmp_path / "subs"
    fixtures.write([fixtures.LOGIT_DIFFERENCE[0]], folder)
    return folder


@pytest.mark.slow
@needs_sandbox
def test_an_interrupted_run_changes_nothing_and_the_next_recovers(tmp_path):
    subs, out = one_submission(tmp_path), tmp_path / "out"
    grade(subs, "logit_difference", out, "--no-run")  # an empty complete state: nothing graded yet
    grade(subs, "logit_difference", out, "--jobs", "1")
    before = snapshot(out)
    for sig, code in ((signal.SIGINT, 130), (signal.SIGKILL, -9)):
        proc = subprocess.Popen(autograder("grade", subs, "--assignment", "logit_difference", "--out", out,
                                           "--sandbox", "bwrap"), env=ENV, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while not (out / ".staging" / "work").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(3)  # the learner's kernel is running
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == code
        if sig == signal.SIGINT:
            assert err.strip().startswith("interrupted: nothing was changed") and len(err.strip().splitlines()) == 1
            assert not (out / ".staging").exists()
        time.sleep(1)
        alive = subprocess.run(["pgrep", "-f", "autograder_harvest|runner.py run.ipynb"], capture_output=True)
        assert alive.stdout == b"", "a process of the interrupted run survived it"
        after = snapshot(out)
        for name in ("grades.csv", "run.json", "nbgrader/gradebook.db", "feedback/solution.html"):
            assert after[name] == before[name], name
    again = grade(subs, "logit_difference", out, "--no-run")
    assert "solution" in again.stdout and read_grades(out)["solution"]["score"] == "5"
    assert not (out / ".staging").exists()


def test_a_second_run_into_a_held_folder_is_refused(tmp_path):
    import fcntl

    out = tmp_path / "out"
    out.mkdir()
    with open(out / ".lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        proc = grade(one_submission(tmp_path), "logit_difference", out, "--no-run", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"error: another grading run is using {out}: wait for it to finish, or grade "
                                   "into another --out folder")


@pytest.mark.parametrize("options, message", [
    (("--model", "gpt2-xl"), "invalid choice: 'gpt2-xl'"),
    (("--cell-timeout", "0"), "0 is not 1 or more"),
    (("--notebook-timeout", "soon"), "'soon' is not a whole number"),
    (("--jobs", "-1"), "-1 is not 1 or more"),
    (("--sandbox", "docker"), "invalid choice: 'docker'"),
])
def test_bad_option_values_are_refused_in_one_line(tmp_path, options, message):
    proc = subprocess.run(autograder("grade", tmp_path, "--assignment", "logit_difference", "--out",
                                     tmp_path / "out", *options), env=ENV, capture_output=True, text=True)
    assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_grade_refuses_an_output_folder_inside_the_submissions(tmp_path):
    (tmp_path / "learner.ipynb").write_text("{}", encoding="utf-8")
    proc = subprocess.run(autograder("grade", tmp_path, "--assignment", "logit_difference", "--out",
                                     tmp_path / "out"), env=ENV, capture_output=True, text=True)
    assert proc.returncode == 2 and "outside the submissions folder" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_without_bubblewrap_auto_refuses_with_the_way_out(tmp_path, monkeypatch):
    from autograder import sandbox

    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(sandbox.SandboxError, match="apt-get install bubblewrap.*--sandbox none"):
        sandbox.resolve_kind("auto")
    assert sandbox.resolve_kind("none") == "none"


def test_a_changed_source_never_overwrites_an_old_gradebook(tmp_path):
    from autograder.grade import Grader, OutputFolder
    from autograder.sandbox import Limits

    out = tmp_path / "out"
    kept = []
    for attempt in range(3):
        with OutputFolder(out) as folder:
            staging = folder.stage()
            source = staging / "nbgrader" / "source" / "logit_difference" / "logit_difference.ipynb"
            if source.exists():  # as if the assignment had been edited since the last run
                source.write_text(source.read_text(encoding="utf-8") + " ", encoding="utf-8")
            Grader("logit_difference", staging, "ioi-mini", "none", 60, 60, Limits()).prepare()
            folder.commit({})
        kept.append(sorted(p.name for p in (out / "nbgrader").glob("gradebook.*.db.old")))
    assert [len(k) for k in kept] == [0, 1, 2] and kept[1][0] in kept[2]


def test_a_failed_release_keeps_the_committed_notebooks_and_names_the_line(tmp_path, monkeypatch):
    from autograder import release

    source = (ROOT / "solutions/logit_difference/logit_difference.md").read_text(encoding="utf-8")
    broken = source.replace("grade_id: mean_logit_diff\n", "grade_id: logit_diff_per_prompt\n")
    assert broken != source
    folder = tmp_path / "solutions" / "logit_difference"
    folder.mkdir(parents=True)
    (folder / "logit_difference.md").write_text(broken, encoding="utf-8")
    monkeypatch.setattr(release, "SOLUTIONS_DIR", tmp_path / "solutions")
    committed = snapshot(ROOT / "exercises") | snapshot(ROOT / "solutions")
    line = broken.splitlines().index("  grade_id: logit_diff_per_prompt", broken.splitlines().index(
        "  grade_id: logit_diff_per_prompt") + 1) + 1
    with pytest.raises(release.ReleaseError, match=rf"logit_difference.md:{line}: grade_id 'logit_diff_per_prompt' "
                                                   "is used by two cells"):
        release.release(["logit_difference"], release_dir=tmp_path / "exercises")
    assert snapshot(ROOT / "exercises") | snapshot(ROOT / "solutions") == committed


def test_released_notebooks_hold_no_solution_and_no_hidden_test():
    for assignment in MAX_SCORES:
        source = nbformat.read(ROOT / "solutions" / assignment / f"{assignment}.ipynb", 4)
        released = (ROOT / "exercises" / assignment / f"{assignment}.ipynb").read_text(encoding="utf-8")
        for marker in ("BEGIN SOLUTION", "HIDDEN TESTS", "MARK SCHEME", "autograder"):
            assert marker not in released, (assignment, marker)
        assert leaks(released, hidden_test_lines(source)) == []
        solved = [line.strip() for cell in source.cells for line in
                  cell.source.split("### BEGIN SOLUTION")[-1].split("### END SOLUTION")[0].splitlines()
                  if "### BEGIN SOLUTION" in cell.source and len(line.strip()) > 12]
        code = "\n".join(c.source for c in nbformat.reads(released, 4).cells if c.cell_type == "code")
        assert solved and [line for line in solved if line in code] == [], assignment
        assert not list((ROOT / "exercises" / assignment).glob("*.md"))


def test_committed_exercises_are_a_fresh_release():
    proc = subprocess.run(autograder("release", "--check"), env=ENV, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
