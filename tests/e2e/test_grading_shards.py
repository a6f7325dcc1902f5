"""Sharded grading: ``grade --shard I/N`` and ``merge`` give what one run gives, here and on Slurm.

Three logit_difference fixtures (a solution, a wrong one, a file that is not a notebook) and an entry to
skip are graded by one run, by two shard runs merged, and by the documented Slurm array job
(``autograder/slurm/grade_array.sbatch``) on a single-node Slurm cluster this test starts (Debian's
``slurm-wlm`` and ``munge``; skipped where they are missing, except in CI). The merged ``grades.csv``
must equal the single run's byte for byte, and the gradebooks and feedback pages must hold the same.
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from autograder.grade import Grade, GradingError, Submission
from autograder.shard import Shard, parse_shard
from grading import ENV, LIMITS, ROOT, autograder, fixtures, grade, needs_sandbox, page_text  # tests/grading.py

LD = "logit_difference"
NAMES = ("solution", "sign_flipped", "not_a_notebook")  # shard 0 of 2: sign_flipped, not_a_notebook
SBATCH = ROOT / "autograder" / "slurm" / "grade_array.sbatch"
SLURM_PROGRAMS = ("sbatch", "squeue", "sinfo", "slurmctld", "slurmd", "munged")
HAS_SLURM = all(shutil.which(p) for p in SLURM_PROGRAMS)


# --- which shard grades what --------------------------------------------------------------------

def test_parse_shard_takes_i_of_n_and_says_what_to_write() -> None:
    assert parse_shard("2/4") == Shard(2, 4) and str(Shard(2, 4)) == "2/4"
    for bad in ("4/4", "-1/4", "1/0", "1", "a/b", "1/2/3", ""):
        with pytest.raises(GradingError, match="--shard must be I/N"):
            parse_shard(bad)


def test_every_entry_is_in_exactly_one_shard_whatever_else_is_in_the_folder() -> None:
    names = [f"learner{i:03d}" for i in range(200)] + ["zoë", "notes.txt", "a@b.c"]
    subs = [Submission(n, b"") for n in names[:-2]]
    skipped = [Grade(n, None, None, "skipped") for n in names[-2:]]
    for count in (1, 2, 3, 7):
        shares = [Shard(i, count).select(subs, skipped) for i in range(count)]
        owners = [[s.student for s in share[0]] + [g.student for g in share[1]] for share in shares]
        assert sorted(sum(owners, [])) == sorted(names)  # each once
        # The share of a learner does not depend on the rest of the folder (nor on its order).
        for index, owned in enumerate(owners):
            alone = Shard(index, count).select(subs[::-1][:50], [])
            assert {s.student for s in alone[0]} == set(owned) & {s.student for s in subs[::-1][:50]}
    sizes = [len(Shard(i, 4).select(subs, [])[0]) for i in range(4)]
    assert min(sizes) >= 30, sizes  # 201 learners hash about evenly


def test_the_kubernetes_manifest_maps_the_completion_index_to_the_shard() -> None:
    job, = yaml.safe_load_all((ROOT / "autograder" / "k8s" / "grade-indexed-job.yaml").read_text())
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed" and spec["parallelism"] == spec["completions"]
    container, = spec["template"]["spec"]["containers"]
    command = container["args"][0].replace("$ASSIGNMENT", LD).replace("$JOB_COMPLETION_INDEX", "3")
    words = shlex.split(command)
    assert words[:4] == ["exec", ".venv/bin/python", "-m", "autograder"]
    assert words[words.index("--shard") + 1] == f"3/{spec['completions']}"
    assert words[words.index("--out") + 1] == "/grading/out/shards/3"
    merge, = yaml.safe_load_all((ROOT / "autograder" / "k8s" / "grade-merge-job.yaml").read_text())
    words = shlex.split(merge["spec"]["template"]["spec"]["containers"][0]["args"][0])
    assert words[4] == "merge" and words[-1] == "/grading/out/shards/*"


# --- one run against shards merged -------------------------------------------------------------

def write_class(folder: Path) -> Path:
    fixtures.write([f for f in fixtures.LOGIT_DIFFERENCE if f.name in NAMES], folder)
    (folder / "notes.txt").write_text("not a submission", encoding="utf-8")
    return folder


def gradebook(out: Path) -> dict:
    """Every learner's grades and comments in the gradebook of ``out``."""
    from nbgrader.api import Gradebook

    found = {}
    with Gradebook(f"sqlite:///{out / 'nbgrader' / 'gradebook.db'}") as gb:
        for student in gb.students:
            sub = gb.find_submission(LD, student.id)
            found[student.id] = {
                "score": sub.score, "max_score": sub.max_score,
                "grades": sorted((g.name, g.auto_score, g.manual_score, g.needs_manual_grade)
                                 for nb in sub.notebooks for g in nb.grades),
                "comments": sorted((c.name, c.auto_comment, c.manual_comment)
                                   for nb in sub.notebooks for c in nb.comments)}
    return found


