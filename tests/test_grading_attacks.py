"""Hostile learners against `python -m autograder grade`: every attack gains nothing.

One grading run (bubblewrap, two at a time) of a folder holding the attackers of
tests/fixtures/submissions/attacks.py, two honest learners (the solution and one mistake) and
entries that are not submissions (a symbolic link to /etc/passwd, a folder, a text file); then a
baseline run of the honest learners alone. The tests check that each attacker scores what its
functions' outputs earn (0: nothing is implemented, except the one residual that calls patchlab's
own reference functions), that the honest learners' rows and feedback pages are those of the
baseline, that nothing of the learners outlives the run, that the submissions folder is
byte-identical, that no feedback page shows a hidden test, the solution or another learner's code,
and that no connection left the sandbox.

Needs bubblewrap: skipped without it, except under CI (set ``CI``), where that fails.
"""

from __future__ import annotations

import base64
import binascii
import html
import os
import re
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

import grading  # tests/grading.py
from grading import load_module, read_grades, snapshot

attacks = load_module("submission_attacks", "tests/fixtures/submissions/attacks.py")
fixtures = attacks.fixtures

pytestmark = pytest.mark.slow

OPTIONS = ("--jobs", "2", "--cell-timeout", "60", "--notebook-timeout", "240")
MAX_PAGE_BYTES = 2 * 2**20
GRADER_FILES = {".lock", "grades.csv", "grading.log", "run.json", "feedback", "nbgrader"}


def bwrap_problem() -> str | None:
    """Why bubblewrap cannot sandbox here, or None."""
    if shutil.which("bwrap") is None:
        return "bubblewrap (bwrap) is not installed"
    probe = subprocess.run(["bwrap", "--unshare-all", "--ro-bind", "/", "/", "--", "true"], capture_output=True,
                           text=True)
    return f"bwrap cannot make namespaces here: {probe.stderr.strip()[:200]}" if probe.returncode else None


@pytest.fixture(scope="module", autouse=True)
def needs_bwrap():
    problem = bwrap_problem()
    if problem and os.environ.get("CI"):
        pytest.fail(f"{problem}: the attack tests must run under CI")
    if problem:
        pytest.skip(f"{problem}: the attacks are only meaningful in the sandbox")


def grade(submissions: Path, out: Path) -> subprocess.CompletedProcess:
    return grading.grade(submissions, attacks.LD, out, *OPTIONS, check=False)


def marked_processes(marker: str) -> list[str]:
    """The command lines of processes (anyone's) that carry ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if marker in cmdline:
                found.append(f"{entry.name}: {cmdline[:200]}")
    return found


def page_text(page: str) -> str:
    """The page's text, its lines kept."""
    return html.unescape(re.sub(r"<[^>]+>", " ", page))


def printed(page: str, word: str) -> list[str]:
    """What follows ``word`` on the page's lines that start with it: lines the attack printed (its own
    source is on the page too, but there such words follow ``print(``)."""
    return [line.strip()[len(word):].strip() for line in page_text(page).splitlines()
            if line.strip().startswith(word + " ")]


@pytest.fixture(scope="module")
def attacked(tmp_path_factory):
    base = tmp_path_factory.mktemp("attacks")
    submissions, out = base / "submissions", base / "out"
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.setblocking(False)
    ctx = attacks.Context(out=out, submissions=submissions, port=listener.getsockname()[1],
                          marker=f"attackmark{uuid.uuid4().hex[:16]}")
    everyone = attacks.honest() + attacks.attackers(ctx)
    fixtures.write(everyone, submissions)
    not_submissions = attacks.lifecycle(submissions)
    before = snapshot(submissions)

    start = time.monotonic()
    run = grade(submissions, out)
    seconds = time.monotonic() - start
    csv_at_return = (out / "grades.csv").read_bytes() if (out / "grades.csv").exists() else b""
    time.sleep(3)  # a survivor rewriting grades.csv every 0.5 s would have done it by now
    survivors = marked_processes(ctx.marker)
    csv_later = (out / "grades.csv").read_bytes() if (out / "grades.csv").exists() else b""
    try:
        connection = listener.accept()
    except BlockingIOError:
        connection = None
    listener.close()

    baseline_subs, baseline_out = base / "baseline", base / "baseline_out"
    fixtures.write(attacks.honest(), baseline_subs)
    baseline = grade(baseline_subs, baseline_out)
    pages = {}
    if (out / "feedback").is_dir():
        pages = {p.stem: p.read_text(encoding="utf-8") for p in (out / "feedback").iterdir()}
    print(f"graded {len(everyone)} notebooks with attackers in {seconds:.0f} s")
    return {"ctx": ctx, "run": run, "seconds": seconds, "out": out, "everyone": everyone, "before": before,
            "after": snapshot(submissions), "csv_at_return": csv_at_return, "csv_later": csv_later,
            "survivors": survivors, "connection": connection, "not_submissions": not_submissions,
            "baseline": baseline, "baseline_out": baseline_out, "pages": pages}


