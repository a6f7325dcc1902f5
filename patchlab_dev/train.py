"""Train the course model ``ioi-mini`` and write its weights, tokenizer and model card.

    python -m patchlab_dev.train [--out patchlab/course_model] [--steps 2500]

A GPT-2-architecture transformer (4 layers, d_model 128, 4 heads) with a word-level tokenizer,
trained on CPU with a fixed seed on IOI prompts from the 15 BABA templates of Wang et al., their
ABBA mirrors and the two templates of the TransformerLens demo prompts. The loss is the
cross-entropy of the answer (the IO name) at the final position, plus three shaping terms: the
next-token loss on the rest of the prompt (it teaches name copying early), the answer loss read from
the residual stream entering the last block, and a penalty on the last block's attention from the
final position to S2 and the tokens after it. Without the last two a model trained on IOI alone
fetches S2's information again in its last block, so that its patching heatmap, unlike GPT-2
small's, never shows the information arriving at the final position.
"""

from __future__ import annotations

import argparse
import json
import math
import time
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from patchlab import ioi
from patchlab.models import COURSE_MODEL_DIR

if TYPE_CHECKING:
    from patchlab.types import Model

SEED = 0
N_LAYERS, D_MODEL, N_HEADS, N_CTX = 4, 128, 4, 32
BOS = "<|endoftext|>"
UNK = "<|unk|>"


def is_heldout(prompt: ioi.IOIPrompt) -> bool:
    """One prompt text in ten (by checksum) never appears in training; evaluation draws from these."""
    return zlib.crc32(prompt.text.encode()) % 10 == 0


def training_prompt_ok(prompt: ioi.IOIPrompt, classic_texts: set[str]) -> bool:
    return not is_heldout(prompt) and prompt.text not in classic_texts


def heldout_prompts(n: int, seed: int = 1234) -> list[ioi.IOIPrompt]:
    """``n`` distinct IOI prompts that the course model never saw in training."""
    out: dict[str, ioi.IOIPrompt] = {}
    batch_seed = seed
    while len(out) < n:
        for p in ioi.sample_prompts(4 * n, batch_seed):
            if is_heldout(p) and len(out) < n:
                out.setdefault(p.text, p)
        batch_seed += 1
    return list(out.values())