def assert_same_results(single: Path, merged: Path, shards: list[Path]) -> None:
    """``merged`` holds what the one run ``single`` wrote: the same grades.csv, gradebook and pages
    (each page the shard's, byte for byte, and the single run's page in every visible word: two runs
    of one notebook may split its printed lines differently, as the kernel flushed them)."""
    assert (merged / "grades.csv").read_bytes() == (single / "grades.csv").read_bytes()
    assert gradebook(merged) == gradebook(single)
    assert set(gradebook(single)) == {"solution", "sign_flipped"}  # not_a_notebook never reached nbgrader
    pages = sorted(p.name for p in (single / "feedback").glob("*.html"))
    assert pages == [f"{name}.html" for name in sorted(NAMES)]
    assert sorted(p.name for p in (merged / "feedback").glob("*.html")) == pages
    for page in pages:
        shard_page, = [s / "feedback" / page for s in shards if (s / "feedback" / page).exists()]
        assert (merged / "feedback" / page).read_bytes() == shard_page.read_bytes(), page
        assert page_text(merged / "feedback" / page) == page_text(single / "feedback" / page), page


def merge(out: Path, *shards: Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(autograder("merge", "--assignment", LD, "--out", out, *shards), env=ENV,
                          capture_output=True, text=True, timeout=1200)
    assert not check or proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the submissions folder, one run's output)."""
    if not shutil.which("bwrap") and not os.environ.get("CI"):
        pytest.skip("bubblewrap is not installed")
    base = tmp_path_factory.mktemp("shards")
    submissions = write_class(base / "submissions")
    grade(submissions, LD, base / "single", *LIMITS)
    return submissions, base / "single"


@needs_sandbox
@pytest.mark.slow
def test_shards_merged_equal_one_run(single: tuple[Path, Path], tmp_path: Path) -> None:
    submissions, one_run = single
    shards = [tmp_path / "shards" / str(i) for i in range(2)]
    for index, out in enumerate(shards):
        grade(submissions, LD, out, *LIMITS, "--shard", f"{index}/2")
    assert (shards[0] / "grades.csv").read_text().count("\n") == 3  # header, sign_flipped, not_a_notebook
    assert (shards[1] / "grades.csv").read_text().count("\n") == 3  # header, notes.txt, solution

    refused = merge(tmp_path / "merged", shards[0], check=False)
    assert refused.returncode == 2 and refused.stderr.strip().splitlines() == [
        "error: shard 1/2 is missing: give each of the 2 shard folders once"]
    assert not (tmp_path / "merged" / "grades.csv").exists()
    merge(tmp_path / "merged", *shards[::-1])  # in any order
    assert_same_results(one_run, tmp_path / "merged", shards)
    log = (tmp_path / "merged" / "grading.log").read_text()
    assert "shard 0/2: sign_flipped: ran in" in log and "shard 1/2: solution: ran in" in log


# --- the same on Slurm -------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def slurm_conf(folder: Path, host: str) -> str:
    """A single-node cluster without cgroups or accounting, every file under ``folder``."""
    cpus = len(os.sched_getaffinity(0))
    memory_mib = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    return f"""ClusterName=autograder-test
SlurmctldHost={host}
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={folder}/munge.socket
CredType=cred/munge
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SchedulerParameters=kill_invalid_depend
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mib} State=UNKNOWN
PartitionName=test Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


@contextmanager
def slurm_cluster(folder: Path) -> Iterator[dict[str, str]]:
    """munged, slurmctld and slurmd started in the foreground from ``folder``; yields the environment
    that reaches them (``SLURM_CONF``); stops the three at the end."""
    host = socket.gethostname().split(".")[0]
    for sub in ("state", "spool"):
        (folder / sub).mkdir(parents=True)
    key = folder / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    conf = folder / "slurm.conf"
    conf.write_text(slurm_conf(folder, host), encoding="utf-8")
    env = {**ENV, "SLURM_CONF": str(conf)}
    daemons: list[subprocess.Popen] = []
    try:
        daemons.append(subprocess.Popen(
            ["munged", "--foreground", "--force", f"--key-file={key}", f"--socket={folder}/munge.socket",
             f"--pid-file={folder}/munged.pid", f"--log-file={folder}/munged.log", f"--seed-file={folder}/munge.seed"],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT))
        wait_for(lambda: (folder / "munge.socket").exists(), 30, "munged", folder)
        for daemon in ("slurmctld", "slurmd"):
            daemons.append(subprocess.Popen([daemon, "-D", "-f", str(conf)], env=env,
                                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT))
        wait_for(lambda: "idle" in subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True,
                                                  text=True).stdout, 90, "the node to be idle", folder)
        yield env
    finally:
        for daemon in reversed(daemons):
            daemon.terminate()
            try:
                daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()


def wait_for(ready, seconds: float, what: str, folder: Path) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in folder.glob("*.log"))
            pytest.fail(f"waited {seconds} s for {what}\n{logs}")
        time.sleep(1)


@pytest.mark.slow
@pytest.mark.skipif(not HAS_SLURM and not os.environ.get("CI"),
                    reason="Slurm is not installed (apt-get install slurm-wlm munge)")
def test_slurm_array_job_equals_one_run(single: tuple[Path, Path], tmp_path: Path) -> None:
    assert HAS_SLURM, "CI must install Debian's slurm-wlm and munge (.ci/run)"
    assert os.geteuid() == 0, "the single-node Slurm cluster of this test runs as root (as in CI)"
    submissions, one_run = single
    out, logs = tmp_path / "out", tmp_path / "logs"
    logs.mkdir()
    with slurm_cluster(tmp_path / "slurm") as env:
        # The guide's two commands, with this machine's size and the test's time limits.
        env = {**env, "AUTOGRADER_PYTHON": str(Path(sys.executable)),
               "AUTOGRADER_OPTIONS": "--sandbox bwrap --cell-timeout 240 --notebook-timeout 900"}
        small = ["--cpus-per-task=1", "--mem=4G", f"--output={logs}/%A_%a.out"]
        array = subprocess.run(["sbatch", "--parsable", "--array=0-1", *small, str(SBATCH), str(submissions), LD,
                                str(out)], env=env, cwd=ROOT, capture_output=True, text=True, check=True)
        array_id = array.stdout.strip().split(";")[0]
        subprocess.run(["sbatch", "--parsable", f"--dependency=afterok:{array_id}", *small, str(SBATCH),
                        str(submissions), LD, str(out)], env=env, cwd=ROOT, capture_output=True, text=True,
                       check=True)
        wait_for(lambda: subprocess.run(["squeue", "-h"], env=env, capture_output=True, text=True).stdout == "",
                 2400, "the array and merge jobs", tmp_path / "slurm")
    outputs = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(logs.iterdir()))
    assert len(list(logs.iterdir())) == 3, outputs  # two array tasks and the merge
    assert sorted(p.name for p in (out / "shards").iterdir()) == ["0", "1"], outputs
    assert (out / "grades.csv").exists(), outputs
    assert_same_results(one_run, out, [out / "shards" / "0", out / "shards" / "1"])
