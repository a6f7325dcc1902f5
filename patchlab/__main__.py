"""Command line.

``python -m patchlab patch --model ioi-mini --component resid_pre --method fast --out DIR`` patches one
component on the 8 classic prompts; ``python -m patchlab bench --out DIR`` (or ``--quick``) benchmarks
the patching methods against TransformerLens.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from patchlab.models import MODEL_NAMES
from patchlab.patching import COMPONENTS, METHODS, component

# The components whose table is one heatmap ([n_layers, n_pos] or [n_layers, n_heads]).
HEATMAP_COMPONENTS = tuple(name for name in COMPONENTS if len(component(name).axes) == 1)


class _Parser(argparse.ArgumentParser):
    """Bad arguments exit with status 2 and a one-line reason (no usage dump)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"patchlab: error: {message} (see python -m patchlab {self.prog.split()[-1]} --help)", file=sys.stderr)
        raise SystemExit(2)


def cmd_patch(args: argparse.Namespace) -> int:
    from patchlab import ioi, plots
    from patchlab.models import load_model, model_label
    from patchlab.patching import patch_ioi

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        print(f"patchlab: error: --out {out} exists and is not a folder", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    model = load_model(args.model, device=args.device)
    data = ioi.classic_ioi(model)
    start = time.perf_counter()
    result = patch_ioi(model, data, args.component, args.method, progress=True)
    seconds = time.perf_counter() - start
    name = model_label(model)
    if component(args.component).axes == ("head",):
        x_labels, x_title = [f"head {h}" for h in range(model.cfg.n_heads)], "head"
    else:
        x_labels, x_title = plots.position_labels(data.str_tokens, data.s2_pos, data.end_pos), "position"
    title = plots.patching_title(name, args.component)
    record = {
        "model": name,
        "component": args.component,
        "method": args.method,
        "str_tokens": data.str_tokens,
        "x_labels": x_labels,
        "s2_pos": data.s2_pos,
        "end_pos": data.end_pos,
        "clean_tokens": data.clean_tokens.tolist(),
        "corrupted_tokens": data.corrupted_tokens.tolist(),
        "answer_tokens": data.answer_tokens.tolist(),
        "clean_logit_diff": result.clean_logit_diff,
        "corrupted_logit_diff": result.corrupted_logit_diff,
        "values": result.values.tolist(),
        "seconds": round(seconds, 3),
    }
    stem = out / args.component
    stem.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    fig = plots.heatmap(result.values, x_labels, title, x_title=x_title)
    fig.write_html(stem.with_suffix(".html"), include_plotlyjs=True, full_html=True)
    plots.save_png(result.values, x_labels, title, stem.with_suffix(".png"), x_title=x_title)
    print(f"wrote {stem}.json, {stem}.html and {stem}.png ({args.method}, {seconds:.1f} s)")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    try:
        from patchlab_dev import bench
    except ModuleNotFoundError:
        print(
            "patchlab: error: bench is a developer tool: run it in a clone of the course repository "
            "(patchlab_dev/ is not in the installed package)",
            file=sys.stderr,
        )
        return 2

    if args.out is not None and Path(args.out).exists() and not Path(args.out).is_dir():
        print(f"patchlab: error: --out {args.out} exists and is not a folder", file=sys.stderr)
        return 2
    if args.head_cells is not None and args.head_cells < 1:
        print("patchlab: error: --head-cells must be a positive number of cells", file=sys.stderr)
        return 2
    if args.rounds < 1:
        print("patchlab: error: --rounds must be 1 or more (5 or more to trust the spread)", file=sys.stderr)
        return 2
    return bench.main(
        args.out,
        quick=args.quick,
        device=args.device,
        parts=tuple(args.part or bench.PARTS),
        head_cells=args.head_cells,
        rounds=args.rounds,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m patchlab", description="Activation patching on the IOI task.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    patch = sub.add_parser("patch", help="patch one component over layers x positions on the 8 classic prompts")
    patch.add_argument("--model", default="auto", choices=MODEL_NAMES)
    patch.add_argument("--component", default="resid_pre", choices=HEATMAP_COMPONENTS)
    patch.add_argument(
        "--method",
        default="fast",
        choices=sorted(METHODS),
        help="reference (one pass per cell), fast (exact, default) or attribution (gradients)",
    )
    patch.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    patch.add_argument("--out", required=True, help="folder for COMPONENT.json, .html and .png")
    patch.set_defaults(func=cmd_patch)
    bench = sub.add_parser(
        "bench", help="time TransformerLens's patching sweeps against reference, fast, attribution and path patching"
    )
    bench.add_argument("--out", default=None, help="folder for bench.json (default: only print the tables)")
    bench.add_argument("--quick", action="store_true", help="a small setting on ioi-mini (for CI)")
    bench.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    bench.add_argument(
        "--part",
        action="append",
        choices=("resid", "heads"),
        help="measure only this part (repeatable): resid (the resid_pre sweeps) or heads (head "
        "sweeps, attribution of heads, path patching); default both",
    )
    bench.add_argument(
        "--head-cells",
        type=int,
        default=None,
        help="time TransformerLens's head sweeps and the path patching reference on this many "
        "evenly spread cells each, scaled to all (default: 48, --quick 16)",
    )
    bench.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="rounds, every method once per round, interleaved (default: %(default)s); each "
        "figure is the median of the rounds, with its min-max",
    )
    bench.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, RuntimeError, OSError) as err:
        print(f"patchlab: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
