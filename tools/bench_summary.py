"""Rewrite the README's benchmark summaries from ``bench.json`` files, instead of typed tables.

    python tools/bench_summary.py [--patchlab bench/patchlab.json] [--autograder bench/autograder.json]
                                  [--readme README.md]

Each summary lives between two markers in the README, ``<!-- bench:patchlab -->`` ...
``<!-- /bench:patchlab -->`` (and ``autograder``); only the text between them is replaced. The files
are what ``python -m patchlab bench --out DIR`` and ``python -m autograder bench --out DIR`` write
(``DIR/bench.json``): medians of interleaved rounds with their min-max, ratios taken within a round.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from patchlab_dev.rounds import describe_context  # noqa: E402

NAMES = {"patchlab": "python -m patchlab bench", "autograder": "python -m autograder bench"}


def _method(name: str) -> str:
    return "`get_act_patch_resid_pre`" if name == "transformer_lens" else name


def _setting(record: dict) -> str:
    return (f"Generated from `{record['source']}`: medians of {record['rounds']} interleaved rounds (min-max in "
            f"brackets; each ratio taken within a round), {describe_context(record['context'])}.")


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


def _warnings(record: dict) -> list[str]:
    """One line for the README: how many figures the benchmark warned about (bench.json has each)."""
    count = len(record["warnings"])
    if not count:
        return []
    figures = f"{count} figure{'s' * (count > 1)} varied by more than half {'their' if count > 1 else 'its'}"
    return ["", f"> **Warning: {figures} "
                f"median over the rounds** (the machine's load changed during the run; `{record['source']}` lists "
                "them): rerun on a quieter machine before trusting them."]


def replace_block(text: str, name: str, body: str) -> str:
    """``text`` with what lies between the ``bench:name`` markers replaced by ``body``."""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        raise ValueError(f"the README needs one {start} line and one {end} line after it, around the summary")
    head, rest = text.split(start)
    _, tail = rest.split(end)
    return f"{head}{start}\n{body}\n{end}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patchlab", type=Path, help="a bench.json of python -m patchlab bench")
    parser.add_argument("--autograder", type=Path, help="a bench.json of python -m autograder bench")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    args = parser.parse_args(argv)
    text = args.readme.read_text(encoding="utf-8")
    for name, path, render in (("patchlab", args.patchlab, patchlab_summary),
                               ("autograder", args.autograder, autograder_summary)):
        if path is None:
            continue
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            record["source"] = path.resolve().relative_to(ROOT).as_posix() if path.resolve().is_relative_to(ROOT) \
                else path.name
            body = render(record)
        except (OSError, ValueError, KeyError) as err:
            print(f"error: {path}: {err!r} (a bench.json of {NAMES[name]} --out DIR is needed)", file=sys.stderr)
            return 2
        try:
            text = replace_block(text, name, body)
        except ValueError as err:
            print(f"error: {args.readme}: {err}", file=sys.stderr)
            return 2
    args.readme.write_text(text, encoding="utf-8")
    print(f"rewrote {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
