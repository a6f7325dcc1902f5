"""Assignment ``choosing_corruption``: Gaussian noise for the token embeddings, at causal tracing's scale.

The learner's ``embedding_noise(model, tokens, positions, factor, standard_normal)`` scales the given
standard-normal draws (``[batch, pos, d_model]``) by ``factor`` times the standard deviation of the
entries of ``W_E`` at ``positions`` and leaves zeros elsewhere; the draws are given, so a right answer
equals the reference exactly. It is called on each prompt set with the noise at S2 (factor 3, causal
tracing's) and at S2 and END (factor 2).
"""

from __future__ import annotations

import torch
from torch import Tensor

from patchlab.check import ATOL_ACTIVATION

from ._check import Check, Expected, Key
from ._inputs import PromptSet
from ._judge import References

# Where the noise goes in each case (its name in the case key) and with which factor.
NOISED = {"S2": 3.0, "S2,END": 2.0}

MESSAGES = {
    "noise_every_position": (
        "Noise at every position: only the positions in `positions` are corrupted, the others keep their "
        "embeddings (zero noise). Start from zeros and fill in noise[:, positions] only."
    ),
    "noise_without_factor": (
        "The factor is missing: your noise has the standard deviation of W_E itself. Causal tracing's "
        "noise is `factor` times that (3 in Meng et al.): multiply by factor too."
    ),
    "noise_std_of_prompt": (
        "Scaled by the standard deviation of this prompt's embeddings: the scale is a property of the "
        "model, the standard deviation of every entry of W_E (model.W_E.std(), over the whole "
        "vocabulary), the same for every prompt."
    ),
    "noise_std_per_dimension": (
        "A standard deviation per d_model dimension (W_E.std(dim=0)): the scale is one number, the "
        "standard deviation of all the entries of W_E together, model.W_E.std()."
    ),
    "noise_variance": ("Scaled by the variance of W_E, not its standard deviation: use model.W_E.std()."),
    "noise_added_to_embeddings": (
        "You returned the noised embeddings: return the noise alone (zeros where nothing is noised); the "
        "hook adds it to the embeddings."
    ),
}


def _positions(ps: PromptSet, key: Key) -> list[int]:
    where = {"S2": ps.data.s2_pos, "END": ps.data.end_pos}
    return [where[name] for name in key["positions"].split(",")]


def standard_normal(ps: PromptSet, key: Key) -> Tensor:
    """The draws of one case, ``[batch, pos, d_model]``: the same on both sides of the sandbox."""
    generator = torch.Generator().manual_seed(1000 * key["set"] + list(NOISED).index(key["positions"]))
    return torch.randn(*ps.data.clean_tokens.shape, ps.model.cfg.d_model, generator=generator)


def _w_e(ps: PromptSet) -> Tensor:
    return ps.model.W_E.detach().float().cpu()


def _arguments(ps: PromptSet, key: Key) -> tuple[tuple, dict]:
    return (
        ps.model,
        ps.data.clean_tokens.clone(),
        _positions(ps, key),
        key["factor"],
        standard_normal(ps, key).to(ps.model.cfg.device),
    ), {}


def _expected(refs: References, key: Key) -> Expected:
    ps = refs.prompt_set(key)
    draws, w_e, factor = standard_normal(ps, key), _w_e(ps), key["factor"]
    positions = _positions(ps, key)

    def at_positions(scale: Tensor | float) -> Tensor:
        noise = torch.zeros_like(draws)
        noise[:, positions] = draws[:, positions] * scale
        return noise

    reference = at_positions(factor * w_e.std())
    embeddings = w_e[ps.data.clean_tokens.cpu()]
    return (
        reference,
        [
            ("noise_every_position", draws * factor * w_e.std()),
            ("noise_without_factor", at_positions(w_e.std())),
            ("noise_std_of_prompt", at_positions(factor * embeddings.std())),
            ("noise_std_of_prompt", at_positions(factor * embeddings[:, positions].std())),
            ("noise_std_per_dimension", at_positions(factor * w_e.std(dim=0))),
            ("noise_variance", at_positions(factor * w_e.var())),
            ("noise_added_to_embeddings", embeddings + reference),
        ],
        {"atol": ATOL_ACTIVATION, "axis_names": ("prompt", "position", "d_model")},
    )


embedding_noise = Check(
    name="check_embedding_noise",
    returns="the noise, a tensor of shape [batch, pos, d_model]",
    variants=lambda ps, model_index, set_index: [{"positions": p, "factor": f} for p, f in NOISED.items()],
    arguments=_arguments,
    expected=_expected,
    messages=MESSAGES,
)
