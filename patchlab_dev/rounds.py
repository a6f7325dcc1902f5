"""Timing that survives a busy machine: methods interleaved over rounds, medians with their spread.

A benchmark that times each method once, one after the other, compares a method measured while the
machine was quiet with one measured while it was busy. Here every round runs every method once (in an
order rotated from round to round, so none is always first), a method's time is the **median** of its
rounds with the **min-max** and interquartile range, and a ratio between two methods is taken **within
each round** (both measured under the same load), its median and min-max reported. A spread wider than
:data:`WIDE_SPREAD` of the median is flagged: rerun on a quieter machine before trusting the figure.
Used by ``python -m patchlab bench`` and ``python -m autograder bench``.
"""

from __future__ import annotations

import os
import statistics
from typing import Callable

DEFAULT_ROUNDS = 5
WIDE_SPREAD = 0.5  # (max - min) / median above this: the machine's load changed during the rounds


def interleave(
    tasks: dict[str, Callable[[], float]], rounds: int, log: Callable[[str], None] = lambda line: None
) -> dict[str, list[float]]:
    """Run each task once per round, the order rotated by one each round; each task returns its own
    seconds. Returns {task: [seconds of round 0, round 1, ...]}."""
    if rounds < 1:
        raise ValueError(f"rounds must be 1 or more, not {rounds}")
    names = list(tasks)
    samples: dict[str, list[float]] = {name: [0.0] * rounds for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            samples[name][r] = tasks[name]()
            log(f"round {r + 1}/{rounds} {name}: {samples[name][r]:.2f} s")
    return samples


def summary(samples: list[float]) -> dict[str, float | int]:
    """Median, min, max, first and third quartiles (inclusive method) and the number of rounds."""
    q1, _, q3 = statistics.quantiles(samples, n=4, method="inclusive") if len(samples) > 1 else samples * 3
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "q1": q1,
        "q3": q3,
        "rounds": len(samples),
    }


def ratio(peer: list[float], own: list[float]) -> dict[str, float | int]:
    """``peer / own`` within each round (how many times faster ``own`` is), summarised."""
    if len(peer) != len(own):
        raise ValueError("a ratio needs the two methods measured in the same rounds")
    return summary([p / o for p, o in zip(peer, own)])


def spread(stats: dict[str, float | int]) -> float:
    """``(max - min) / median``: 0 on a quiet machine."""
    return (stats["max"] - stats["min"]) / stats["median"] if stats["median"] else 0.0


def too_wide(label: str, stats: dict[str, float | int]) -> str | None:
    """A warning line when ``stats``' spread is over :data:`WIDE_SPREAD`, else None."""
    if stats["rounds"] > 1 and spread(stats) > WIDE_SPREAD:
        return (
            f"warning: {label} varied {stats['min']:.3g}-{stats['max']:.3g} around a median of "
            f"{stats['median']:.3g} over {stats['rounds']} rounds ({spread(stats):.0%} > {WIDE_SPREAD:.0%}): "
            "the machine's load changed; rerun on a quieter machine before trusting it"
        )
    return None


def run_context() -> dict[str, object]:
    """The threads and OpenMP policy the measurement ran with, the machine's load at its start, the date."""
    import datetime

    import torch

    return {
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def describe_context(context: dict[str, object]) -> str:
    """One line: threads, OpenMP settings, CPUs and load."""
    load = context.get("load_average")
    assert load is None or isinstance(load, (list, tuple)), load
    return (
        f"torch threads {context['torch_threads']}, OMP_NUM_THREADS={context['omp_num_threads'] or 'unset'}, "
        f"OMP_WAIT_POLICY={context['omp_wait_policy'] or 'unset (OpenMP spins: slow on a shared machine)'}, "
        f"{context['cpus']} CPUs" + (f", load average {load[0]:g} at the start" if load else "")
    )
