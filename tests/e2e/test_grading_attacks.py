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

A second run grades the issue-16 fixtures (``attacks.hostile``: a link into a classmate's scratch
folder, a run killed before any test, result files of the wrong types, a tree too deep to walk, 30000
cells, script in outputs and answers, control characters and 1 GiB on the sandbox's stdout, memory
spread over processes and /dev/shm, a scratch folder filled, file names a spreadsheet would run) with
small whole-submission limits, and opens the feedback pages in headless Chromium.

Needs bubblewrap: skipped without it, except under CI (set ``CI``), where that fails.
"""

from __future__ import annotations

import base64
import binascii
import csv
import html
import json
import os
import re
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

import nbformat
import pytest

import grading  # tests/grading.py
from grading import load_module, read_grades, snapshot

attacks = load_module("submission_attacks", "tests/fixtures/submissions/attacks.py")
fixtures = attacks.fixtures

pytestmark = pytest.mark.slow

OPTIONS = ("--jobs", "2", "--cell-timeout", "60", "--notebook-timeout", "240")
MAX_PAGE_BYTES = 2 * 2**20
GRADER_FILES = {".lock", "grades.csv", "grading.log", "run.json", "summary.html", "feedback", "nbgrader"}


def bwrap_problem() -> str | None:
    """Why bubblewrap cannot sandbox here, or None."""
    if shutil.which("bwrap") is None:
        return "bubblewrap (bwrap) is not installed"
    probe = subprocess.run(["bwrap", "--unshare-all", "--ro-bind", "/", "/", "--", "true"], capture_output=True,
                           text=True)
    return f"bwrap cannot make namespaces here: {probe.stderr.strip()[:200]}" if probe.returncode else None


def newest_run(path: Path) -> dict:
    """The newest run of an output folder's record (``run.json``), {} when there is none."""
    record = json.loads(path.read_text()) if path.exists() else {}
    return record["runs"][-1] if record.get("runs") else record


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


# --- issue 16: each class of failure that bent the grader (a link, a type, a tree, resources, pages) ----

HOSTILE = attacks.hostile(attacks.Context(Path("/out"), Path("/submissions"), 1, "m"))
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    """The issue-16 fixtures graded together, with small whole-submission limits (what it wrote kept);
    then a second run (``--no-run``) on the same output folder."""
    base = tmp_path_factory.mktemp("hostile")
    submissions, out = base / "submissions", base / "out"
    ctx = attacks.Context(out=out, submissions=submissions, port=1, marker="unused")
    fixtures.write(attacks.hostile(ctx), submissions)
    entries = attacks.hostile_entries(submissions)
    run = grading.grade(submissions, attacks.LD, out, *OPTIONS, *attacks.HOSTILE_OPTIONS, check=False)
    kept = base / "first"
    shutil.copytree(out, kept, symlinks=True)
    again = grading.grade(submissions, attacks.LD, out, "--no-run", check=False)
    pages = {p.stem: p.read_text(encoding="utf-8") for p in (kept / "feedback").iterdir()} \
        if (kept / "feedback").is_dir() else {}
    return {"run": run, "again": again, "out": kept, "again_out": out, "entries": entries, "pages": pages,
            "run_json": newest_run(kept / "run.json")}


def test_the_hostile_run_finishes_and_lists_the_whole_submission_limits(hostile_run):
    assert hostile_run["run"].returncode == 0, hostile_run["run"].stdout[-3000:] + hostile_run["run"].stderr[-3000:]
    assert hostile_run["again"].returncode == 0, hostile_run["again"].stderr[-3000:]
    assert {p.name for p in hostile_run["again_out"].iterdir()} == GRADER_FILES
    limits = hostile_run["run_json"]["limits"]
    assert (limits["submission_memory_mib"], limits["scratch_mib"]) == (attacks.MEMORY_LIMIT_MIB,
                                                                        attacks.SCRATCH_LIMIT_MIB)
    assert set(limits["whole_submission"]) == {"memory", "processes", "scratch", "tmp", "output", "notebook"}


@pytest.mark.parametrize("fixture", HOSTILE, ids=[f.name for f in HOSTILE])
def test_a_hostile_submission_gets_the_status_and_score_it_earns(hostile_run, fixture):
    row = read_grades(hostile_run["out"])[fixture.name]
    expected = "" if fixture.score is None else f"{fixture.score:g}"
    assert (row["status"], row["score"], row["max_score"]) == (fixture.status, expected, "5"), row


def test_a_link_into_a_classmates_scratch_folder_gains_nothing(hostile_run):
    assert printed(hostile_run["pages"]["link_thief"], "LINKED")  # the link was made while the classmate ran
    assert "Passed" not in page_text(hostile_run["pages"]["link_thief"])


