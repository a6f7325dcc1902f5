"""Property-based (Hypothesis): whatever a run leaves behind, scoring completes, the other learners keep
their grades and the grader's memory stays bounded.

Two real submissions (the solution and one mistake) are run once in the sandbox and what they left
(the executed notebook, the result files) is kept. Each example then grades a third learner whose
scratch folder holds a mutation of those files (any JSON value put anywhere, truncated or random
bytes, files swapped for links into the honest learners' folders, for folders, pipes or nothing, result
files of the wrong test, over their size limit) and whose sandbox ended in any way (exit code, time
limit, memory kills, control characters in what it printed), through the grader's own read-back and
scoring (:meth:`Grader.read_back`, :meth:`Grader.score`); then the honest learners again.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import grading  # tests/grading.py
from test_grading_attacks import bwrap_problem

attacks = grading.load_module("submission_attacks", "tests/fixtures/submissions/attacks.py")

pytestmark = pytest.mark.slow

STATUSES = {"graded", "crashed", "timed_out", "needs_manual_grade"}
MEMORY_BOUND = 256 * 2**20  # of the grader's allocations while one mutant is read back and scored


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """A grader with its gradebook, the honest learners' runs (their files kept) and their grades."""
    problem = bwrap_problem()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(problem)
        pytest.skip(problem)
    from autograder import grade, sandbox

    staging = tmp_path_factory.mktemp("property") / "staging"
    for name in ("nbgrader", "feedback"):
        (staging / name).mkdir(parents=True)
    grader = grade.Grader(attacks.LD, staging, "ioi-mini", "bwrap", 60, 240,
                          sandbox.Limits(wall_seconds=360, cpu_seconds=300))
    grader.install_grader_files()
    grader.prepare()
    grader.check_models()
    kept: dict[str, dict[str, bytes]] = {}
    read_back = grader.read_back

    def keeping(work: Path, rebuilt: Any, result: Any) -> Any:
        files = {}
        for path in [work / "executed.ipynb", *sorted((work / "results").glob("*.json"))]:
            files[str(path.relative_to(work))] = path.read_bytes()
        kept[work.name] = files
        return read_back(work, rebuilt, result)

    grader.read_back = keeping
    honest = {}
    for fixture in attacks.honest():
        sub = grade.Submission(fixture.name, attacks.fixtures.build(fixture).encode())
        rebuilt, execution = grader.execute(sub)
        grade_ = grader.score(sub, rebuilt, execution)
        assert (grade_.status, grade_.score) == (fixture.status, fixture.score), grade_
        honest[fixture.name] = (sub, rebuilt, list(kept.values())[-1], grade_)
    grader.read_back = read_back
    return grader, honest


def _json_values() -> st.SearchStrategy:
    leaves = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
    return st.recursive(leaves, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                           max_size=4), max_leaves=12)


def _put(data: Any, path: list, value: Any) -> Any:
    """``data`` with ``value`` put at the end of ``path`` (indices and keys, taken modulo what is there)."""
    if not path or not isinstance(data, (dict, list)) or not data:
        return value
    if isinstance(data, dict):
        key = sorted(data)[path[0] % len(data)] if isinstance(path[0], int) else path[0]
        return {**data, key: _put(data.get(key), path[1:], value)}
    index = path[0] % len(data) if isinstance(path[0], int) else 0
    return data[:index] + [_put(data[index], path[1:], value)] + data[index + 1:]


FILE_KINDS = ("json_value", "truncate", "random_bytes", "link_to_honest", "folder", "fifo", "missing", "too_large",
              "many_numbers", "deep", "other_test", "results_folder_link")


@st.composite
def mutations(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "target": draw(st.sampled_from(["executed.ipynb", "results/test_logit_diff_per_prompt.json",
                                        "results/test_mean_logit_diff.json", "results/test_normalised_metric.json"])),
        "kind": draw(st.sampled_from(FILE_KINDS)),
        "path": draw(st.lists(st.integers(0, 50) | st.sampled_from(["cells", "outputs", "records", "data", "text",
                                                                     "metadata", "values", "shape", "check"]),
                              max_size=6)),
        "value": draw(_json_values()),
        "cut": draw(st.integers(0, 2000)),
        "bytes": draw(st.binary(max_size=200)),
        "returncode": draw(st.sampled_from([0, 1, -9, 137, None])),
        "killed": draw(st.sampled_from(["", "it ran past the 360 s limit"])),
        "output": draw(st.text(max_size=100)) + "\x1b[2J\r=cmd",
        "oom_kills": draw(st.integers(0, 3)),
    }


