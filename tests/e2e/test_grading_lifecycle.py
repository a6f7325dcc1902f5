"""The lifecycle of `python -m autograder grade`: a second run into a held folder, Ctrl-C and kill -9
in the middle of a run, a changed assignment source, bad options, a failed release."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
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
                lines = (entry / "mountinfo").read_text(encoding="utf-8", errors="replace").splitlines()
                # (a scratch tmpfs a killed grader left mounted is seen by every process: not a process of the run)
                if any(mark in line and "autograder-scratch" not in line for line in lines):
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
        while not sandboxed_processes(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1)  # the learner's kernel is starting
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
    assert str(out) not in Path("/proc/self/mountinfo").read_text(), "a scratch folder is still mounted"


class Crash(BaseException):
    """The grader killed (kill -9) at this point of its commit."""


def test_a_commit_stopped_at_any_point_leaves_one_whole_run_or_the_other(tmp_path, monkeypatch):
    """kill -9 during the commit of a finished run: the next run finds either the old state or the
    new one, whole (once the staging copy is marked complete, it carries the commit to its end)."""
    import fcntl
    import os

    from autograder.grade import STATE, OutputFolder

    def write_state(folder: Path, tag: str) -> None:
        for name in STATE:
            (folder / name / "sub").mkdir(parents=True, exist_ok=True)
            (folder / name / "sub" / "page.html").write_text(f"{name} {tag}", encoding="utf-8")

    files = {"grades.csv": "new grades", "grading.log": "new log", "run.json": "new record"}
    states, step = set(), 0
    while True:
        out = tmp_path / f"out{step}"
        out.mkdir()
        write_state(out, "old")
        for name in files:
            (out / name).write_text(f"old {name}", encoding="utf-8")
        folder = OutputFolder(out).__enter__()
        old = snapshot(out)
        write_state(folder.stage(), "new")
        calls = [0]

        def counted(real):
            def call(*args, **kwargs):
                if calls[0] == step:
                    raise Crash
                calls[0] += 1
                return real(*args, **kwargs)
            return call

        with monkeypatch.context() as patch:  # every rename the commit makes, stopped at the step-th
            patch.setattr(os, "replace", counted(os.replace))
            patch.setattr(Path, "rename", counted(Path.rename))
            try:
                folder.commit(files)
                finished = True
            except Crash:
                finished = False
        fcntl.flock(folder._lock, fcntl.LOCK_UN)  # the process died: its lock went with it
        folder._lock.close()
        with OutputFolder(out):  # the next run
            pass
        now = snapshot(out)
        assert set(now) == set(old), f"stopped at rename {step}: left {set(now) ^ set(old)}"
        whole_new = all((out / name / "sub" / "page.html").read_text(encoding="utf-8") == f"{name} new"
                        for name in STATE) and all((out / k).read_text(encoding="utf-8") == v
                                                   for k, v in files.items())
        assert now == old or whole_new, f"stopped at rename {step}: a mix of two runs {now}"
        states.add("new" if whole_new else "old")
        if finished:
            break
        step += 1
    assert states == {"old", "new"} and step >= 6, (states, step)


def test_a_ctrl_c_that_a_library_swallows_is_raised_again():
    """nbgrader catches every exception, KeyboardInterrupt included: the grader still stops."""
    import os

    from autograder import interrupt

    def swallowing() -> None:
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        except BaseException:  # as nbgrader.utils.capture_log does
            pass

    with interrupt.remembered():
        interrupt.check()
        swallowing()
        with pytest.raises(KeyboardInterrupt):
            interrupt.check()
        with pytest.raises(KeyboardInterrupt):  # and it is not committed either
            with interrupt.deferred():
                pytest.fail("a commit began after Ctrl-C")
    with interrupt.remembered():
        with interrupt.deferred():  # a Ctrl-C during a commit: it runs to its end
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)
            finished = True
    assert finished


def test_a_ctrl_c_caught_after_a_string_exec_still_exits_with_the_code_chosen(tmp_path):
    """Under `python -m`, CPython ends a process by SIGINT at exit if a plain KeyboardInterrupt ever
    left an `exec` of a string (dataclasses run one per class, e.g. while torch is imported), caught
    or not: the grader's Ctrl-C must not be one, or `grade` would exit by SIGINT, not 130."""
    package = tmp_path / "ctrl_c_in_exec"
    package.mkdir()
    (package / "__main__.py").write_text(
        "import os, signal, sys, time\n"
        "from autograder import interrupt\n"
        "try:\n"
        "    with interrupt.remembered():\n"
        "        exec('os.kill(os.getpid(), signal.SIGINT)\\ntime.sleep(10)', {'os': os, 'signal': signal, "
        "'time': time})\n"
        "except KeyboardInterrupt:\n"
        "    sys.exit(130)\n", encoding="utf-8")
    env = {**ENV, "PYTHONPATH": f"{tmp_path}:{ENV['PYTHONPATH']}"}
    proc = subprocess.run([sys.executable, "-m", "ctrl_c_in_exec"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 130, proc.stderr


def test_a_stopped_group_kills_its_sandboxes_and_starts_no_more(tmp_path):
    import os
    import threading

    from autograder import sandbox

    group, results = sandbox.Group(), []
    env = {"PATH": os.environ["PATH"]}
    runner = threading.Thread(target=lambda: results.append(
        sandbox.run("none", ["sleep", "60"], tmp_path, [], tmp_path, env, group=group)))
    runner.start()
    deadline = time.monotonic() + 30
    while not group._running and time.monotonic() < deadline:
        time.sleep(0.05)
    start = time.monotonic()
    group.stop()
    runner.join(30)
    assert not runner.is_alive() and time.monotonic() - start < 10
    assert results[0].returncode == -signal.SIGKILL
    with pytest.raises(sandbox.Stopped):
        sandbox.run("none", ["true"], tmp_path, [], tmp_path, env, group=group)


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
    (("--shard", "2/2"), "must be I/N, shard I of N counted from 0"),
    (("--device", "tpu"), "invalid choice: 'tpu'"),
    (("--memory-mib", "100"), "--memory-mib must be a whole number from 256 to 1048576, not 100"),
    (("--max-cells", "0"), "0 is not 1 or more"),
    (("--scratch-mib", "lots"), "'lots' is not a whole number"),
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