def build_tokenizer(out_dir: Path):
    """A GPT-2-style word-level tokenizer over every word the IOI templates can produce."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    pre = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    texts = [t.replace("[A]", "x").replace("[B]", "x") for t in ioi.TEMPLATES]
    texts += [p.text for p in ioi.classic_prompts()]
    texts += [" " + w for w in ioi.NAMES + ioi.PLACES + ioi.OBJECTS + ioi.VOWEL_OBJECTS]
    words = {w for text in texts for w, _ in pre.pre_tokenize_str(text)} - {"Ġx", "x"}
    vocab = {BOS: 0, UNK: 1} | {w: i + 2 for i, w in enumerate(sorted(words))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=BOS,
        unk_token=UNK,
        pad_token=BOS,
        model_max_length=N_CTX,
    )
    fast.save_pretrained(out_dir)
    return AutoTokenizer.from_pretrained(out_dir)  # reloaded: the bridge needs a saved tokenizer


def _batch(tokenizer, prompts: list[ioi.IOIPrompt]) -> tuple[torch.Tensor, ...]:
    """Token ids (right-padded), final position, S2 position and answer id of each prompt."""
    enc = tokenizer([BOS + p.text for p in prompts], padding=True, return_tensors="pt")
    tokens = enc["input_ids"]
    last = enc["attention_mask"].sum(1) - 1
    answers = torch.tensor([tokenizer.convert_tokens_to_ids("Ġ" + p.io.strip()) for p in prompts])
    s_ids = torch.tensor([tokenizer.convert_tokens_to_ids("Ġ" + p.s.strip()) for p in prompts])
    s2 = torch.stack([(row == s).nonzero().max() for row, s in zip(tokens, s_ids)])
    return tokens, last, s2, answers


def train(
    out_dir: Path,
    steps: int,
    batch_size: int = 64,
    lr: float = 3e-3,
    aux_weight: float = 1.0,
    lm_weight: float = 1.0,
    attn_weight: float = 1.0,
    threads: int = 2,
) -> dict:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(SEED)
    torch.set_num_threads(threads)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(out_dir)
    config = GPT2Config(  # type: ignore[call-arg]  # attn_implementation is a PretrainedConfig keyword
        vocab_size=len(tokenizer),
        n_positions=N_CTX,
        n_embd=D_MODEL,
        n_layer=N_LAYERS,
        n_head=N_HEADS,
        bos_token_id=0,
        eos_token_id=0,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        attn_implementation="eager",
    )
    model = GPT2LMHeadModel(config)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 100) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    classic = {p.text for p in ioi.classic_prompts()}
    stream = (
        p for seed in range(10**9) for p in ioi.sample_prompts(4096, seed + 1_000_000) if training_prompt_ok(p, classic)
    )
    start = time.time()
    bar = tqdm(range(steps), desc="training ioi-mini")
    for step in bar:
        tokens, last, s2, answers = _batch(tokenizer, [next(stream) for _ in range(batch_size)])
        out = model(tokens, output_hidden_states=True, output_attentions=True)
        rows = torch.arange(len(tokens))
        loss = F.cross_entropy(out.logits[rows, last], answers)
        # The residual stream entering the last block, read through the final LayerNorm and unembed.
        pre_last = out.hidden_states[N_LAYERS - 1][rows, last]
        aux = F.cross_entropy(model.lm_head(model.transformer.ln_f(pre_last)), answers)
        # The last block's attention from the final position to S2 and the tokens after it (which
        # carry S2's information): penalised, so the last block does not fetch S2 again.
        keys = torch.arange(tokens.shape[1])
        late = (keys >= s2[:, None]) & (keys < last[:, None])
        attn = out.attentions[-1][rows, :, last]  # [batch, head, key]
        attn_late = (attn * late[:, None]).sum(-1).mean()
        # Next-token loss on the rest of the prompt: copying names there trains the same attention.
        inside = torch.arange(tokens.shape[1] - 1) < last[:, None]
        lm = F.cross_entropy(out.logits[:, :-1][inside], tokens[:, 1:][inside])
        opt.zero_grad()
        # The shaping terms come in gradually: first the model learns IOI, then it moves the work.
        ramp = min(1.0, step / (steps / 4))
        (loss + lm_weight * lm + ramp * (aux_weight * aux + attn_weight * attn_late)).backward()
        opt.step()
        sched.step()
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}", aux=f"{aux.item():.3f}", attn=f"{attn_late.item():.3f}")
    model.eval()
    model.save_pretrained(out_dir)
    return {
        "steps": steps,
        "batch_size": batch_size,
        "learning_rate": lr,
        "aux_weight": aux_weight,
        "lm_weight": lm_weight,
        "attn_weight": attn_weight,
        "threads": threads,
        "seed": SEED,
        "training_seconds": round(time.time() - start, 1),
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tokenizer),
        "torch": torch.__version__,
    }


def evaluate(model: Model, n_heldout: int = 1000) -> dict:
    """The model card's figures: held-out IOI accuracy, the classic prompts, the patching heatmap."""
    from patchlab.metrics import logit_diff
    from patchlab.patching import patch_ioi

    by_template: dict[str, list[ioi.IOIPrompt]] = {}
    for p in heldout_prompts(n_heldout):
        by_template.setdefault(p.template, []).append(p)
    diffs = []
    with torch.no_grad():
        for group in by_template.values():
            data = ioi.make_ioi_data(model, group)
            diffs.append(logit_diff(model(data.clean_tokens), data.answer_tokens, per_prompt=True))
    heldout = torch.cat(diffs)
    classic = ioi.classic_ioi(model)
    with torch.no_grad():
        clean_per_prompt = logit_diff(model(classic.clean_tokens), classic.answer_tokens, per_prompt=True)
    result = patch_ioi(model, classic, "resid_pre", method="reference", progress=False)
    heat, clean_ld, corrupted_ld = result.values, result.clean_logit_diff, result.corrupted_logit_diff
    last, s2, end = model.cfg.n_layers - 1, classic.s2_pos, classic.end_pos
    return {
        "heldout_prompts": len(heldout),
        "heldout_accuracy": round((heldout > 0).float().mean().item(), 4),
        "heldout_mean_logit_diff": round(heldout.mean().item(), 3),
        "classic_logit_diffs": [round(x, 3) for x in clean_per_prompt.tolist()],
        "classic_clean_logit_diff": round(clean_ld, 3),
        "classic_corrupted_logit_diff": round(corrupted_ld, 3),
        "resid_pre_layer0_s2": round(heat[0, s2].item(), 3),
        "resid_pre_last_layer_s2": round(heat[last, s2].item(), 3),
        "resid_pre_last_layer_end": round(heat[last, end].item(), 3),
        "resid_pre_max_abs_before_s2": heat[:, :s2].abs().max().item(),
        "resid_pre_heatmap": [[round(v, 3) for v in row] for row in heat.tolist()],
    }


