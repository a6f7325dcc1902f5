"""Is it the circuit? Faithfulness, completeness and minimality of a set of heads (Wang et al. 2022).

A *circuit* here is a set of attention heads. ``F(H)`` is the mean logit difference of the model in
which every head **outside** ``H`` is mean-ablated over a reference distribution (the ABC prompts;
MLPs and embeddings are left alone, as in Wang et al.): ``F(M)`` the whole model (nothing ablated),
``F(C)`` the circuit. In their terms, for a circuit ``C`` of the model ``M``:

- **faithfulness**: ``F(C)`` close to ``F(M)``; reported here as the fraction ``F(C) / F(M)``;
- **completeness**: for every subset ``K`` of ``C``, ``F(C \\ K)`` close to ``F(M \\ K)`` (removing
  the same heads hurts circuit and model alike; a missing head shows up as a gap);
- **minimality**: every head ``v`` of ``C`` matters in some context: for some ``K ⊆ C \\ {v}``,
  ``|F(C \\ (K ∪ {v})) - F(C \\ K)|`` is large.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from patchlab.ablation import Head, all_heads, run_ablated
from patchlab.metrics import logit_diff

if TYPE_CHECKING:
    from patchlab.types import Model


def outside(model: Model, kept: Iterable[Head]) -> list[Head]:
    """Every head of ``model`` that is not in ``kept``."""
    kept = {(int(layer), int(head)) for layer, head in kept}
    return [lh for lh in all_heads(model) if lh not in kept]


@torch.no_grad()
def score(
    model: Model,
    tokens: Int[Tensor, "batch pos"],
    answer_tokens: Int[Tensor, "batch 2"],
    means: Float[Tensor, "layer pos head d_head"],
    kept: Iterable[Head],
) -> float:
    """``F(kept)``: the mean logit difference with every head outside ``kept`` mean-ablated."""
    logits = run_ablated(model, tokens, outside(model, kept), means)
    return logit_diff(logits, answer_tokens).item()


@dataclass
class Faithfulness:
    """``F(M)``, ``F(C)`` and ``F(∅)`` (every head ablated) for one circuit."""

    model_score: float
    circuit_score: float
    empty_score: float

    @property
    def fraction(self) -> float:
        """``F(C) / F(M)``: the share of the model's logit difference the circuit keeps."""
        return self.circuit_score / self.model_score

    @property
    def normalised(self) -> float:
        """``(F(C) - F(∅)) / (F(M) - F(∅))``: the share of what the heads add that the circuit keeps."""
        return (self.circuit_score - self.empty_score) / (self.model_score - self.empty_score)


def faithfulness(
    model: Model,
    tokens: Int[Tensor, "batch pos"],
    answer_tokens: Int[Tensor, "batch 2"],
    means: Float[Tensor, "layer pos head d_head"],
    circuit: Sequence[Head],
) -> Faithfulness:
    """``F(M)``, ``F(C)`` and ``F(∅)`` of ``circuit`` (three forward passes)."""
    return Faithfulness(
        model_score=score(model, tokens, answer_tokens, means, all_heads(model)),
        circuit_score=score(model, tokens, answer_tokens, means, circuit),
        empty_score=score(model, tokens, answer_tokens, means, []),
    )


def completeness(
    model: Model,
    tokens: Int[Tensor, "batch pos"],
    answer_tokens: Int[Tensor, "batch 2"],
    means: Float[Tensor, "layer pos head d_head"],
    circuit: Sequence[Head],
    removed: Sequence[Sequence[Head]],
) -> list[tuple[float, float]]:
    """For each set ``K`` of ``removed`` (subsets of ``circuit``), ``(F(C \\ K), F(M \\ K))``; their gap
    ``|F(C \\ K) - F(M \\ K)|`` is Wang et al.'s incompleteness score for ``K``."""
    rows = []
    for given in removed:
        k = {(int(layer), int(head)) for layer, head in given}
        if not k <= set(circuit):
            raise ValueError(f"K = {sorted(k)} is not a subset of the circuit")
        rows.append(
            (
                score(model, tokens, answer_tokens, means, [lh for lh in circuit if lh not in k]),
                score(model, tokens, answer_tokens, means, [lh for lh in all_heads(model) if lh not in k]),
            )
        )
    return rows


def minimality(
    model: Model,
    tokens: Int[Tensor, "batch pos"],
    answer_tokens: Int[Tensor, "batch 2"],
    means: Float[Tensor, "layer pos head d_head"],
    circuit: Sequence[Head],
    contexts: Sequence[Sequence[Head]] | None = None,
) -> dict[Head, tuple[float, tuple[Head, ...]]]:
    """Per head ``v`` of ``circuit``, the largest ``|F(C \\ (K ∪ {v})) - F(C \\ K)|`` over the sets ``K``
    of ``contexts`` (default: the empty set and each other single head of the circuit), and that ``K``.
    A head whose score stays near 0 in every context is a candidate to drop from the circuit."""
    circuit = [(int(layer), int(head)) for layer, head in circuit]
    contexts = [()] + [(lh,) for lh in circuit] if contexts is None else contexts
    cached: dict[frozenset, float] = {}

    def f(removed: Iterable[Head]) -> float:
        key = frozenset(removed)
        if key not in cached:
            cached[key] = score(model, tokens, answer_tokens, means, [lh for lh in circuit if lh not in key])
        return cached[key]

    result = {}
    for v in circuit:
        best: tuple[float, tuple[Head, ...]] = (-1.0, ())
        for context in contexts:
            k = tuple((int(layer), int(head)) for layer, head in context)
            if v in k:
                continue
            gap = abs(f((*k, v)) - f(k))
            if gap > best[0]:
                best = (gap, k)
        result[v] = best
    return result
