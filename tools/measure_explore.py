"""What an explorable map embeds at GPT-2 small's size: the residual, attention- and MLP-output maps and
the head map, drawn as the book draws them (`patchlab.plots.explorable_heatmap`'s defaults), against
the per-figure budget.

    python tools/gpt2_offline.py build DIR --shape full
    python tools/measure_explore.py --hub DIR/full/hub        # writes bench/explore.json
    python tools/bench_summary.py                             # and the measurements page from it

The sizes do not depend on the machine; they do on the weights, through the token table (the top
tokens of every embedded run, each string stored once) and the digits of the rounded numbers, which
hold what the weights predict. So the record also bounds each figure for any weights (`filled`):
every top token another, of the vocabulary's mean length, every number at its longest. The CPU
seconds are of one run (the data behind one figure: its cells' patched runs).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

import gpt2_offline  # noqa: E402  (tools/gpt2_offline.py)

COMPONENTS = ("resid_pre", "attn_out", "mlp_out", "head_out")
STACKED = ("attn_out", "mlp_out")


def filled(data: dict, token_bytes: float) -> dict:
    """``data`` (`patchlab.explore.cell_runs`'s) with every top token of every run another token, of
    ``token_bytes`` (the vocabulary's mean), and every number at its longest rounded form: a bound of
    the figure's size for any weights (the token table and the numbers' digits are what they change)."""
    tokens = itertools.count(len(data["tokens"]))

    def run(r: dict) -> dict:
        top = [[[next(tokens), 0.123] for _ in row] for row in r["top"]]
        return {**r, "ld": [-12.345 for _ in r["ld"]], "top": top, **({"m": -0.1234} if "m" in r else {})}

    out = {**data, "runs": {k: run(r) for k, r in data["runs"].items()},
           "cells": {k: run(r) for k, r in data["cells"].items()},
           "heads": {k: {name: [[0.12 for _ in row] for row in rows] for name, rows in h.items()}
                     for k, h in data["heads"].items()},
           "z": [[-0.1234 for _ in row] for row in data["z"]]}
    return {**out, "tokens": data["tokens"] + ["x" * round(token_bytes)] * (next(tokens) - len(data["tokens"]))}


def measure(hub: Path) -> dict:
    """The record: for each of `COMPONENTS`, the figure's embedded bytes and what it holds."""
    os.environ.update(gpt2_offline.environment(hub))
    import plotly
    import torch

    from patchlab.explore import BUDGET_BYTES, ExplorableFigure
    from patchlab.ioi import classic_ioi
    from patchlab.models import load_model
    from patchlab.patching import patch_ioi
    from patchlab.plots import explorable_heatmap, position_labels
    from patchlab.published import gpt2_small_ioi, side_by_side

    torch.set_grad_enabled(False)
    model = load_model("gpt2-small", device="cpu", verbose=False)
    vocab = model.to_str_tokens(torch.arange(model.cfg.d_vocab), prepend_bos=False)
    mean_token = sum(len(t.encode()) for t in vocab) / len(vocab)
    data = classic_ioi(model)
    labels = position_labels(data.str_tokens, data.s2_pos, data.end_pos)
    figures = {}
    for component in COMPONENTS:
        values = patch_ioi(model, data, component, method="fast", progress=False).values
        start = time.process_time()
        # chapter 10 draws its attention- and MLP-output maps under the published ones, in one figure
        published = side_by_side(values, "gpt2-small", gpt2_small_ioi(), component, labels) if component in STACKED else None
        fig = explorable_heatmap(model, data, values, component, f"gpt2-small: {component}", figure=published)
        cpu = time.process_time() - start
        html = fig.to_html(include_plotlyjs=False, full_html=False)
        figures[component] = {
            "cells": len(fig.data["cells"]),
            "total": fig.data["total"],
            "tokens": len(fig.data["tokens"]),
            "patterns": len(fig.data["heads"]),
            "bytes": fig.embedded_bytes(),
            "bound_bytes": ExplorableFigure(fig.figure, filled(fig.data, mean_token)).embedded_bytes(),
            "html_bytes": len(html.encode()),
            "cpu_s": round(cpu, 1),
        }
    cfg = model.cfg
    return {
        "kind": "explore",
        "model": "GPT-2 small's size (offline cache, random weights: tools/gpt2_offline.py --shape full)",
        "shape": {"n_layers": cfg.n_layers, "n_heads": cfg.n_heads, "d_model": cfg.d_model, "d_vocab": cfg.d_vocab},
        "prompts": int(data.clean_tokens.shape[0]),
        "seq_len": int(data.clean_tokens.shape[1]),
        "budget_bytes": BUDGET_BYTES,
        "vocab_mean_bytes": round(mean_token, 2),
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "versions": {"plotly": plotly.__version__, "torch": torch.__version__.split("+")[0]},
        "threads": torch.get_num_threads(),
        "figures": figures,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hub", type=Path, required=True, help="GPT-2 small's offline cache (.../full/hub)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "explore.json", help="(%(default)s)")
    args = parser.parse_args(argv)
    if not (args.hub / "models--gpt2").is_dir():
        parser.error("--hub must be the folder printed by: python tools/gpt2_offline.py build DIR --shape full")
    record = measure(args.hub.resolve())
    args.out.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
