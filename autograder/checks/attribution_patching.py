"""Assignment ``attribution_patching``: attribution patching of the residual stream and of head outputs.

Each is called once per prompt set, as the patching loops are (one forward and one backward pass of
the corrupted run each, plus the clean run's cache). The learner's function runs with gradients off,
as every call of a graded case: it must switch them on itself.
"""

from __future__ import annotations

from typing import Callable

from torch import Tensor

from patchlab.check import ATOL_METRIC
from patchlab.patching import attribution_patching, fast_patching
from patchlab.patching.attribution import attribution_terms

from ._check import Candidate, Check, Expected, Key
from ._judge import References
from .residual_patching import loop_arguments


def attribution(refs: References, key: Key, component: str, variant: str = "reference") -> Tensor:
    """Attribution patching of ``resid_pre`` or ``head_out`` on a prompt set, or what a known mistake
    gives: ``grad_at_clean`` (the expansion around the clean run's gradient), ``terms`` (the
    per-entry terms summed over the batch only: ``[n_layers, *activation axes]``) or ``exact``."""
    ps = refs.prompt_set(key)
    model, metric = ps.model, ps.metric

    def compute() -> Tensor:
        if variant == "reference":
            return attribution_patching(
                model, ps.data.corrupted_tokens, ps.clean_cache, metric, component, progress=False
            )
        if variant == "grad_at_clean":  # metric(corrupted) + (clean - corrupted) · gradient at the clean run
            from_clean = attribution_patching(
                model, ps.data.clean_tokens, ps.corrupted_cache, metric, component, progress=False
            )  # metric(clean) - that term
            return metric(ps.corrupted_logits) + metric(ps.clean_logits) - from_clean
        if variant == "terms":
            value, terms = attribution_terms(model, ps.data.corrupted_tokens, ps.clean_cache, metric, component)
            return value + terms.sum(dim=1)
        if variant == "exact":
            return fast_patching(model, ps.data.corrupted_tokens, ps.clean_cache, metric, component, progress=False)
        raise ValueError(variant)

    return refs.cached((key["model"], key["set"], "attribution", component, variant), compute)


def _shared(
    refs: References, key: Key, component: str
) -> tuple[Tensor, float, Callable[[], Tensor], list[tuple[str, Candidate]]]:
    """The reference, the corrupted run's metric (where the expansion starts), the per-entry terms
    (``[layer, pos, d_model]`` / ``[layer, pos, head, d_head]``, when needed) and the mistakes both
    components share."""
    ps = refs.prompt_set(key)
    reference = attribution(refs, key, component)
    start = ps.metric(ps.corrupted_logits).item()
    n_prompts = ps.data.clean_tokens.shape[0]
    return (
        reference,
        start,
        lambda: attribution(refs, key, component, "terms"),
        [
            ("attribution_backwards", 2 * start - reference),
            ("attribution_grad_at_clean", lambda: attribution(refs, key, component, "grad_at_clean")),
            # the same, started from the clean run's metric instead of the corrupted run's
            (
                "attribution_grad_at_clean",
                lambda: attribution(refs, key, component, "grad_at_clean") + ps.metric(ps.clean_logits).item() - start,
            ),
            ("attribution_batch_mean", start + (reference - start) / n_prompts),
            ("attribution_exact", lambda: attribution(refs, key, component, "exact")),
        ],
    )


def _expected_resid(refs: References, key: Key) -> Expected:
    reference, _, terms, mistakes = _shared(refs, key, "resid_pre")
    return (
        reference,
        [("transposed", reference.T), *mistakes, ("attribution_not_summed_d_model", terms)],
        {"axis_names": ("layer", "position"), "atol": ATOL_METRIC},
    )


def _expected_heads(refs: References, key: Key) -> Expected:
    reference, start, terms, mistakes = _shared(refs, key, "head_out")
    return (
        reference,
        [
            ("head_transposed", reference.T),
            *mistakes,
            ("attribution_not_summed_positions", lambda: start + (terms() - start).sum(dim=3)),
            ("attribution_not_summed_d_head", lambda: start + (terms() - start).sum(dim=1)),
        ],
        {"axis_names": ("layer", "head"), "atol": ATOL_METRIC},
    )


attribution_resid = Check(
    name="check_attribution_resid",
    returns="a tensor of shape [n_layers, n_positions]",
    arguments=loop_arguments,
    expected=_expected_resid,
)

attribution_heads = Check(
    name="check_attribution_heads",
    returns="a tensor of shape [n_layers, n_heads]",
    arguments=loop_arguments,
    expected=_expected_heads,
)
