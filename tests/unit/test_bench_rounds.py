"""Interleaved rounds (patchlab_dev.rounds), the grading benchmark's record, and the measurements page's summaries
generated from bench.json (tools/bench_summary.py). Fast: nothing is timed or compared with a time."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from grading import load_module  # tests/grading.py
from patchlab_dev import rounds

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "bench"
summary_tool = load_module("bench_summary", "tools/bench_summary.py")


def test_interleave_rotates_the_order_and_keeps_each_round_apart() -> None:
    calls: list[str] = []
    seconds = iter(range(1, 100))

    def task(name: str):
        def run() -> float:
            calls.append(name)
            return float(next(seconds))
        return run

    samples = rounds.interleave({n: task(n) for n in "abc"}, 3)
    assert calls == list("abc" "bca" "cab")  # none always first
    assert samples == {"a": [1.0, 6.0, 8.0], "b": [2.0, 4.0, 9.0], "c": [3.0, 5.0, 7.0]}
    with pytest.raises(ValueError):
        rounds.interleave({"a": task("a")}, 0)


def test_summary_matches_numpy() -> None:
    samples = [5.0, 1.0, 3.5, 2.0, 4.0, 9.0]
    stats = rounds.summary(samples)
    q1, median, q3 = np.percentile(samples, [25, 50, 75])  # numpy's linear = the inclusive method
    assert stats == pytest.approx({"median": median, "min": 1.0, "max": 9.0, "q1": q1, "q3": q3, "rounds": 6})
    assert rounds.summary([2.0]) == {"median": 2.0, "min": 2.0, "max": 2.0, "q1": 2.0, "q3": 2.0, "rounds": 1}


def test_ratio_is_taken_within_each_round() -> None:
    # A load that doubles in round 2 slows both methods: within a round the ratio stays 2.
    peer, own = [2.0, 4.0, 2.2], [1.0, 2.0, 1.1]
    assert rounds.ratio(peer, own) == pytest.approx({"median": 2.0, "min": 2.0, "max": 2.0, "q1": 2.0, "q3": 2.0,
                                                     "rounds": 3})
    with pytest.raises(ValueError):
        rounds.ratio([1.0], [1.0, 2.0])


def test_a_wide_spread_is_flagged() -> None:
    assert rounds.too_wide("fast", rounds.summary([1.0, 1.05, 1.0, 0.98, 1.02])) is None
    warning = rounds.too_wide("fast", rounds.summary([1.0, 1.0, 1.0, 1.0, 2.0]))
    assert warning.startswith("warning: fast varied 1-2 around a median of 1 over 5 rounds (100% > 50%)")
    assert rounds.too_wide("fast", rounds.summary([1.0])) is None  # one round: no spread to judge


def test_grading_bench_record(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    """autograder bench: each --jobs graded once per round, interleaved; the record the summary reads."""
    from autograder import bench
    from autograder.grade import Grade

    graded: list[int] = []

    def fake_grade(folder: Path, name: str, out: Path, sandbox_kind: str, jobs: int) -> list[Grade]:
        graded.append(jobs)
        return [Grade(p.stem, 1.0, 1.0, "graded") for p in folder.iterdir()]

    monkeypatch.setattr(bench, "grade", fake_grade)
    record = bench.bench("logit_difference", submissions=2, rounds=3, out=tmp_path)
    assert graded == [1, 2, 2, 1, 1, 2]
    assert json.loads((tmp_path / "bench.json").read_text()) == record
    rows = record["assignments"]["logit_difference"]
    assert set(rows) == {"1", "2"} and rows["1"]["per_submission"]["rounds"] == 3
    assert rows["1"]["speedup"]["median"] == 1.0  # against itself, within each round
    out = capsys.readouterr().out
    assert "OMP_WAIT_POLICY=" in out and "torch threads" in out and "| logit_difference | 2 |" in out
    text = summary_tool.autograder_summary({**record, "source": "bench.json"})
    t = rows["2"]["per_submission"]
    assert f"| logit_difference | 2 | {t['median']:.1f} [{t['min']:.1f}-{t['max']:.1f}] |" in text


def test_patchlab_summary_renders_from_bench_json() -> None:
    record = json.loads((FIXTURES / "patchlab.json").read_text())
    text = summary_tool.patchlab_summary({**record, "source": "tests/fixtures/bench/patchlab.json"})
    assert f"medians of {record['rounds']} interleaved rounds" in text and "OMP_WAIT_POLICY=PASSIVE" in text
    fast = record["workloads"]["ioi"]["methods"]["fast"]
    low, high = fast["speedup_vs_tl_range"]
    assert (f"| fast | {fast['seconds']:.2f} [{fast['timing']['min']:.2f}-{fast['timing']['max']:.2f}] | "
            f"{fast['speedup_vs_tl']:.1f}× [{low:.1f}-{high:.1f}] |") in text
    attribution = next(r for r in record["heads"]["rows"] if r["method"] == "attribution")
    assert f"| `head_out` | attribution | {attribution['seconds']:.2f} (peer " in text
    assert "> **Warning: 1 figure varied by more than half its median over the rounds**" in text
    assert "Warning" not in summary_tool.patchlab_summary({**record, "warnings": [], "source": "x"})
