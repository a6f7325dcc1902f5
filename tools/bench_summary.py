"""Write the book's measurements page and the package's cost table from the committed bench files.

    python tools/bench_summary.py [--check]

Reads ``bench/notebooks.json`` (``tools/measure_notebooks.py``: each chapter and exercise solution,
cell by cell, in interleaved rounds), ``bench/patchlab.json`` (``python -m patchlab bench --out DIR``),
``bench/autograder.json`` (``python -m autograder bench --out DIR``) and ``bench/explore.json``
(``tools/measure_explore.py``: the size of an explorable map at GPT-2 small's size), and writes
``book/measurements.md`` (the tables, dated, with the machine) and ``patchlab/data/costs.json`` (what
each page costs with GPT-2 small on a CPU, which the chapters' ``runtime_note`` reads). ``--check``
writes nothing and exits 1 when either file is not what the bench files give. A benchmark of fewer
than ``MIN_ROUNDS`` rounds is refused (a single timing on a shared machine is not a measurement); a
page measured fewer than ``ROBUST_RUNS`` times is flagged on the page, and one never measured listed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "tools"))

import measure_notebooks as measure_tool  # noqa: E402  (tools/measure_notebooks.py)
from patchlab_dev.rounds import describe_context  # noqa: E402

BENCH = ROOT / "bench"
PAGE = ROOT / "book" / "measurements.md"
COSTS = ROOT / "patchlab" / "data" / "costs.json"
NAMES = {"patchlab": "python -m patchlab bench", "autograder": "python -m autograder bench",
         "notebooks": "python tools/measure_notebooks.py", "explore": "python tools/measure_explore.py --hub DIR/full/hub"}
MIN_ROUNDS = 5  # the benchmarks' rounds (--rounds)
ROBUST_RUNS = 3  # a page measured fewer times is flagged on the page: one busy moment may be in its figure
# No cell should take longer than this on a 2-core CPU at GPT-2 small's size. Judged by its CPU seconds:
# on a quiet machine a cell waits no longer than the CPU time it needs (two threads: down to half), and
# unlike its wall time on a shared machine, the CPU time does not grow with the other jobs' load.
CELL_LIMIT_S = 120


class BenchError(ValueError):
    """A bench file that cannot give the page: the message says which and what to do."""


def _method(name: str) -> str:
    return "`get_act_patch_resid_pre`" if name == "transformer_lens" else name


def _setting(record: dict) -> str:
    date = f", {record['context']['date']}" if "date" in record["context"] else ""
    return (f"Generated from `{record['source']}`: medians of {record['rounds']} interleaved rounds (min-max in "
            f"brackets; each ratio taken within a round), {describe_context(record['context'])}{date}.")


def patchlab_summary(record: dict) -> str:
    """Markdown of a ``python -m patchlab bench`` record: the resid_pre workloads and the head sweeps."""
    lines = [f"Model {record['model']} on {record['device']}. {_setting(record)}"]
    for name, w in record.get("workloads", {}).items():
        lines += ["", f"**{name}** ({w['batch']} prompts × {w['seq_len']} tokens, `resid_pre` sweep)", "",
                  "| method | seconds | speed-up vs TL | max \\|diff\\| vs TL | peak MiB |",
                  "|---|---:|---:|---:|---:|"]
        for method, m in w["methods"].items():
            t, (low, high) = m["timing"], m["speedup_vs_tl_range"]
            peak = "n/a" if m["peak_mem_mb"] is None else f"{m['peak_mem_mb']:.0f}"
            lines.append(f"| {_method(method)} | {m['seconds']:.2f} [{t['min']:.2f}-{t['max']:.2f}] | "
                         f"{m['speedup_vs_tl']:.1f}× [{low:.1f}-{high:.1f}] | "
                         f"{m['max_abs_diff_vs_tl']:.1e} | {peak} |")
    if "heads" in record:
        lines += ["", f"**heads** ({record['heads']['batch']} prompts × {record['heads']['seq_len']} tokens; "
                      "\\* TransformerLens or the path reference timed on a sample of cells, scaled to all)", "",
                  "| sweep | method | seconds | speed-up | vs |", "|---|---|---:|---:|---|"]
        for r in record["heads"]["rows"]:
            if r["method"] == r["peer"]:
                continue
            peer = next(p for p in record["heads"]["rows"] if p["sweep"] == r["sweep"] and p["method"] == r["peer"])
            low, high = r["speedup_vs_peer_range"]
            star = "\\*" if peer["tl_cells_scale"] != 1 else ""
            lines.append(f"| `{r['sweep']}` | {r['method']} | {r['seconds']:.2f} (peer {peer['seconds']:.2f}{star}) | "
                         f"{r['speedup_vs_peer']:.1f}× [{low:.1f}-{high:.1f}] | {r['peer']} |")
    return "\n".join(lines + _warnings(record))


def autograder_summary(record: dict) -> str:
    """Markdown of a ``python -m autograder bench`` record: seconds per submission by ``--jobs``."""
    lines = [f"{record['submissions']} copies of the solution per assignment, sandbox {record['sandbox']}. "
             f"{_setting(record)}", "", "| assignment | `--jobs` | s / submission | speed-up |", "|---|---:|---:|---:|"]
    for name, rows in record["assignments"].items():
        for jobs, row in rows.items():
            t, s = row["per_submission"], row["speedup"]
            lines.append(f"| {name} | {jobs} | {t['median']:.1f} [{t['min']:.1f}-{t['max']:.1f}] | "
                         f"{s['median']:.2f}× [{s['min']:.2f}-{s['max']:.2f}] |")
    return "\n".join(lines + _warnings(record))


def explore_summary(record: dict) -> str:
    """Markdown of ``bench/explore.json``: what an explorable map embeds at GPT-2 small's size, against
    the budget, and its bound for any weights (``tools/measure_explore.py``'s ``filled``)."""
    budget = record["budget_bytes"]
    lines = [f"{record['model']}; the {record['prompts']} classic prompts of {record['seq_len']} tokens; "
             f"`explorable_heatmap`'s defaults, as the chapters draw them on GPT-2 small; written by "
             f"`{NAMES['explore']}` into `{record['source']}`, {record['date']}, CPU seconds of one run on "
             f"{record['threads']} thread{'s' * (record['threads'] > 1)}.", "",
             "| map | cells with their run | token strings | patterns | KB embedded | KB, any weights | CPU s |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    over = [f"`{name}`" for name, f in record["figures"].items() if f["bound_bytes"] > budget]
    for name, f in record["figures"].items():
        lines.append(f"| `{name}` | {f['cells']} of {f['total']} | {f['tokens']} | {f['patterns']} | "
                     f"{f['bytes'] / 1000:.0f} | {f['bound_bytes'] / 1000:.0f} | {f['cpu_s']:.0f} |")
    lines += ["", f"The budget is {budget / 1000:.0f} KB a figure (`patchlab.explore.BUDGET_BYTES`); a figure over it "
                  "is still drawn, with a warning that says to pass fewer cells or a smaller `top_k`. The weights "
                  "change the token table and the digits of the numbers: the last KB column is the figure with every "
                  f"top token of every run another token, of the vocabulary's mean length ({record['vocab_mean_bytes']:.1f}"
                  " bytes), and every number at its longest rounded form. "
              + (f"**Over the budget in that case: {', '.join(over)}.**" if over else "Within the budget even then.")]
    return "\n".join(lines)


def _warnings(record: dict) -> list[str]:
    """One line for the page: how many figures the benchmark warned about (bench.json has each)."""
    count = len(record["warnings"])
    if not count:
        return []
    figures = f"{count} figure{'s' * (count > 1)} varied by more than half {'their' if count > 1 else 'its'}"
    return ["", f"> **Warning: {figures} "
                f"median over the rounds** (the machine's load changed during the run; `{record['source']}` lists "
                "them): rerun on a quieter machine before trusting them."]


def _range(values: list[float], digits: int = 0) -> str:
    low, high = min(values), max(values)
    return f"{low:.{digits}f}" if round(low, digits) == round(high, digits) else f"{low:.{digits}f}-{high:.{digits}f}"


def reading_order(path: str) -> tuple[int, int, str]:
    """The chapters in the book's order (``_toc.yml``), then the exercise solutions by name."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    pages = [f"{toc['root']}.ipynb"] + [f"{entry['file']}.ipynb" for entry in toc["chapters"]]
    return (0, pages.index(path), path) if path in pages else (1, 0, path)


def page_costs(setup: dict) -> dict[str, dict]:
    """Per notebook of a ``notebooks.json`` setup: the medians of its runs (the cells' wall and CPU
    seconds), their min-max, the runs, the slowest cell (by median CPU) and the load during the runs."""
    pages = {}
    for path, runs in sorted(setup["notebooks"].items(), key=lambda item: reading_order(item[0])):
        counts = {len(run["cells"]) for run in runs}
        if len(counts) != 1:
            raise BenchError(f"{path}: its runs timed {sorted(counts)} cells: the notebook changed between runs; "
                             f"measure it again ({NAMES['notebooks']} --only {Path(path).stem})")
        cells = []
        for i, first in enumerate(runs[0]["cells"]):
            cells.append({"label": first["label"], "cpu_s": statistics.median(r["cells"][i]["cpu"] for r in runs),
                          "wall_s": statistics.median(r["cells"][i]["wall"] for r in runs)})
        cpu = [sum(c["cpu"] for c in r["cells"]) for r in runs]
        wall = [sum(c["wall"] for c in r["cells"]) for r in runs]
        load = [x for r in runs for x in (r["load_average"][0], r["load_average_after"][0])]
        slowest = max(cells, key=lambda c: c["cpu_s"])
        pages[path] = {"runs": len(runs), "cpu_s": statistics.median(cpu), "cpu_range": [min(cpu), max(cpu)],
                       "wall_s": statistics.median(wall), "wall_range": [min(wall), max(wall)],
                       "slowest_cell": {**slowest, "number": cells.index(slowest) + 1}, "cells": cells,
                       "load": [min(load), max(load)], "dates": sorted({r["date"][:10] for r in runs})}
    return pages


def page_key(path: str) -> str:
    """``book/NAME.ipynb`` -> ``book/NAME``; ``solutions/NAME/NAME.ipynb`` -> ``solutions/NAME``."""
    return str(Path(path).parent if path.startswith("solutions/") else Path(path).with_suffix(""))


def costs_table(notebooks: dict) -> dict:
    """``patchlab/data/costs.json``: what each page costs with GPT-2 small on a CPU, and where measured."""
    setup = notebooks["setups"]["gpt2-small"]
    pages = page_costs(setup)
    load = [x for page in pages.values() for x in page["load"]]
    dates = sorted({d for page in pages.values() for d in page["dates"]})
    measured = {"model": "GPT-2 small's size (offline cache, random weights)", "threads": setup["threads"],
                "machine": "a shared {}-core {}".format(*setup["machine"].split(" × ", 1)),
                "date": ", ".join(dates), "load": _range(load, 1)}
    return {"source": "bench/notebooks.json (tools/measure_notebooks.py; written by tools/bench_summary.py)",
            "measured": measured,
            "pages": {page_key(path): {"runs": p["runs"], "cpu_s": round(p["cpu_s"], 1), "wall_s": round(p["wall_s"], 1),
                                       "slowest_cell": {"cpu_s": round(p["slowest_cell"]["cpu_s"], 1),
                                                        "wall_s": round(p["slowest_cell"]["wall_s"], 1)}}
                      for path, p in pages.items()}}


def notebooks_summary(notebooks: dict) -> str:
    """Markdown: each page's cost on GPT-2 small's size (and on the course model where measured)."""
    setup = notebooks["setups"]["gpt2-small"]
    pages = page_costs(setup)
    course = page_costs(notebooks["setups"]["ioi-mini"]) if "ioi-mini" in notebooks["setups"] else {}
    costs = costs_table(notebooks)["measured"]
    lines = [f"Each page executed in a fresh kernel, {setup['threads']} threads "
             f"(`OMP_NUM_THREADS={setup['threads']}`, `OMP_WAIT_POLICY={setup['omp_wait_policy']}`), on "
             f"{setup['machine']}, {costs['date']}, load average {costs['load']} during the runs (the machine was "
             "shared with other jobs: the wall times are longer than a quiet machine's; the CPU seconds, the "
             "process's user + sys time, are not). Each figure is the median of the runs (min-max in brackets); "
             "rounds ran every notebook once, in an order rotated each round. Kernel start-up is not counted.",
             "", "| page | runs | wall s | CPU s | slowest cell: wall s, CPU s |"
             + (" course model: wall s, CPU s |" if course else ""), "|---|---:|---:|---:|---|" + ("---:|" * bool(course))]
    for path, p in pages.items():
        slow = p["slowest_cell"]
        mini = course.get(path)
        mini_text = f"{mini['wall_s']:.0f}, {mini['cpu_s']:.0f} ({mini['runs']} run{'s' * (mini['runs'] > 1)})" \
            if mini else "not measured"
        runs = f"{p['runs']}" if p["runs"] >= ROBUST_RUNS else f"{p['runs']} ⚠"
        lines.append(f"| `{page_key(path)}` | {runs} | {p['wall_s']:.0f} [{_range(p['wall_range'])}] | "
                     f"{p['cpu_s']:.0f} [{_range(p['cpu_range'])}] | {slow['wall_s']:.0f}, {slow['cpu_s']:.0f} "
                     f"(code cell {slow['number']}: `{slow['label'].replace('|', '/').replace('`', chr(39))}`) |"
                     + (f" {mini_text} |" if course else ""))
    over = [f"`{page_key(path)}` code cell {i + 1} ({c['wall_s']:.0f} s wall, {c['cpu_s']:.0f} CPU s)"
            for path, p in pages.items() for i, c in enumerate(p["cells"]) if c["cpu_s"] > CELL_LIMIT_S]
    few = [f"`{page_key(path)}`" for path, p in pages.items() if p["runs"] < ROBUST_RUNS]
    missing = [f"`{page_key(path)}`" for path in measure_tool.measured_notebooks() if path not in pages]
    if few:
        lines += ["", f"⚠ Measured fewer than {ROBUST_RUNS} times, so a busy moment may be in the figure: {', '.join(few)} "
                      f"(add rounds: `{NAMES['notebooks']} --only NAME ...`)."]
    if missing:
        lines += ["", f"Not measured yet (their runtime notes say so): {', '.join(missing)}."]
    lines += ["", f"Cells needing over {CELL_LIMIT_S} CPU s (median; on a quiet 2-core CPU such a cell could wait over "
                  f"two minutes): {', '.join(over) if over else 'none'}."]
    return "\n".join(lines)


def load_record(path: Path, name: str) -> dict:
    """A bench file, refused with one line when it is missing, malformed or has too few rounds."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise BenchError(f"{path}: {err} (write it with {NAMES[name]})") from None
    if name in ("patchlab", "autograder") and record.get("rounds", 0) < MIN_ROUNDS:
        raise BenchError(f"{path}: {record.get('rounds', 0)} rounds; the page needs {MIN_ROUNDS} or more "
                         f"({NAMES[name]} --rounds {MIN_ROUNDS})")
    record["source"] = path.resolve().relative_to(ROOT).as_posix() if path.resolve().is_relative_to(ROOT) \
        else path.name
    return record


def render(bench: Path = BENCH) -> tuple[str, str]:
    """The measurements page and the costs json, from the bench files in ``bench``."""
    names = ("notebooks", "patchlab", "autograder", "explore")
    records = {name: load_record(bench / f"{name}.json", name) for name in names}
    try:
        costs = costs_table(records["notebooks"])
        parts = [notebooks_summary(records["notebooks"]), patchlab_summary(records["patchlab"]),
                 autograder_summary(records["autograder"]), explore_summary(records["explore"])]
    except KeyError as err:
        raise BenchError(f"a bench file lacks {err}: write it again with its tool") from None
    page = "\n".join([
        "# Measurements", "",
        "<!-- Generated by `python tools/bench_summary.py` from bench/*.json: edit those, not this page. -->", "",
        "What the course's code costs, measured on the machines named below, not typed in: the chapters' runtime "
        "notes read the first table (through `patchlab/data/costs.json`). A figure is the median of repeated, "
        "interleaved runs (the tables say how many), so that one busy moment of a shared machine does not become "
        "a figure.", "",
        "## What each page costs on a CPU at GPT-2 small's size", "",
        "The chapters and exercise solutions on an offline GPT-2 small (`tools/gpt2_offline.py build DIR --shape full`:"
        " GPT-2 small's size and code path, random weights), measured by `python tools/measure_notebooks.py --hub "
        "DIR/full/hub --rounds 3` (more rounds of some pages: `--only NAME ...`; the course model: `--model ioi-mini`), "
        "then written here by `python tools/bench_summary.py`. "
        "**On a quiet 2-core CPU** a page waits about its CPU seconds or less (two threads share the work); "
        "**on a busy machine** the wait grows by about the load over the cores, while the CPU seconds stay (the "
        "wall times below are such a machine's); **Colab's free CPU runtime** has 2 virtual cores: expect about "
        "the CPU seconds to twice them (not measured there). A GPU runs every page in seconds.", "", parts[0], "",
        "## The patching benchmark", "", f"`{NAMES['patchlab']}`: the `resid_pre` sweep and the head sweeps, "
        "each method against TransformerLens.", "", parts[1], "",
        "## Grading throughput", "", f"`{NAMES['autograder']}`: a class graded as `python -m autograder grade` does it, "
        "sandbox on, with `--jobs 1` and `--jobs 2`, on the course model.", "", parts[2], "",
        "## Explorable figures at GPT-2 small's size", "", "What a map whose cells open their patched runs "
        "(`patchlab.plots.explorable_heatmap`) embeds in its page: its plotly figure, the runs of the cells it "
        "carries and its script.", "", parts[3], ""])
    return page, json.dumps(costs, indent=1) + "\n"


def _shown(path: Path) -> str:
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a file is out of date")
    parser.add_argument("--bench", type=Path, default=BENCH, help="the folder of the bench files (%(default)s)")
    args = parser.parse_args(argv)
    try:
        texts = dict(zip((PAGE, COSTS), render(args.bench)))
    except BenchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    stale = [path for path, text in texts.items() if not path.exists() or path.read_text(encoding="utf-8") != text]
    if args.check:
        for path in stale:
            print(f"{_shown(path)} is not what the bench files give: run python tools/bench_summary.py")
        return 1 if stale else 0
    for path in stale:
        path.write_text(texts[path], encoding="utf-8")
        print(f"wrote {_shown(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
