"""The ``python -m patchlab bench --quick`` command: the JSON it writes and what it prints (minutes: it
times every method on the course model)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from patchlab.__main__ import main
from patchlab_dev.bench import BENCH_METHODS, TL_HEAD_FUNCTIONS

METRIC_KEYS = {"seconds", "speedup_vs_tl", "max_abs_diff_vs_tl", "peak_mem_mb"}


@pytest.mark.slow
def test_bench_quick_writes_the_documented_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--quick", "--rounds", "2", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "bench.json").read_text())
    assert {"model", "device", "workloads", "scaling", "context", "warnings"} <= set(record)
    assert record["rounds"] == 2 and record["context"]["omp_wait_policy"] == os.environ.get("OMP_WAIT_POLICY")
    assert set(record["workloads"]) == {"ioi", "general"}
    for workload in record["workloads"].values():
        assert isinstance(workload["batch"], int) and isinstance(workload["seq_len"], int)
        assert set(workload["methods"]) == set(BENCH_METHODS)
        for name, measured in workload["methods"].items():
            assert METRIC_KEYS <= set(measured)
            assert measured["seconds"] > 0
            timing = measured["timing"]  # the median of two rounds, each ratio within its round
            assert timing["rounds"] == 2 and timing["min"] <= measured["seconds"] == timing["median"] <= timing["max"]
            low, high = measured["speedup_vs_tl_range"]
            assert low <= measured["speedup_vs_tl"] <= high
        methods = workload["methods"]
        assert methods["transformer_lens"]["max_abs_diff_vs_tl"] == 0
        assert methods["reference"]["max_abs_diff_vs_tl"] <= 1e-4
        assert methods["fast"]["max_abs_diff_vs_tl"] <= 1e-4
    seq_lens = {row["seq_len"] for row in record["scaling"]}
    assert len(seq_lens) >= 2
    assert sorted((row["seq_len"], row["method"]) for row in record["scaling"]) == sorted(
        (n, method) for n in seq_lens for method in BENCH_METHODS)
    heads = record["heads"]["rows"]
    expected = {(sweep, "transformer_lens") for sweep in TL_HEAD_FUNCTIONS} | {(sweep, "fast") for sweep in TL_HEAD_FUNCTIONS}
    expected |= {("head_out", "attribution")} | {(p, m) for p in ("path_to_final", "path_to_receivers_q")
                                                  for m in ("reference", "fast")}
    assert {(row["sweep"], row["method"]) for row in heads} == expected
    for row in heads:
        assert row["seconds"] > 0 and row["speedup_vs_peer"] > 0
        if row["method"] == "fast":  # exact: equal to TransformerLens's sweep / the path patching reference
            assert row["max_abs_diff_vs_peer"] <= 1e-4
    attribution = next(row for row in heads if row["method"] == "attribution")
    assert attribution["peer"] == "transformer_lens" and attribution["speedup_vs_fast"] > 0
    printed = capsys.readouterr().out
    assert all(method in printed for method in BENCH_METHODS) and "bench.json" in printed
    assert "medians of 2 interleaved rounds, torch threads" in printed and "OMP_WAIT_POLICY=" in printed
    assert all(sweep in printed for sweep in TL_HEAD_FUNCTIONS) and "path_to_receivers_q" in printed


@pytest.mark.slow
def test_bench_parts_and_head_cells(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--quick", "--part", "heads", "--head-cells", "3", "--rounds", "1", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "bench.json").read_text())
    assert "workloads" not in record and record["settings"]["head_cells"] == 3
    scaled = [row for row in record["heads"]["rows"] if row["tl_cells_scale"] > 1]
    assert {row["method"] for row in scaled} == {"transformer_lens", "reference"}
    assert "* timed on 3 evenly spread cells (senders), scaled to all" in capsys.readouterr().out
    assert main(["bench", "--quick", "--head-cells", "0"]) == 2
    assert main(["bench", "--quick", "--rounds", "0"]) == 2
