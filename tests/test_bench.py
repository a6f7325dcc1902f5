"""The benchmark: its work counts, its memory measure and the ``bench --quick`` command's output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from patchlab.__main__ import main
from patchlab.bench import BENCH_METHODS, PeakMemory, token_layers

METRIC_KEYS = {"seconds", "speedup_vs_tl", "max_abs_diff_vs_tl", "peak_mem_mb"}


def test_token_layers_every_position_differs() -> None:
    batch, n_pos, n_layers = 3, 5, 4
    clean = torch.zeros(batch, n_pos, dtype=torch.long)
    work = token_layers(n_layers, clean, clean + 1)
    full = batch * n_pos * n_layers
    assert work["full_pass"] == full
    assert work["transformer_lens"] == work["reference"] == n_layers * n_pos * full
    # Every cell (l, p) recomputes positions p.. in blocks l..: sum over l and p in closed form.
    assert work["minimum"] == batch * (n_layers * (n_layers + 1) // 2) * (n_pos * (n_pos + 1) // 2)
    assert work["fast"] == work["minimum"] + 2 * full


def test_token_layers_only_the_last_token_differs() -> None:
    n_pos, n_layers = 6, 3
    clean = torch.zeros(2, n_pos, dtype=torch.long)
    corrupted = clean.clone()
    corrupted[:, -1] = 1
    # Only the last position of each layer is patched, and it recomputes itself in the blocks above.
    assert token_layers(n_layers, clean, corrupted)["minimum"] == 2 * n_layers * (n_layers + 1) // 2


def test_peak_memory_sees_torch_allocations() -> None:
    with PeakMemory(torch.device("cpu")) as memory:
        block = torch.ones(64 * 2**20 // 4)  # 64 MiB, allocated by torch (invisible to tracemalloc)
        del block
    if memory.mb is None:
        pytest.skip("no per-method peak memory on this platform")
    assert memory.mb >= 60


@pytest.mark.slow
def test_bench_quick_writes_the_documented_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--quick", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "bench.json").read_text())
    assert {"model", "device", "workloads", "scaling"} <= set(record)
    assert set(record["workloads"]) == {"ioi", "general"}
    for workload in record["workloads"].values():
        assert isinstance(workload["batch"], int) and isinstance(workload["seq_len"], int)
        assert set(workload["methods"]) == set(BENCH_METHODS)
        for name, measured in workload["methods"].items():
            assert METRIC_KEYS <= set(measured)
            assert measured["seconds"] > 0
        methods = workload["methods"]
        assert methods["transformer_lens"]["max_abs_diff_vs_tl"] == 0
        assert methods["reference"]["max_abs_diff_vs_tl"] <= 1e-4
        assert methods["fast"]["max_abs_diff_vs_tl"] <= 1e-4
    seq_lens = {row["seq_len"] for row in record["scaling"]}
    assert len(seq_lens) >= 2
    assert sorted((row["seq_len"], row["method"]) for row in record["scaling"]) == sorted(
        (n, method) for n in seq_lens for method in BENCH_METHODS)
    printed = capsys.readouterr().out
    assert all(method in printed for method in BENCH_METHODS) and "bench.json" in printed
