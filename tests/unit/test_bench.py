"""The benchmark's parts: its work counts and its memory measure (the ``bench --quick`` command itself:
tests/e2e/test_bench_command.py)."""

from __future__ import annotations

import pytest
import torch

from patchlab_dev.bench import PeakMemory, token_layers


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