def test_the_run_finishes_and_writes_only_its_own_files(attacked):
    assert attacked["run"].returncode == 0, attacked["run"].stdout + attacked["run"].stderr
    assert attacked["baseline"].returncode == 0, attacked["baseline"].stdout + attacked["baseline"].stderr
    assert {p.name for p in attacked["out"].iterdir()} == GRADER_FILES
    rows = read_grades(attacked["out"])
    assert set(rows) == {f.name for f in attacked["everyone"]} | set(attacked["not_submissions"])


ATTACKERS = attacks.attackers(attacks.Context(Path("/out"), Path("/submissions"), 1, "m"))


@pytest.mark.parametrize("fixture", ATTACKERS, ids=[f.name for f in ATTACKERS])
def test_an_attacker_scores_what_its_functions_earn(attacked, fixture):
    row = read_grades(attacked["out"])[fixture.name]
    assert (row["status"], row["score"], row["max_score"]) == (fixture.status, f"{fixture.score:g}", "5"), row
    if fixture.name != "reference_caller":
        done = printed(attacked["pages"][fixture.name], "ATTACK-DONE")
        assert fixture.name in done, "the attack's cells did not run to their end (or their outputs are not shown)"


def test_the_honest_learners_get_what_they_get_without_attackers(attacked):
    rows, alone = read_grades(attacked["out"]), read_grades(attacked["baseline_out"])
    for fixture in attacks.honest():
        grades = lambda row: {k: v for k, v in row.items() if k != "submitted"}  # noqa: E731 (not the files' times)
        assert grades(rows[fixture.name]) == grades(alone[fixture.name])
        assert (rows[fixture.name]["status"], rows[fixture.name]["score"]) == (fixture.status, f"{fixture.score:g}")
        # Compared as text: a cell's printed output may come back as one stream output or as two
        # (ipykernel flushes on a timer), which changes the HTML around the same text.
        page, baseline = ((folder / "feedback" / f"{fixture.name}.html").read_text(encoding="utf-8")
                          for folder in (attacked["out"], attacked["baseline_out"]))
        assert " ".join(page_text(page).split()) == " ".join(page_text(baseline).split())


def test_the_gradebook_holds_the_same_scores(attacked):
    from nbgrader.api import Gradebook

    rows = read_grades(attacked["out"])
    with Gradebook(f"sqlite:///{attacked['out'] / 'nbgrader' / 'gradebook.db'}") as gb:
        for fixture in attacks.honest() + ATTACKERS:
            submission = gb.find_submission(attacks.LD, fixture.name)
            assert f"{submission.score:g}" == rows[fixture.name]["score"], fixture.name


def test_nothing_outlives_the_run(attacked):
    assert attacked["survivors"] == [], "learner processes outlived the grading run"
    assert attacked["csv_later"] == attacked["csv_at_return"], "grades.csv changed after the run returned"
    assert b"survivor,100" not in attacked["csv_later"]
    started = printed(attacked["pages"]["survivor"], "SUCCEEDED")  # they did start, in the sandbox
    assert started == ["setsid loop", "double fork loop", "nohup sleep", "nohup loop"]


def test_the_submissions_folder_is_untouched(attacked):
    assert attacked["after"] == attacked["before"]


