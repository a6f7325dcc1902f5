"""What crosses the sandbox boundary (autograder/untrusted.py), the sandbox's whole-submission limits
(autograder/sandbox.py) and learner text made safe (autograder/sanitise.py), each against the attack
that bent the grader before (issue 16): fast, without a grading run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import tracemalloc
from pathlib import Path

import pytest

from autograder import sandbox, untrusted
from autograder.sanitise import csv_cell, one_line, printable, safe_markdown, with_csp

CHECK = "check_mean_logit_diff"
GOOD = {"check": CHECK, "records": [{"case": {"model": "ioi-mini", "set": 0, "logits": "clean"}, "type": "Tensor",
                                     "dtype": "float32", "shape": [2], "values": [1.0, 2.5]}]}


def test_a_result_file_is_read_as_it_was_written(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "t.json").write_text(json.dumps(GOOD))
    records = untrusted.parse_results(untrusted.read_beneath(tmp_path, "results/t.json", 2**20), CHECK)
    assert records == GOOD["records"]


def test_no_link_is_followed_at_any_component(tmp_path):
    """The attack of issue 16: the learner's ``results`` folder a link into a classmate's scratch folder."""
    classmate, thief = tmp_path / "classmate", tmp_path / "thief"
    (classmate / "results").mkdir(parents=True)
    (classmate / "results" / "t.json").write_text(json.dumps(GOOD))
    thief.mkdir()
    assert (thief / "results" / "t.json").exists() is False
    (thief / "results").symlink_to("../classmate/results")
    assert (thief / "results" / "t.json").is_file() and not (thief / "results" / "t.json").is_symlink()  # the old check
    with pytest.raises(untrusted.Refused, match="results/t.json: a folder on its path is not a folder|symbolic link"):
        untrusted.read_beneath(thief, "results/t.json", 2**20)
    os.unlink(thief / "results")
    (thief / "results").mkdir()
    (thief / "results" / "t.json").symlink_to(classmate / "results" / "t.json")
    with pytest.raises(untrusted.Refused, match="symbolic link|not a regular file"):
        untrusted.read_beneath(thief, "results/t.json", 2**20)


def test_pipes_folders_large_files_and_climbing_out_are_refused(tmp_path):
    os.mkfifo(tmp_path / "fifo")  # opening it for reading would block: it is never opened
    (tmp_path / "folder").mkdir()
    with open(tmp_path / "big", "wb") as handle:
        handle.truncate(2**20 + 1)
    for name, why in [("fifo", "not a regular file"), ("folder", "not a regular file"), ("big", "larger than"),
                      ("missing", "missing"), ("../x", "not a plain relative path"), ("a//b", "plain relative")]:
        with pytest.raises(untrusted.Refused, match=why):
            untrusted.read_beneath(tmp_path, name, 2**20)


@pytest.mark.parametrize("content", [
    b"[" * 100_000 + b"]" * 100_000,  # json.loads: RecursionError
    b"\xff\xfe", b"null", b"{}", b'{"check": "check_mean_logit_diff", "records": 5}',
    b'{"check": ["check_mean_logit_diff"], "records": [[1, 2]]}',
    b'{"check": "check_mean_logit_diff", "records": [{"case": [], "shape": {"a": 1}, "values": "x"}]}',
    b'{"check": "check_mean_logit_diff", "records": [{"shape": [3], "values": [1, 2]}]}',
    b'{"check": "check_mean_logit_diff", "records": [{"shape": [1], "values": [true]}]}',
    b'{"check": "check_mean_logit_diff", "records": [{"values": [1], "shape": [1], "passed": true}]}',
    b'{"check": "check_mean_logit_diff", "records": [{"error": {"x": 1}}]}',
    b'{"check": "check_mean_logit_diff", "records": [], "score": 5}',
])
def test_result_files_of_unexpected_types_are_refused_in_one_line(content):
    with pytest.raises(untrusted.Refused) as refused:
        untrusted.parse_results(content, CHECK)
    assert "\n" not in str(refused.value) and len(str(refused.value)) < 200


def test_a_notebook_with_too_many_cells_is_refused_before_nbformat_reads_it():
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(f"x = {i}") for i in range(3000)])
    data = nbformat.writes(nb).encode()
    with pytest.raises(untrusted.Refused, match="3000 cells, more than the limit of 2000"):
        untrusted.parse_notebook(data, 2000)
    assert len(untrusted.parse_notebook(data, 3000).cells) == 3000


def test_outputs_keep_text_and_checked_images_only():
    plant = "<script>alert(1)</script>"
    outputs = untrusted.clean_outputs([
        {"output_type": "display_data", "data": {"text/html": plant, "application/javascript": "alert(1)",
                                                 "text/plain": "<HTML object>"}},
        {"output_type": "display_data", "data": {"image/svg+xml": "<svg onload=alert(1)>"}},
        {"output_type": "display_data", "data": {"image/png": 'iVBORw0KGgo=" onerror="alert(1)'}},
        {"output_type": "display_data", "data": {"image/png": "iVBORw0KGgo="}},
        {"output_type": "stream", "name": "stdout", "text": ["a", "b"]},
        {"output_type": "stream", "name": "evil", "text": 5},
        {"output_type": "error", "ename": "E", "evalue": "v", "traceback": "not a list"},
        {"output_type": "update_display_data"}, "not a mapping", None,
    ])
    assert [dict(o.get("data", {})) for o in outputs[:4]] == [
        {"text/plain": "<HTML object>"}, {"text/plain": "[an output shown as image/svg+xml: not shown here]"},
        {"text/plain": "[an output shown as image/png: not shown here]"}, {"image/png": "iVBORw0KGgo="}]
    assert outputs[4].text == "ab" and len(outputs) == 5
    assert untrusted.clean_outputs({"not": "a list"}) == []


DEPTH = 5000  # deeper than Python's recursion limit; not deeper, as every rmdir costs a disk write


@pytest.fixture
def memory_tmp(tmp_path):
    """A folder in memory (/dev/shm) where there is one: thousands of rmdir cost nothing there."""
    if not os.access("/dev/shm", os.W_OK):
        return tmp_path
    folder = Path(tempfile.mkdtemp(prefix="test-untrusted-", dir="/dev/shm"))
    yield folder
    untrusted.remove_tree(folder)


def _hostile_tree(top: Path, depth: int) -> Path:
    """What a learner can leave: a deep chain, folders without permissions, odd names, a link out, a pipe."""
    outside = top / "outside.txt"
    outside.write_text("keep me")
    root = top / "scratch"
    root.mkdir()
    here = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(depth):  # built by descriptors: no path of that length exists
        os.mkdir("d", dir_fd=here)
        child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=here)
        os.close(here)
        here = child
    os.close(here)
    for name in ("locked", "new\nline", "\x1b[2J", "x" * 255, "-rf", "\udcff"):
        (root / name).mkdir()
        (root / name / "file").write_text("x")
        (root / name).chmod(0)
    os.mkfifo(root / "fifo")
    (root / "out").symlink_to(outside)
    (root / "outdir").symlink_to(top)
    return root


def test_any_tree_a_learner_builds_is_removed_without_raising(memory_tmp):
    tmp_path = memory_tmp
    root = _hostile_tree(tmp_path, DEPTH)
    with pytest.raises(RecursionError):  # the old cleanup: it ended the whole grading run
        shutil.rmtree(root, ignore_errors=True)
    assert untrusted.remove_tree(root) is True
    assert not os.path.lexists(root) and (tmp_path / "outside.txt").read_text() == "keep me"
    assert untrusted.remove_tree(root) is True  # already gone: nothing to do


@pytest.mark.skipif(os.geteuid() != 0, reason="drops root to run as a user whom permissions stop")
def test_folders_without_permissions_are_removed_by_their_owner(memory_tmp):
    """As root every permission is ignored: the same removal in a child that became an unprivileged owner."""
    tmp_path = memory_tmp
    tmp_path.chmod(0o777)
    pid = os.fork()
    if pid == 0:  # the child: nobody, building and removing its own tree
        code = 1
        try:
            os.setgid(65534)
            os.setuid(65534)
            work = tmp_path / "nobody"
            work.mkdir()
            root = _hostile_tree(work, 500)
            code = 0 if untrusted.remove_tree(root) and not os.path.lexists(root) else 2
        finally:
            os._exit(code)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0


def test_a_leftover_staging_folder_is_recovered_or_set_aside(memory_tmp, monkeypatch):
    from autograder import grade

    out = memory_tmp / "out é"
    out.mkdir()
    (out / ".staging").mkdir()
    _hostile_tree(out / ".staging", DEPTH)  # a run killed while a learner's tree was in its scratch folder
    scratch = out / ".staging" / "work" / "a scratch"
    scratch.mkdir(parents=True)
    if sandbox.mount_tmpfs(scratch, 1):  # and its scratch folder still mounted (as root)
        (scratch / "file").write_text("x")
    with grade.OutputFolder(out) as folder:
        assert folder.stage().is_dir()
    assert sorted(p.name for p in out.iterdir()) == [".lock"]  # staged, not committed: nothing else
    # Something that cannot be removed at all: the staging folder is set aside, the run goes on.
    (out / ".staging").mkdir()
    monkeypatch.setattr(untrusted, "remove_tree", lambda path: False)
    with grade.OutputFolder(out) as folder:
        assert folder.stage().is_dir()
        monkeypatch.undo()
    aside = [p.name for p in out.iterdir() if p.name.startswith(".staging.aside-")]
    assert len(aside) == 1 and not (out / ".staging").exists()


def test_what_a_run_prints_is_read_with_a_byte_cap(tmp_path):
    """256 MiB printed: the grader holds the kept KiB, not the output (the old reader held it all)."""
    limits = sandbox.Limits(output_kib=64, wall_seconds=60)
    code = "import os\nchunk = b'z' * 2**20\nfor _ in range(256): os.write(1, chunk)\nos.write(1, b'END')"
    tracemalloc.start()
    try:
        result = sandbox.run("none", [sys.executable, "-c", code], tmp_path, [], tmp_path, {"PATH": "/usr/bin:/bin"},
                             limits, max_output=1000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.returncode == 0
    assert peak < 16 * 2**20, f"the grader held {peak // 2**20} MiB"
    assert result.output == f"[... {256 * 2**20 + 3 - 1000} earlier characters cut]\n" + "z" * 997 + "END"


def _bwrap_works() -> bool:
    return shutil.which("bwrap") is not None and subprocess.run(
        ["bwrap", "--unshare-all", "--ro-bind", "/", "/", "--", "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _bwrap_works(), reason="bubblewrap is needed")
def test_memory_is_bounded_for_the_whole_submission(tmp_path):
    """Three processes of 300 MiB and 300 MiB in /dev/shm, under a 512 MiB limit for all of them together
    (each alone is within the per-process limit): they never hold it all at once."""
    if "memory" not in sandbox.probe_controllers():
        pytest.skip("no memory cgroup can be made here: the limit is per process only (run.json says so)")
    hold = ("import time; open('/proc/self/oom_score_adj', 'w').write('1000'); b = bytearray(300 * 2**20); "
            "b[::4096] = b'x' * len(b[::4096]); print('HELD', flush=True); time.sleep(3)")
    code = ("import subprocess, sys\n"
            "for i in range(6):\n    with open(f'/dev/shm/fill{i}', 'wb') as f:\n        f.write(b's' * 50 * 2**20)\n"
            f"ps = [subprocess.Popen([sys.executable, '-c', {hold!r}], stdout=subprocess.PIPE) for _ in range(3)]\n"
            "print('HELD', sum(p.communicate()[0].strip() == b'HELD' and p.returncode == 0 for p in ps))\n"
            "for path in ('/planted', '/dev/planted'):\n"
            "    try:\n        open(path, 'w')\n    except OSError as err:\n        print('BLOCKED', path)\n")
    limits = sandbox.Limits(submission_memory_mib=512, tmp_mib=1024, wall_seconds=120)
    result = sandbox.run("bwrap", [sys.executable, "-c", code], tmp_path, sandbox.python_read_only_paths(), tmp_path,
                         {"PATH": "/usr/bin:/bin"}, limits)
    assert "HELD 0" in result.output, result.output
    assert result.oom_kills >= 1 and result.peak_mib is not None and result.peak_mib <= 512
    assert "BLOCKED /planted" in result.output and "BLOCKED /dev/planted" in result.output


def test_control_characters_and_formulas_are_neutralised():
    text = "a\x1b[2J\x07b\r\nc\u202ed\x9b"
    assert printable(text) == "a\\x1b[2J\\x07b\\x0d\nc\\u202ed\\x9b"
    assert one_line(text) == "a\\x1b[2J\\x07b\\x0d c\\u202ed\\x9b"
    assert one_line("x" * 600, 100) == "x" * 99 + "…"
    for cell in ("=1+1", "+1", "-2", "@SUM(A1)", "\tx", "\rx"):
        assert csv_cell(cell) == "'" + cell
    assert csv_cell("solution") == "solution" and csv_cell("") == ""


def test_learner_markdown_keeps_inert_html_only_and_pages_get_a_csp():
    dirty = ('<script>alert(1)</script><img src=x onerror="alert(1)"><b onclick="x()">bold</b>'
             '<a href="javascript:alert(1)">a</a><style>h1{}</style><details><summary>s</summary>t</details>')
    clean = safe_markdown(dirty)
    assert "<script" not in clean and "<img" not in clean and "<style" not in clean and "onclick" not in clean
    assert "javascript:" not in clean.replace("&lt;", "<").split('href="')[-1].split('"')[0]
    assert "<b>bold</b>" in clean and "<details><summary>s</summary>t</details>" in clean
    page = with_csp("<!DOCTYPE html><html><head><title>t</title><script>x()</script></head><body></body></html>")
    assert page.index("Content-Security-Policy") < page.index("<script>")
    assert "script-src" not in page.split("Content-Security-Policy")[1].split(">")[0]  # default-src 'none' covers it
    assert with_csp("no head at all <script>x()</script>").count("<script>") == 0
    assert with_csp(page) == page  # once only: a merged shard's page is written again as it is
