"""Benchmark: TransformerLens's patching sweeps against the reference loop, fast exact and attribution patching.

``python -m patchlab bench --out DIR`` times a residual-stream sweep (every layer x position) four
ways on the same model, prompts and clean cache, in one process, the methods interleaved over
``--rounds`` rounds (:mod:`patchlab_dev.rounds`: each method's median with its min-max, each ratio taken
within a round against the peer measured in the same round, a warning where the spread is too wide):

- ``transformer_lens``: ``transformer_lens.patching.get_act_patch_resid_pre`` (the baseline);
- ``reference``, ``fast``, ``attribution``: :data:`patchlab.patching.METHODS`.

Two workloads: ``ioi`` (the 8 classic prompts, 15 tokens, only S2 and later differ between clean and
corrupted) and ``general`` (random tokens, every position differs). A sweep over sequence length
shows how each method's cost grows. Peak memory is the resident memory (CPU) or allocated CUDA
memory a method needs at its peak beyond what was in use just before it ran (model, prompts, clean
cache); see :class:`PeakMemory`. It also counts the token-layer passes each method runs
(:func:`token_layers`): the hardware-independent measure of work.

The heads part times, on the IOI workload, each attention-head sweep (outputs, queries, keys, values,
patterns; at all positions and by position) by TransformerLens's own function and by fast patching,
attribution patching of every head's output against exact head patching, and path patching (to the
final residual stream and to receivers' queries) by the hook-based reference and by the fast method.
Every TransformerLens sweep costs one identical full forward pass per cell (and the path patching
reference one or two per sender), so a run may time them on an evenly spread sample of their cells
(``Settings.head_cells``; TransformerLens's own ``index_df``, the reference's ``senders``) and scale
the time to all cells; the table says when it did.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, replace
from importlib.metadata import version
from pathlib import Path
from functools import partial
from typing import TYPE_CHECKING, Any, Callable

import torch
from jaxtyping import Int
from torch import Tensor

from patchlab_dev import rounds as timing
from patchlab.metrics import PatchingMetric, metric_from_runs
from patchlab.patching import (
    attribution_patching,
    component,
    fast_path_patching,
    fast_patching,
    reference_path_patching,
    reference_patching,
)

if TYPE_CHECKING:
    from patchlab.types import Cache, Model

BENCH_METHODS = ("transformer_lens", "reference", "fast", "attribution")
# Each head sweep and TransformerLens's function for it.
TL_HEAD_FUNCTIONS = {
    "head_out": "get_act_patch_attn_head_out_all_pos",
    "head_out_by_pos": "get_act_patch_attn_head_out_by_pos",
    "head_q": "get_act_patch_attn_head_q_all_pos",
    "head_q_by_pos": "get_act_patch_attn_head_q_by_pos",
    "head_k": "get_act_patch_attn_head_k_all_pos",
    "head_k_by_pos": "get_act_patch_attn_head_k_by_pos",
    "head_v": "get_act_patch_attn_head_v_all_pos",
    "head_v_by_pos": "get_act_patch_attn_head_v_by_pos",
    "head_pattern": "get_act_patch_attn_head_pattern_all_pos",
    "head_pattern_by_pos": "get_act_patch_attn_head_pattern_by_pos",
}
PARTS = ("resid", "heads")


@dataclass(frozen=True)
class Settings:
    """What one benchmark run measures."""

    model: str
    batch: int
    general_seq_len: int
    scaling_seq_lens: tuple[int, ...]
    scaling_batch: int
    ioi_prompts: int = 8  # the first prompts of the 8 classic ones
    seed: int = 0
    receivers: tuple[tuple[int, int], ...] = ()  # path patching's receiver heads (their queries)
    head_cells: int | None = (
        None  # TransformerLens head sweeps and path references timed on this many cells (None: all)
    )
    rounds: int = timing.DEFAULT_ROUNDS  # every method once per round, interleaved


# Receivers: the S-inhibition heads Wang et al. (2022) found in GPT-2 small (7.3, 7.9, 8.6, 8.10).
FULL = Settings(
    "gpt2-small-random",
    batch=8,
    general_seq_len=15,
    scaling_seq_lens=(15, 30, 60),
    scaling_batch=1,
    receivers=((7, 3), (7, 9), (8, 6), (8, 10)),
    head_cells=48,
)
QUICK = Settings(
    "ioi-mini",
    batch=2,
    general_seq_len=8,
    scaling_seq_lens=(6, 12),
    scaling_batch=1,
    ioi_prompts=2,
    receivers=((1, 0), (2, 3)),
    head_cells=16,
)


@dataclass
class Workload:
    """Clean and corrupted tokens, answers and the clean cache: the shared input of every method."""

    name: str
    clean_tokens: Int[Tensor, "batch pos"]
    corrupted_tokens: Int[Tensor, "batch pos"]
    clean_cache: Cache
    metric: PatchingMetric


def _workload(model: Model, name: str, clean: Tensor, corrupted: Tensor, answers: Tensor | None) -> Workload:
    """Cache the clean run and build the normalised metric.

    Without ``answers`` (random prompts), each prompt is scored on the token its clean run ranks
    first against the one its corrupted run ranks first (second if they coincide), so that the
    clean and corrupted logit differences are far apart and the normalised metric well conditioned.
    """
    with torch.no_grad():
        clean_logits, cache = model.run_with_cache(clean)
        corrupted_logits = model(corrupted)
    if answers is None:
        right = clean_logits[:, -1].argmax(-1)
        ranked = corrupted_logits[:, -1].topk(2, dim=-1).indices
        wrong = torch.where(ranked[:, 0] == right, ranked[:, 1], ranked[:, 0])
        answers = torch.stack([right, wrong], dim=1)
    return Workload(name, clean, corrupted, cache, metric_from_runs(clean_logits, corrupted_logits, answers))


def ioi_workload(model: Model, n_prompts: int = 8) -> Workload:
    """The first ``n_prompts`` classic IOI prompts (15 tokens; clean and corrupted differ from S2 on)."""
    from patchlab.ioi import classic_ioi

    data = classic_ioi(model)
    return _workload(
        model, "ioi", data.clean_tokens[:n_prompts], data.corrupted_tokens[:n_prompts], data.answer_tokens[:n_prompts]
    )


def general_workload(model: Model, batch: int, seq_len: int, seed: int = 0) -> Workload:
    """Random clean prompts and random corrupted ones that differ from them at every position."""
    generator = torch.Generator().manual_seed(seed)
    vocab = model.cfg.d_vocab
    clean = torch.randint(0, vocab, (batch, seq_len), generator=generator)
    corrupted = (clean + torch.randint(1, vocab, (batch, seq_len), generator=generator)) % vocab
    device = model.cfg.device
    return _workload(model, "general", clean.to(device), corrupted.to(device), None)


def token_layers(n_layers: int, clean: Tensor, corrupted: Tensor) -> dict[str, int]:
    """Token-layer passes (one position through one block) of each method for a resid_pre sweep.

    - ``full_pass``: one forward pass of the batch, ``batch * pos * n_layers``;
    - ``transformer_lens`` / ``reference``: one full pass per (layer, position) cell;
    - ``minimum``: the least an exact method needs: a patch at (layer, pos) that changes the residual
      must recompute positions ``pos..end`` in blocks ``layer..end`` for that prompt; a patch that
      changes nothing needs nothing;
    - ``fast``: the minimum plus two full passes (the model's corrupted run and the kernel's record of it);
    - ``attribution``: one forward pass and one backward pass (counted as two).
    """
    batch, n_pos = clean.shape
    full = batch * n_pos * n_layers
    differs = clean != corrupted  # [batch, pos]
    first = torch.where(differs.any(1), differs.int().argmax(1), torch.full((batch,), n_pos))
    minimum = 0
    for layer in range(n_layers):
        for pos in range(n_pos):
            # Block 0's input is the embedding (changed where the token changed); later residuals
            # change from the first changed token on (causal attention).
            changed = differs[:, pos] if layer == 0 else first <= pos
            minimum += int(changed.sum()) * (n_layers - layer) * (n_pos - pos)
    sweep = n_layers * n_pos * full
    return {
        "full_pass": full,
        "transformer_lens": sweep,
        "reference": sweep,
        "fast": minimum + 2 * full,
        "attribution": 3 * full,
        "minimum": minimum,
    }


class PeakMemory:
    """Peak memory of a block of code beyond what was in use when it started, in MiB (``.mb``).

    On CUDA: ``torch.cuda.max_memory_allocated`` after resetting its peak. On CPU (Linux): the
    process's peak resident set size (``VmHWM``) after resetting it through ``/proc/self/clear_refs``,
    minus the resident size at the start, measured after garbage collection and ``malloc_trim`` (so
    that freed memory is returned and not silently reused). Elsewhere ``mb`` is None.
    ``tracemalloc`` would miss torch's CPU tensors, which are not allocated by Python.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.mb: float | None = None

    @staticmethod
    def _status_kib(field: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise OSError(f"{field} not in /proc/self/status")

    def __enter__(self) -> PeakMemory:
        gc.collect()
        self._start: float | None = None
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
            return self
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
            self._start = self._status_kib("VmRSS") * 1024
        except (OSError, AttributeError):  # not Linux/glibc: no per-method measure
            self._start = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._start is None:
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            peak = self._status_kib("VmHWM") * 1024
        self.mb = round(max(0, peak - self._start) / 2**20, 1)


def _runners(progress: bool) -> dict[str, Callable[[Any, Workload], Tensor]]:
    from transformer_lens import patching as tl_patching

    def transformer_lens(model: Model, w: Workload) -> Tensor:
        return tl_patching.get_act_patch_resid_pre(model, w.corrupted_tokens, w.clean_cache, w.metric)

    def ours(method: Callable[..., Tensor]) -> Callable[[Any, Workload], Tensor]:
        return lambda model, w: method(model, w.corrupted_tokens, w.clean_cache, w.metric, "resid_pre", progress)

    return {
        "transformer_lens": transformer_lens,
        "reference": ours(reference_patching),
        "fast": ours(fast_patching),
        "attribution": ours(attribution_patching),
    }


def _timed(model: Model, run: Callable[[], Any]) -> tuple[float, Any, float | None]:
    """(seconds, result, peak MiB) of ``run()``."""
    device = torch.device(model.cfg.device or "cpu")
    with PeakMemory(device) as memory:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        result = run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
    return seconds, result, memory.mb


class Rounds:
    """Methods timed in interleaved rounds (:func:`patchlab_dev.rounds.interleave`); each method's values
    and its largest peak memory over the rounds are kept."""

    def __init__(self, model: Model, rounds: int, log: Callable[[str], None]) -> None:
        self.model, self.rounds, self.log = model, rounds, log
        self.values: dict[str, Tensor] = {}
        self.peaks: dict[str, float | None] = {}
        self.warnings: list[str] = []

    def run(self, label: str, methods: dict[str, Callable[[], Tensor]]) -> dict[str, list[float]]:
        """{method: seconds per round} of ``methods`` (each a call returning its values)."""

        def task(method: str, call: Callable[[], Any]) -> Callable[[], float]:
            def timed() -> float:
                seconds, values, peak = _timed(self.model, call)
                self.values[method] = values.detach().float().cpu()
                before = self.peaks.get(method)
                self.peaks[method] = peak if before is None or peak is None else max(before, peak)
                return seconds

            return timed

        self.values, self.peaks = {}, {}
        samples = timing.interleave(
            {m: task(m, c) for m, c in methods.items()}, self.rounds, lambda line: self.log(f"[{label}] {line}")
        )
        for method, seconds in samples.items():
            warning = timing.too_wide(f"{label} {method}", timing.summary(seconds))
            if warning:
                self.warnings.append(warning)
        return samples


def _stats(samples: list[float]) -> dict[str, float | int]:
    return {k: (v if k == "rounds" else round(v, 3)) for k, v in timing.summary(samples).items()}


def _timing_fields(samples: list[float], peer: list[float], key: str) -> dict[str, Any]:
    """``seconds`` (the median), ``timing`` (median, min, max, quartiles, rounds), the ratio against
    ``peer`` measured in the same rounds (``key``: its median; ``key_range``: min and max)."""
    speedup = timing.ratio(peer, samples)
    return {
        "seconds": round(timing.summary(samples)["median"], 3),
        "timing": _stats(samples),
        key: round(speedup["median"], 2),
        f"{key}_range": [round(speedup["min"], 2), round(speedup["max"], 2)],
    }


def _bench_workload(model: Model, workload: Workload, progress: bool, rounds: Rounds) -> dict[str, Any]:
    batch, seq_len = workload.clean_tokens.shape
    work = token_layers(model.cfg.n_layers, workload.clean_tokens.cpu(), workload.corrupted_tokens.cpu())
    runners = _runners(progress)
    samples = rounds.run(workload.name, {m: partial(runners[m], model, workload) for m in BENCH_METHODS})
    baseline = rounds.values["transformer_lens"]
    results = {
        method: {
            **_timing_fields(samples[method], samples["transformer_lens"], "speedup_vs_tl"),
            "max_abs_diff_vs_tl": float((rounds.values[method] - baseline).abs().max()),
            "peak_mem_mb": rounds.peaks[method],
            "token_layers": work[method],
        }
        for method in BENCH_METHODS
    }
    return {
        "batch": batch,
        "seq_len": seq_len,
        "clean_logit_diff": workload.metric.clean_logit_diff,
        "corrupted_logit_diff": workload.metric.corrupted_logit_diff,
        "minimum_token_layers": work["minimum"],
        "full_pass_token_layers": work["full_pass"],
        "methods": results,
    }


def _tl_head_sweep(model: Model, w: Workload, name: str, cells: int | None) -> tuple[Tensor, Tensor | None, float]:
    """TransformerLens's sweep ``name``: (values, the flat indices of the cells it ran or None for all,
    how many times more cells the full sweep has)."""
    import pandas as pd
    from transformer_lens import patching as tl_patching

    sweep = getattr(tl_patching, TL_HEAD_FUNCTIONS[name])
    spec = component(name)
    shape = (model.cfg.n_layers, *spec.sizes(model, w.corrupted_tokens.shape[1]))
    total = int(torch.tensor(shape).prod())
    if cells is None or cells >= total:
        return sweep(model, w.corrupted_tokens, w.clean_cache, w.metric), None, 1.0
    flat = torch.linspace(0, total - 1, cells).round().long().unique()
    index_df = pd.DataFrame(
        torch.stack(torch.unravel_index(flat, shape), 1).tolist(), columns=list(sweep.keywords["index_axis_names"])
    )
    values = sweep.func(
        model,
        w.corrupted_tokens,
        w.clean_cache,
        w.metric,
        patch_setter=sweep.keywords["patch_setter"],
        activation_name=sweep.keywords["activation_name"],
        index_df=index_df,
    )
    return values, flat, total / len(flat)


def bench_heads(model: Model, w: Workload, settings: Settings, progress: bool, rounds: Rounds) -> dict[str, Any]:
    """Head sweeps (TransformerLens against fast, attribution of head outputs) and path patching,
    each sweep's methods interleaved over the rounds."""
    rows: list[dict[str, Any]] = []

    def add(
        sweep: str, method: str, samples: dict[str, list[float]], peer: str, diff: float | None, scaled: float = 1.0
    ) -> None:
        rows.append(
            {
                "sweep": sweep,
                "method": method,
                "peer": peer,
                **_timing_fields(samples[method], samples[peer], "speedup_vs_peer"),
                "max_abs_diff_vs_peer": diff,
                "peak_mem_mb": rounds.peaks[method],
                "tl_cells_scale": round(scaled, 3),
            }
        )

    args = (w.corrupted_tokens, w.clean_cache, w.metric)
    for name in TL_HEAD_FUNCTIONS:
        sampled: dict[str, Any] = {}

        def tl_sweep(name: str = name) -> Tensor:
            values, sampled["flat"], sampled["scale"] = _tl_head_sweep(model, w, name, settings.head_cells)
            return values

        methods: dict[str, Callable[[], Tensor]] = {
            "transformer_lens": tl_sweep,
            "fast": partial(fast_patching, model, *args, name, progress),
        }
        if name == "head_out":
            methods["attribution"] = lambda: attribution_patching(model, *args, name, progress)
        samples = rounds.run(f"heads {name}", methods)
        scale = sampled["scale"]  # TransformerLens timed on a sample of the cells: the time of all of them
        samples["transformer_lens"] = [seconds * scale for seconds in samples["transformer_lens"]]
        tl_values = rounds.values["transformer_lens"].flatten()
        add(name, "transformer_lens", samples, "transformer_lens", 0.0, scale)
        for method in [m for m in methods if m != "transformer_lens"]:
            values = rounds.values[method].flatten()
            values = values if sampled["flat"] is None else values[sampled["flat"]]
            add(name, method, samples, "transformer_lens", float((values - tl_values).abs().max()))
        if name == "head_out":
            rows[-1]["speedup_vs_fast"] = round(timing.ratio(samples["fast"], samples["attribution"])["median"], 2)
    n_senders = model.cfg.n_layers * model.cfg.n_heads
    flat = torch.linspace(0, n_senders - 1, min(settings.head_cells or n_senders, n_senders)).round().long().unique()
    senders = [divmod(int(i), model.cfg.n_heads) for i in flat]  # each costs the same passes: time a sample
    scale = n_senders / len(senders)
    for sweep, receivers in (("path_to_final", None), ("path_to_receivers_q", list(settings.receivers))):
        samples = rounds.run(
            f"heads {sweep}",
            {
                "reference": partial(reference_path_patching, model, *args, receivers, "q", progress, senders),
                "fast": partial(fast_path_patching, model, *args, receivers, "q", progress),
            },
        )
        samples["reference"] = [seconds * scale for seconds in samples["reference"]]
        diff = (rounds.values["fast"].flatten()[flat] - rounds.values["reference"].flatten()[flat]).abs().max()
        add(sweep, "reference", samples, "reference", 0.0, scale)
        add(sweep, "fast", samples, "reference", float(diff))
    return {
        "batch": int(w.clean_tokens.shape[0]),
        "seq_len": int(w.clean_tokens.shape[1]),
        "head_cells": settings.head_cells,
        "receivers": [list(r) for r in settings.receivers],
        "rows": rows,
    }


def run_benchmark(
    settings: Settings,
    device: str | None = None,
    progress: bool = True,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
    parts: tuple[str, ...] = PARTS,
) -> dict[str, Any]:
    """Measure the ``parts`` (``resid``: every method on both workloads and over sequence lengths;
    ``heads``: :func:`bench_heads`); return the ``bench.json`` record."""
    from patchlab.models import load_model, model_label

    unknown = set(parts) - set(PARTS)
    if unknown:
        raise ValueError(f"unknown benchmark part {sorted(unknown)[0]!r}: choose from {', '.join(PARTS)}")
    model = load_model(settings.model, device=device, verbose=False)
    torch.manual_seed(settings.seed)
    device_obj = torch.device(model.cfg.device)
    record: dict[str, Any] = {
        "model": model_label(model),
        "device": _describe_device(device_obj),
        "context": timing.run_context(),
        "rounds": settings.rounds,
        "versions": {
            "torch": torch.__version__,
            "transformer_lens": version("transformer-lens"),
            "python": platform.python_version(),
        },
        "settings": {
            "batch": settings.batch,
            "general_seq_len": settings.general_seq_len,
            "scaling_batch": settings.scaling_batch,
            "scaling_seq_lens": list(settings.scaling_seq_lens),
            "ioi_prompts": settings.ioi_prompts,
            "head_cells": settings.head_cells,
            "receivers": [list(r) for r in settings.receivers],
        },
        "peak_mem_note": (
            "MiB a method needs at its peak beyond what was in use before it ran (model, prompts, clean "
            "cache): "
            + (
                "max CUDA memory allocated"
                if device_obj.type == "cuda"
                else "peak resident set size (VmHWM, reset before each method)"
            )
        ),
    }
    log(f"{settings.rounds} interleaved rounds; {timing.describe_context(record['context'])}")
    rounds = Rounds(model, settings.rounds, log)
    if "resid" in parts:
        record["workloads"] = {
            "ioi": _bench_workload(model, ioi_workload(model, settings.ioi_prompts), progress, rounds),
            "general": _bench_workload(
                model,
                general_workload(model, settings.batch, settings.general_seq_len, settings.seed),
                progress,
                rounds,
            ),
        }
        record["scaling"] = []
        runners = _runners(progress)
        for seq_len in settings.scaling_seq_lens:
            workload = general_workload(model, settings.scaling_batch, seq_len, settings.seed)
            samples = rounds.run(
                f"scaling seq_len={seq_len}", {m: partial(runners[m], model, workload) for m in BENCH_METHODS}
            )
            record["scaling"] += [
                {
                    "seq_len": seq_len,
                    "method": method,
                    "seconds": _stats(samples[method])["median"],
                    "timing": _stats(samples[method]),
                }
                for method in BENCH_METHODS
            ]
    if "heads" in parts:
        record["heads"] = bench_heads(model, ioi_workload(model, settings.ioi_prompts), settings, progress, rounds)
    record["warnings"] = rounds.warnings
    return record


def _describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    name = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        models = [
            line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")
        ]
        name = models[0] if models else name
    return f"cpu: {name}, {cores} cores"


def _spread(t: dict[str, Any]) -> str:
    return f"{t['min']:.2f}-{t['max']:.2f}"


def _ratio(m: dict[str, Any], key: str) -> str:
    low, high = m[f"{key}_range"]
    return f"{m[key]:.1f}x [{low:.1f}-{high:.1f}]"


def format_table(record: dict[str, Any]) -> str:
    """The benchmark as plain-text tables: medians over the rounds, min-max, each ratio's median and
    [min-max] over the rounds; then any warnings."""
    lines = [
        f"model {record['model']} on {record['device']}; medians of {record['rounds']} interleaved rounds, "
        f"{timing.describe_context(record['context'])}"
    ]
    for name, w in record.get("workloads", {}).items():
        lines += [
            "",
            f"{name} workload: {w['batch']} prompts x {w['seq_len']} tokens, resid_pre sweep "
            f"(least work of an exact method: {w['minimum_token_layers']:,} token-layers)",
            f"{'method':<17}{'seconds':>9}{'min-max':>14}{'vs TL [min-max]':>20}{'max|diff| vs TL':>17}"
            f"{'peak MiB':>10}{'token-layers':>14}",
        ]
        for method, m in w["methods"].items():
            peak = "n/a" if m["peak_mem_mb"] is None else f"{m['peak_mem_mb']:.0f}"
            lines.append(
                f"{method:<17}{m['seconds']:>9.2f}{_spread(m['timing']):>14}{_ratio(m, 'speedup_vs_tl'):>20}"
                f"{m['max_abs_diff_vs_tl']:>17.1e}{peak:>10}{m['token_layers']:>14,}"
            )
    if "scaling" in record:
        seq_lens = sorted({row["seq_len"] for row in record["scaling"]})
        lines += [
            "",
            f"scaling (general workload, {record['settings']['scaling_batch']} prompt(s)): seconds by "
            "sequence length (median, min-max)",
            f"{'method':<17}" + "".join(f"{n:>22}" for n in seq_lens),
        ]
        for method in BENCH_METHODS:
            row = {r["seq_len"]: r for r in record["scaling"] if r["method"] == method}
            lines.append(
                f"{method:<17}"
                + "".join(f"{row[n]['seconds']:>10.2f} ({_spread(row[n]['timing'])})".rjust(22) for n in seq_lens)
            )
    if "heads" in record:
        heads = record["heads"]
        lines += [
            "",
            f"heads (ioi workload, {heads['batch']} prompts x {heads['seq_len']} tokens); path patching "
            f"to the queries of {', '.join(f'{layer}.{h}' for layer, h in heads['receivers'])}"
            + (
                ""
                if heads["head_cells"] is None
                else f"; * timed on {heads['head_cells']} evenly spread cells (senders), scaled to all"
            ),
            f"{'sweep':<22}{'method':<17}{'seconds':>10}{'min-max':>16}{'speed-up [min-max]':>22}{'vs':>18}"
            f"{'max|diff|':>11}{'peak MiB':>10}",
        ]
        for r in heads["rows"]:
            peak = "n/a" if r["peak_mem_mb"] is None else f"{r['peak_mem_mb']:.0f}"
            seconds = f"{r['seconds']:.2f}" + ("*" if r["tl_cells_scale"] != 1 else "")
            lines.append(
                f"{r['sweep']:<22}{r['method']:<17}{seconds:>10}{_spread(r['timing']):>16}"
                f"{_ratio(r, 'speedup_vs_peer'):>22}{r['peer']:>18}"
                f"{r['max_abs_diff_vs_peer']:>11.1e}{peak:>10}"
            )
    return "\n".join(lines + [""] * bool(record["warnings"]) + record["warnings"])


def main(
    out: str | None,
    quick: bool,
    device: str | None,
    progress: bool = True,
    parts: tuple[str, ...] = PARTS,
    head_cells: int | None = None,
    rounds: int = timing.DEFAULT_ROUNDS,
) -> int:
    """Run the benchmark, print the tables and write ``OUT/bench.json`` when ``out`` is given."""
    settings = replace(QUICK if quick else FULL, rounds=rounds)
    if head_cells is not None:
        settings = replace(settings, head_cells=head_cells)
    record = run_benchmark(settings, device=device, progress=progress, parts=parts)
    print(format_table(record))
    if out is not None:
        path = Path(out)
        path.mkdir(parents=True, exist_ok=True)
        (path / "bench.json").write_text(json.dumps(record, indent=1) + "\n")
        print(f"wrote {path / 'bench.json'}")
    return 0