def test_no_write_outside_the_sandbox_succeeded(attacked):
    """Every write the writer aimed at the output folder, the submissions or the grader's modules
    failed (writes into its own private filesystem may succeed: they reach nothing)."""
    page, ctx = attacked["pages"]["writer"], attacked["ctx"]
    reaching = [what for what in printed(page, "SUCCEEDED") if str(ctx.out) in what or str(ctx.submissions) in what
                or "/grader/" in what or "sqlite" in what or "submission" in what or "/results/" in what]
    assert reaching == [], reaching
    assert len(printed(page, "BLOCKED")) >= 20


def _decoded(page: str) -> str:
    """The page's text with every base64 run decoded next to it."""
    text = page_text(page)
    parts = [text]
    for token in re.findall(r"[A-Za-z0-9+/=]{16,}", text):
        try:
            parts.append(base64.b64decode(token + "=" * (-len(token) % 4)).decode("utf-8", "replace"))
        except (binascii.Error, ValueError):
            pass
    return "\n".join(parts)


def test_no_feedback_page_shows_hidden_tests_solutions_or_other_learners(attacked):
    secrets = attacks.secrets(attacked["ctx"])
    assert len(secrets) >= 10
    honest = {f.name for f in attacks.honest()}
    for name, page in attacked["pages"].items():
        if name in honest:
            continue
        decoded = _decoded(page)
        shown = [line for line in secrets if line in decoded]
        assert shown == [], f"the feedback of {name} shows {shown}"
    leaked = printed(attacked["pages"]["snooper"], "LEAK")
    assert leaked == [], f"the snooper read {[line.split()[0] for line in leaked]}"
    assert len(printed(attacked["pages"]["snooper"], "BLOCKED")) >= 12


def test_no_connection_leaves_the_sandbox(attacked):
    page = attacked["pages"]["snooper"]
    assert printed(page, "NET-CONNECTED") == []
    blocked = [line.split(":")[0] for line in printed(page, "NET-BLOCKED")]
    assert blocked == ["host-listener", "host-listener-v6", "host-ssh", "internet-dns", "internet-https", "dns"]
    assert attacked["connection"] is None, "the host's listener was reached from the sandbox"


def test_resource_abuse_is_contained(attacked):
    for name, page in attacked["pages"].items():
        assert len(page.encode()) < MAX_PAGE_BYTES, f"the feedback page of {name} is {len(page) // 2**10} KiB"
    hog = attacked["pages"]["hog"]
    assert printed(hog, "BLOCKED") == ["allocate 50 GB: MemoryError", "allocate 50 GB in torch: RuntimeError",
                                       "write 1 GB into the scratch folder: OSError", "write 1 GB into /tmp: OSError"]
    assert re.search(r"\[output cut: \d+ more characters\]", page_text(hog))
    forks = printed(attacked["pages"]["fork_bomb"], "FORK")
    assert len(forks) == 1
    if "processes" in (attacked["out"] / "run.json").read_text():  # a limit this machine enforces
        assert int(forks[0].split()[1].rstrip(",")) < 500, forks


def test_entries_that_are_not_submissions_are_skipped_unread(attacked):
    rows = read_grades(attacked["out"])
    for name, why in attacked["not_submissions"].items():
        assert rows[name]["status"] == "skipped" and why in rows[name]["detail"], rows[name]
    passwd = Path("/etc/passwd").read_text().splitlines()[0]
    for path in attacked["out"].rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert passwd.encode() not in path.read_bytes(), f"{path} holds /etc/passwd"


# --- submissions that once stopped the whole run -------------------------------------------------

def test_malformed_submissions_do_not_stop_the_run(tmp_path):
    """A results file nested 100000 deep, a grade id that is a list: each is graded, the run goes on."""
    fixtures.write(attacks.MALFORMED + honest_solution(), tmp_path / "submissions")
    run = grade(tmp_path / "submissions", tmp_path / "out")
    assert run.returncode == 0, run.stderr[-2000:]
    rows = read_grades(tmp_path / "out")
    for fixture in attacks.MALFORMED + honest_solution():
        assert rows[fixture.name]["status"] == fixture.status and rows[fixture.name]["score"] == f"{fixture.score:g}", \
            rows[fixture.name]


def honest_solution() -> list:
    return attacks.honest()[:1]