def _plant(work: Path, files: dict[str, bytes], honest_work: Path, m: dict[str, Any]) -> None:
    """The mutant's scratch folder: the solution's files with mutation ``m`` applied."""
    for name, data in files.items():
        (work / name).parent.mkdir(exist_ok=True)
        (work / name).write_bytes(data)
    target, kind = work / m["target"], m["kind"]
    if kind == "none":
        return
    original = files.get(m["target"], b"{}")
    if kind != "results_folder_link":
        target.unlink(missing_ok=True)
    if kind == "json_value":
        target.write_text(json.dumps(_put(json.loads(original), m["path"], m["value"])))
    elif kind == "truncate":
        target.write_bytes(original[:m["cut"]])
    elif kind == "random_bytes":
        target.write_bytes(m["bytes"])
    elif kind == "link_to_honest":
        target.symlink_to(honest_work / m["target"])
    elif kind == "folder":
        target.mkdir()
    elif kind == "fifo":
        os.mkfifo(target)
    elif kind == "too_large":
        with open(target, "wb") as handle:
            handle.truncate(2**30)  # sparse: 1 GiB said, nothing written
    elif kind == "many_numbers":  # within the size limit: parsed, and must stay bounded
        target.write_bytes(b'{"check": "check_mean_logit_diff", "records": [{"shape": [1000000], "values": [' +
                           b"0.5," * 999_999 + b"0.5]}]}")
    elif kind == "deep":
        target.write_bytes(b"[" * 100_000 + b"]" * 100_000)
    elif kind == "other_test":
        target.write_bytes(files.get("results/test_logit_diff_per_prompt.json", b"{}"))
    elif kind == "results_folder_link":
        shutil.rmtree(work / "results", ignore_errors=True)
        (work / "results").symlink_to(honest_work / "results")


@settings(max_examples=int(os.environ.get("PROPERTY_EXAMPLES", "40")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(m=mutations())
def test_any_leftover_is_scored_without_touching_the_others(graded, tmp_path_factory, m):
    from autograder import grade, sandbox

    grader, honest = graded
    sub, rebuilt, files, _ = honest["solution"]
    base = tmp_path_factory.mktemp("mutant")
    honest_work, work = base / "honest", base / "work"
    for folder in (honest_work, work):
        folder.mkdir()
    _plant(honest_work, files, honest_work, {**m, "kind": "none"})  # a classmate's folder to link into
    _plant(work, files, honest_work, m)
    result = sandbox.Result(m["returncode"] if m["returncode"] is not None else 0, m["output"], 1.0, m["killed"],
                            m["oom_kills"])
    tracemalloc.start()
    try:
        execution = grader.read_back(work, copy.deepcopy(rebuilt), result)
        mutant = grader.score(grade.Submission("mutant", sub.data), copy.deepcopy(rebuilt), execution)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < MEMORY_BOUND, f"{peak // 2**20} MiB for {m['kind']} of {m['target']}"
    assert mutant.status in STATUSES and "\n" not in mutant.detail and "\x1b" not in mutant.detail
    if mutant.status in ("crashed", "timed_out"):
        assert mutant.score is None
    else:
        assert 0 <= mutant.score <= 5
    if m["kind"] in ("link_to_honest", "results_folder_link") and m["target"] != "executed.ipynb":
        gid = Path(m["target"]).stem
        assert gid not in execution.results, "a link into a classmate's folder was followed"
    for name, (honest_sub, honest_rebuilt, honest_files, expected) in honest.items():
        again = base / f"again-{name}"
        again.mkdir()
        _plant(again, honest_files, again, {**m, "kind": "none"})
        regraded = grader.score(honest_sub, copy.deepcopy(honest_rebuilt),
                                grader.read_back(again, copy.deepcopy(honest_rebuilt), sandbox.Result(0, "", 1.0)))
        assert (regraded.status, regraded.score, regraded.detail) == (expected.status, expected.score, expected.detail)
    grader.pages_due = []
    shutil.rmtree(base, ignore_errors=True)