def test_no_test_result_is_never_a_number_and_a_cell_past_its_limit_is_named(hostile_run):
    rows = read_grades(hostile_run["out"])
    assert "before test_logit_diff_per_prompt, test_mean_logit_diff, test_normalised_metric ran" in \
        rows["nothing_ran"]["detail"]
    assert "cell 18 ran past its time limit (60 s per cell)" in rows["classmate_slow"]["detail"]
    released = nbformat.read(Path(__file__).resolve().parents[2] / "exercises" / "logit_difference" / "logit_difference.ipynb", as_version=4)
    cells = len(released.cells) + 30000  # the fixture adds 30000 cells to the released notebook
    assert f"{cells} cells, more than the limit of 2000" in rows["many_cells"]["detail"]


def test_every_resource_is_bounded_for_the_submission_as_a_whole(hostile_run):
    enforced = hostile_run["run_json"]["limits"]["whole_submission"]
    pages = hostile_run["pages"]
    assert printed(pages["spreader"], "BLOCKED")[-2:] == ["write into /: OSError", "write into /dev: OSError"]
    assert printed(pages["tree_builder"], "TREE") == ["built"]  # and its tree did not stop the run
    if enforced["memory"].startswith("NOT"):
        pytest.skip("no memory cgroup here: " + enforced["memory"])
    held = int(printed(pages["spreader"], "SPREAD")[0].split()[1])
    assert held < attacks.MEMORY_LIMIT_MIB, printed(pages["spreader"], "SPREAD")
    if enforced["scratch"].startswith("NOT"):
        pytest.skip("the scratch folder is not bounded here: " + enforced["scratch"])
    filled = int(printed(pages["scratch_filler"], "FILLED")[0].split()[0])
    assert filled <= attacks.SCRATCH_LIMIT_MIB


def test_terminal_csv_and_log_hold_no_control_characters_or_formulas(hostile_run):
    out, run = hostile_run["out"], hostile_run["run"]
    for name, text in [("terminal", run.stdout + run.stderr), ("grades.csv", (out / "grades.csv").read_text()),
                       ("grading.log", (out / "grading.log").read_text())]:
        assert not CONTROL.findall(text), f"{name} holds control characters {sorted(set(CONTROL.findall(text)))}"
    with open(out / "grades.csv", newline="", encoding="utf-8") as handle:
        cells = [cell for row in csv.reader(handle) for cell in row]
    assert [c for c in cells if c.startswith(("=", "+", "-", "@", "\t", "\r"))] == []
    rows = read_grades(out)
    assert "'=HYPERLINK(\"evil.example\",\"solution\").ipynb" in rows
    assert "\\x1b[2J\\x1b[Hsolution,5,5,graded\\x0d.ipynb" in rows
    assert "\\x1b[2J\\x1b[31mSHOUTED\\x1b[0m" in rows["shouter"]["detail"]  # what it printed, shown, not acted on


def _chromium_dom(page: Path) -> str:
    """The page's DOM after Debian's headless chromium loaded it (its scripts, if any, run)."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is needed for the feedback-page test (apt-get install chromium)")
        pytest.skip("chromium is not installed")
    profile = page.parent / "chromium-profile"
    done = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           f"--user-data-dir={profile}", "--virtual-time-budget=3000", "--dump-dom", page.as_uri()],
                          capture_output=True, text=True, timeout=180)
    assert "</html>" in done.stdout, done.stderr[-2000:]
    return done.stdout


def _ran(dom: str) -> bool:
    """Whether the planted script (attacks.PLANT) ran (it writes a text no page holds otherwise) or
    the planted elements exist as elements (in text, their ``<`` is ``&lt;``)."""
    return "PWNED-42" in dom or re.search(r'<[a-z]+[^<>]*(data-pwned=|id="fake-score")', dom) is not None


def test_no_learner_script_runs_in_a_feedback_page(hostile_run, tmp_path):
    from autograder.sanitise import with_csp

    control = tmp_path / "control.html"  # the harness sees a script that runs
    control.write_text(f"<html><head></head><body><img src=x onerror=\"{attacks.PLANT}\"></body></html>")
    assert _ran(_chromium_dom(control))
    walled = tmp_path / "walled.html"  # the second wall alone: the same page with the policy
    walled.write_text(with_csp(control.read_text()))
    assert not _ran(_chromium_dom(walled))
    page = tmp_path / "scripter.html"
    page.write_text(hostile_run["pages"]["scripter"], encoding="utf-8")
    dom = _chromium_dom(page)
    assert "ATTACK-DONE scripter" in dom, "the page did not stay (a planted <meta refresh> navigated away?)"
    assert not _ran(dom)
    for name, text in hostile_run["pages"].items():
        head = text[:text.lower().index("</head>")]
        assert "Content-Security-Policy" in head and "<script" not in head.split("Content-Security-Policy")[0], name