def write_card(out_dir: Path, info: dict, evaluation: dict) -> None:
    """Write ``evaluation.json`` and ``MODEL_CARD.md`` from measured figures."""
    (out_dir / "evaluation.json").write_text(json.dumps(evaluation, indent=1) + "\n")
    rows = "\n".join(f"| {k} | {v} |" for k, v in evaluation.items() if k != "resid_pre_heatmap")
    heat = "\n".join(
        f"| {i} | " + " | ".join(f"{v:.2f}" for v in row) + " |"
        for i, row in enumerate(evaluation["resid_pre_heatmap"])
    )
    n_pos = len(evaluation["resid_pre_heatmap"][0])
    (out_dir / "MODEL_CARD.md").write_text(
        f"""# ioi-mini, the course model

A GPT-2-architecture transformer trained only on IOI prompts, so that the activation patching course
runs offline and grades in seconds. It is **not** a language model: it knows the IOI templates' words
and nothing else. Readers online use GPT-2 small; this model stands in for it in tests, CI and the
offline build.

## Model
- Architecture: GPT-2 (`GPT2LMHeadModel`), {N_LAYERS} layers, d_model {D_MODEL}, {N_HEADS} heads,
  context {N_CTX}, tied embeddings, {info["n_parameters"]:,} parameters.
- Tokenizer: word-level over GPT-2-style pieces (leading space kept, punctuation split), vocabulary
  {info["vocab_size"]}, BOS `<|endoftext|>`. The classic prompts tokenize to GPT-2's positions
  (15 tokens with BOS, S2 at 10, the final " to" at 14).

## Data
IOI prompts from the 15 BABA templates of Wang et al. (2022), their ABBA mirrors and the two shapes
of the TransformerLens demo prompts (`patchlab.ioi.TEMPLATES`), {len(ioi.NAMES)} names,
{len(ioi.PLACES)} places, {len(ioi.OBJECTS) + len(ioi.VOWEL_OBJECTS)} objects. One prompt text in ten
(by CRC32 checksum, `patchlab_dev.train.is_heldout`) and the 8 classic prompts are never trained on;
the held-out evaluation draws only from those.

## Training
`python -m patchlab_dev.train`: seed {info["seed"]}, {info["steps"]} steps of batch {info["batch_size"]},
AdamW (lr {info["learning_rate"]}, cosine schedule), CPU ({info["threads"]} thread(s)), {info["training_seconds"]} s
(torch {info["torch"]}); run again with the same torch and thread count, it gave these weights bit for bit. Loss: cross-entropy of the IO name at the final position, plus
- the next-token loss on the rest of the prompt (weight {info["lm_weight"]}), which teaches copying names;
- the answer loss read through the final LayerNorm and unembedding from the residual stream
  entering the last block (weight {info["aux_weight"]});
- the mean attention of the last block's heads from the final position to S2 and the tokens after it
  (weight {info["attn_weight"]}).
The last two, ramped in linearly over the first quarter of training, make the answer reach the final position before the last block, as in GPT-2 small (where
it arrives around layers 8-9 of 12); trained on IOI alone without them, the model reads S2 again in
its last block and its heatmap never shows the move.

## Evaluation (computed by `evaluate` in `patchlab_dev/train.py`, checked by `tests/unit/test_course_model.py`)
| figure | value |
|---|---|
{rows}

Residual-stream patching on the 8 classic prompts (rows: layer, columns: position 0..{n_pos - 1}),
normalised logit difference:

| layer | """
        + " | ".join(str(i) for i in range(n_pos))
        + """ |
|---|"""
        + "---|" * n_pos
        + f"""
{heat}
"""
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=COURSE_MODEL_DIR)
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--aux-weight", type=float, default=1.0)
    parser.add_argument("--lm-weight", type=float, default=1.0)
    parser.add_argument("--attn-weight", type=float, default=1.0)
    parser.add_argument(
        "--threads", type=int, default=1, help="CPU threads (another count may change the weights slightly)"
    )
    parser.add_argument(
        "--card-only",
        action="store_true",
        help="keep the weights in --out; only re-evaluate and rewrite the model card",
    )
    args = parser.parse_args(argv)
    if args.card_only:
        info = json.loads((args.out / "training.json").read_text())
    else:
        info = train(
            args.out,
            args.steps,
            lr=args.lr,
            aux_weight=args.aux_weight,
            lm_weight=args.lm_weight,
            attn_weight=args.attn_weight,
            threads=args.threads,
        )
        (args.out / "training.json").write_text(json.dumps(info, indent=1) + "\n")
    from transformer_lens.model_bridge import TransformerBridge

    model = TransformerBridge.boot_transformers(str(args.out), device="cpu")
    model.enable_compatibility_mode(disable_warnings=True)
    evaluation = evaluate(model)
    write_card(args.out, info, evaluation)
    print(json.dumps({k: v for k, v in evaluation.items() if k != "resid_pre_heatmap"}, indent=1))


if __name__ == "__main__":
    main()
