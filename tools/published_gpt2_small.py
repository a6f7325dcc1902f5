"""Write patchlab/data/gpt2_small_ioi.json: GPT-2 small's published IOI patching maps, as the book draws them.

The values come from the outputs stored in TransformerLens's Exploratory Analysis Demo (run on the
real GPT-2 small); this script keeps the four maps the book draws (resid_pre, attn_out, mlp_out by
layer and position, head_out by layer and head) and the demo's previous-token, duplicate-token and
induction scores of every head, rounded to 4 decimals, with the notebook path,
commit and model loading they come from, and checks them against the same notebook re-run through
TransformerBridge. Run it again only if the source changes:

    python tools/published_gpt2_small.py /work/shared/reference/gpt2_small_ioi
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np

SOURCE = "exploratory_demo_ioi_hookedtransformer_49461b6b.json"
CHECK = "exploratory_demo_ioi_transformerbridge_96c11979.json"
# The book's component name -> the demo's plot title.
MAPS = {
    "resid_pre": "Logit Difference From Patched Residual Stream",
    "attn_out": "Logit Difference From Patched Attention Layer",
    "mlp_out": "Logit Difference From Patched MLP Layer",
    "head_out": "Logit Difference From Patched Head Output",
}
# Head scores of the demo's "finding induction heads" section (attention on repeated random tokens).
SCORES = {"previous_token": "Previous Token Scores", "duplicate_token": "Duplicate Token Scores",
          "induction": "Induction Head Scores"}
OUT = Path(__file__).resolve().parent.parent / "patchlab" / "data" / "gpt2_small_ioi.json"


def _maps(record: dict, titles: dict[str, str] = MAPS) -> dict[str, np.ndarray]:
    by_title = {entry["title"]: np.asarray(entry["z"], dtype=float) for entry in record["heatmaps"].values()}
    return {name: by_title[title] for name, title in titles.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reference_dir", type=Path, help="folder holding the demo outputs (" + SOURCE + ")")
    args = parser.parse_args()
    source = json.loads((args.reference_dir / SOURCE).read_text(encoding="utf-8"))
    check = json.loads((args.reference_dir / CHECK).read_text(encoding="utf-8"))
    maps, bridge = _maps(source), _maps(check)
    scores, bridge_scores = _maps(source, SCORES), _maps(check, SCORES)
    gap = max(float(np.abs(a[k] - b[k]).max()) for a, b in ((maps, bridge), (scores, bridge_scores)) for k in a)
    if gap > 1e-4:
        raise SystemExit(f"the HookedTransformer and TransformerBridge runs differ by {gap:.1e}: check the source")
    tokens = [label.rsplit("_", 1)[0] for label in source["x_labels_first_prompt"]]
    data = {
        "what": "GPT-2 small, IOI activation patching on the 8 classic prompts (pairs swapped), "
                "normalised logit difference (patched - corrupted) / (clean - corrupted)",
        "source_repo": source["source_repo"],
        "source_path": source["source_path"],
        "commit": source["commit"],
        "model_loading": source["model_loading"],
        "written_by": "tools/published_gpt2_small.py (values rounded to 4 decimals)",
        "checked_against": f"{check['source_path']} at commit {check['commit']} ({check['model_loading']}): "
                           f"largest difference {gap:.1e}",
        "tokens_first_prompt": tokens,
        "s2_pos": 10,
        "end_pos": 14,
        "clean_logit_diff": source["clean_average_logit_diff_printed"],
        "corrupted_logit_diff": source["corrupted_average_logit_diff_printed"],
        "maps": {
            component: {"title": MAPS[component], "rows": "layer",
                        "cols": "head" if component == "head_out" else "position",
                        "values": np.round(values, 4).tolist()}
            for component, values in maps.items()
        },
        "head_scores": {
            name: {"title": SCORES[name], "rows": "layer", "cols": "head", "values": np.round(values, 4).tolist()}
            for name, values in scores.items()
        },
    }
    OUT.parent.mkdir(exist_ok=True)
    text = json.dumps(data, indent=1)
    # one line per row of numbers (and for the token list), so that the file reads as tables
    text = re.sub(r"\[\s+([^\[\]{}]*?)\s+\]", lambda m: "[" + re.sub(r"\s*\n\s*", " ", m.group(1)) + "]", text)
    OUT.write_text(text + "\n", encoding="utf-8")
    print(f"wrote {OUT} (TransformerBridge re-run agrees to {gap:.1e})")


if __name__ == "__main__":
    main()
