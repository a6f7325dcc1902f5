"""Benchmark: TransformerLens's patching sweep against the reference loop, fast exact and attribution patching.

``python -m patchlab bench --out DIR`` times a residual-stream sweep (every layer x position) four
ways on the same model, prompts and clean cache, in one process, one method after the other:

- ``transformer_lens``: ``transformer_lens.patching.get_act_patch_resid_pre`` (the baseline);
- ``reference``, ``fast``, ``attribution``: :data:`patchlab.patching.METHODS`.

Two workloads: ``ioi`` (the 8 classic prompts, 15 tokens, only S2 and later differ between clean and
corrupted) and ``general`` (random tokens, every position differs). A sweep over sequence length
shows how each method's cost grows. Peak memory is the resident memory (CPU) or allocated CUDA
memory a method needs at its peak beyond what was in use just before it ran (model, prompts, clean
cache); see :class:`PeakMemory`. It also counts the token-layer passes each method runs
(:func:`token_layers`): the hardware-independent measure of work.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any, Callable

import torch
from jaxtyping import Int
from torch import Tensor

from patchlab.metrics import PatchingMetric, metric_from_runs
from patchlab.patching import attribution_patching, fast_patching, reference_patching

BENCH_METHODS = ("transformer_lens", "reference", "fast", "attribution")


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


FULL = Settings("gpt2-small-random", batch=8, general_seq_len=15, scaling_seq_lens=(15, 30, 60), scaling_batch=1)
QUICK = Settings("ioi-mini", batch=2, general_seq_len=8, scaling_seq_lens=(6, 12), scaling_batch=1, ioi_prompts=2)


@dataclass
class Workload:
    """Clean and corrupted tokens, answers and the clean cache: the shared input of every method."""

    name: str
    clean_tokens: Int[Tensor, "batch pos"]
    corrupted_tokens: Int[Tensor, "batch pos"]
    clean_cache: Any
    metric: PatchingMetric


def _workload(model: Any, name: str, clean: Tensor, corrupted: Tensor, answers: Tensor | None) -> Workload:
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


def ioi_workload(model: Any, n_prompts: int = 8) -> Workload:
    """The first ``n_prompts`` classic IOI prompts (15 tokens; clean and corrupted differ from S2 on)."""
    from patchlab.ioi import classic_ioi

    data = classic_ioi(model)
    return _workload(model, "ioi", data.clean_tokens[:n_prompts], data.corrupted_tokens[:n_prompts],
                     data.answer_tokens[:n_prompts])


def general_workload(model: Any, batch: int, seq_len: int, seed: int = 0) -> Workload:
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
    return {"full_pass": full, "transformer_lens": sweep, "reference": sweep, "fast": minimum + 2 * full,
            "attribution": 3 * full, "minimum": minimum}


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

    def __enter__(self) -> "PeakMemory":
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

    def transformer_lens(model: Any, w: Workload) -> Tensor:
        return tl_patching.get_act_patch_resid_pre(model, w.corrupted_tokens, w.clean_cache, w.metric)

    def ours(method: Callable[..., Tensor]) -> Callable[[Any, Workload], Tensor]:
        return lambda model, w: method(model, w.corrupted_tokens, w.clean_cache, w.metric, "resid_pre", progress)

    return {"transformer_lens": transformer_lens, "reference": ours(reference_patching),
            "fast": ours(fast_patching), "attribution": ours(attribution_patching)}


def measure(model: Any, workload: Workload, method: str, progress: bool = True) -> tuple[float, Tensor, float | None]:
    """Run one method on one workload: (seconds, values on the CPU, peak memory in MiB)."""
    run = _runners(progress)[method]
    device = torch.device(model.cfg.device)
    with PeakMemory(device) as memory:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        values = run(model, workload)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
    return seconds, values.detach().float().cpu(), memory.mb


def _bench_workload(model: Any, workload: Workload, progress: bool, log: Callable[[str], None]) -> dict[str, Any]:
    batch, seq_len = workload.clean_tokens.shape
    work = token_layers(model.cfg.n_layers, workload.clean_tokens.cpu(), workload.corrupted_tokens.cpu())
    results: dict[str, Any] = {}
    baseline: tuple[float, Tensor] | None = None
    for method in BENCH_METHODS:
        log(f"[{workload.name}] {method} ...")
        seconds, values, peak = measure(model, workload, method, progress)
        log(f"[{workload.name}] {method}: {seconds:.2f} s, peak {peak} MiB")
        if baseline is None:
            baseline = (seconds, values)
        results[method] = {
            "seconds": round(seconds, 3),
            "speedup_vs_tl": round(baseline[0] / seconds, 2),
            "max_abs_diff_vs_tl": float((values - baseline[1]).abs().max()),
            "peak_mem_mb": peak,
            "token_layers": work[method],
        }
    return {"batch": batch, "seq_len": seq_len, "clean_logit_diff": workload.metric.clean_logit_diff,
            "corrupted_logit_diff": workload.metric.corrupted_logit_diff,
            "minimum_token_layers": work["minimum"], "full_pass_token_layers": work["full_pass"],
            "methods": results}


def run_benchmark(settings: Settings, device: str | None = None, progress: bool = True,
                  log: Callable[[str], None] = lambda line: print(line, file=sys.stderr)) -> dict[str, Any]:
    """Measure every method on both workloads and over sequence lengths; return the ``bench.json`` record."""
    from patchlab.models import load_model, model_label

    model = load_model(settings.model, device=device, verbose=False)
    torch.manual_seed(settings.seed)
    workloads = {
        "ioi": _bench_workload(model, ioi_workload(model, settings.ioi_prompts), progress, log),
        "general": _bench_workload(
            model, general_workload(model, settings.batch, settings.general_seq_len, settings.seed), progress, log),
    }
    scaling = []
    for seq_len in settings.scaling_seq_lens:
        workload = general_workload(model, settings.scaling_batch, seq_len, settings.seed)
        for method in BENCH_METHODS:
            log(f"[scaling seq_len={seq_len}] {method} ...")
            seconds, _, _ = measure(model, workload, method, progress)
            log(f"[scaling seq_len={seq_len}] {method}: {seconds:.2f} s")
            scaling.append({"seq_len": seq_len, "method": method, "seconds": round(seconds, 3)})
    device_obj = torch.device(model.cfg.device)
    return {
        "model": model_label(model),
        "device": _describe_device(device_obj),
        "torch_threads": torch.get_num_threads(),
        "versions": {"torch": torch.__version__, "transformer_lens": version("transformer-lens"),
                     "python": platform.python_version()},
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "settings": {"batch": settings.batch, "general_seq_len": settings.general_seq_len,
                     "scaling_batch": settings.scaling_batch, "scaling_seq_lens": list(settings.scaling_seq_lens),
                  "ioi_prompts": settings.ioi_prompts},
        "peak_mem_note": (
            "MiB a method needs at its peak beyond what was in use before it ran (model, prompts, clean "
            "cache): " + ("max CUDA memory allocated" if device_obj.type == "cuda"
                          else "peak resident set size (VmHWM, reset before each method)")),
        "workloads": workloads,
        "scaling": scaling,
    }


def _describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    name = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        models = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                  if line.startswith("model name")]
        name = models[0] if models else name
    return f"cpu: {name}, {cores} cores"


def format_table(record: dict[str, Any]) -> str:
    """The benchmark as plain-text tables."""
    lines = [f"model {record['model']} on {record['device']}"]
    for name, w in record["workloads"].items():
        lines += ["", f"{name} workload: {w['batch']} prompts x {w['seq_len']} tokens, resid_pre sweep "
                      f"(least work of an exact method: {w['minimum_token_layers']:,} token-layers)",
                  f"{'method':<17}{'seconds':>9}{'vs TL':>8}{'max|diff| vs TL':>17}{'peak MiB':>10}{'token-layers':>14}"]
        for method, m in w["methods"].items():
            peak = "n/a" if m["peak_mem_mb"] is None else f"{m['peak_mem_mb']:.0f}"
            lines.append(f"{method:<17}{m['seconds']:>9.2f}{m['speedup_vs_tl']:>7.1f}x"
                         f"{m['max_abs_diff_vs_tl']:>17.1e}{peak:>10}{m['token_layers']:>14,}")
    seq_lens = sorted({row["seq_len"] for row in record["scaling"]})
    lines += ["", f"scaling (general workload, {record['settings']['scaling_batch']} prompt(s)): seconds by sequence length",
              f"{'method':<17}" + "".join(f"{n:>10}" for n in seq_lens)]
    for method in BENCH_METHODS:
        row = {r["seq_len"]: r["seconds"] for r in record["scaling"] if r["method"] == method}
        lines.append(f"{method:<17}" + "".join(f"{row[n]:>10.2f}" for n in seq_lens))
    return "\n".join(lines)


def main(out: str | None, quick: bool, device: str | None, progress: bool = True) -> int:
    """Run the benchmark, print the tables and write ``OUT/bench.json`` when ``out`` is given."""
    record = run_benchmark(QUICK if quick else FULL, device=device, progress=progress)
    print(format_table(record))
    if out is not None:
        path = Path(out)
        path.mkdir(parents=True, exist_ok=True)
        (path / "bench.json").write_text(json.dumps(record, indent=1) + "\n")
        print(f"wrote {path / 'bench.json'}")
    return 0
