"""The lifecycle of `python -m autograder grade`: a second run into a held folder, Ctrl-C and kill -9
in the middle of a run, a changed assignment source, bad options, a failed release."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from grading import ENV, ROOT, autograder, fixtures, grade, needs_sandbox, read_grades, snapshot  # tests/grading.py


def sandboxed_processes(folder: Path) -> list[str]:
    """The processes (anyone's) of grading sandboxes whose scratch folder lies under ``folder``: their
    bind mount names it in their mountinfo. Other tests' grading runs, beside this one, are not counted."""
    mark = "/".join(folder.parts[-2:])  # the folder's own part of the path (/tmp may be a mount of its own)
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if mark in (entry / "mountinfo").read_text(encoding="utf-8", errors="replace"):
                    found.append(f"{entry.name}: {(entry / 'cmdline').read_bytes().replace(bytes(1), b' ')[:200]!r}")
            except OSError:  # gone meanwhile, or not ours to read
                continue
    return found


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
        assert sandboxed_processes(tmp_path), "no sandbox of the run found: the check below would prove nothing"
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == code
        if sig == signal.SIGINT:
            assert err.strip().startswith("interrupted: nothing was changed") and len(err.strip().splitlines()) == 1
            assert not (out / ".staging").exists()
        time.sleep(1)
        assert sandboxed_processes(tmp_path) == [], "a process of the interrupted run survived it"
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


@needs_sandbox
def test_a_grading_model_that_cannot_load_stops_the_run_writing_nothing(tmp_path):
    """GPT-2 small missing from the cache: one line, nothing written, no sandbox left (the run's
    sandboxes start while the grader loads its models)."""
    submissions = one_submission(tmp_path)
    before = snapshot(submissions)
    env = {**ENV, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "empty-cache")}
    proc = subprocess.run(autograder("grade", submissions, "--assignment", "logit_difference", "--out",
                                     tmp_path / "out", "--model", "gpt2-small", "--sandbox", "bwrap"),
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "cannot grade on gpt2-small" in proc.stderr and "not in the Hugging Face cache" in proc.stderr
    assert "or grade with --model ioi-mini" in proc.stderr
    assert not (tmp_path / "out" / "grades.csv").exists() and not list((tmp_path / "out").glob("feedback/*"))
    assert snapshot(submissions) == before
    assert sandboxed_processes(tmp_path) == []


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
