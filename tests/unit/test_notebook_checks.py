"""The exercise notebooks' local checks: on the notebook's own prompts, a right result passes and a
wrong one gets the grader's diagnosis (``patchlab.check``). The learner's results come from loops
written here, as a learner writes them, not from the library's patching."""

from __future__ import annotations

import pytest
import torch

from patchlab.check import MESSAGES, residual_patching_problem
from patchlab.metrics import logit_diff, patching_metric


def learner_loop(model, data, metric, hook: str) -> torch.Tensor:
    """A residual-patching loop patching ``hook`` (formatted with the layer) position by position."""
    _, clean_cache = model.run_with_cache(data.clean_tokens)
    results = torch.zeros(model.cfg.n_layers, data.clean_tokens.shape[1])
    for layer in range(model.cfg.n_layers):
        name = hook.format(layer=layer)
        for position in range(data.clean_tokens.shape[1]):
            def patch(activation, hook, position=position, name=name):
                activation[:, position] = clean_cache[name][:, position]
                return activation
            results[layer, position] = metric(model.run_with_hooks(data.corrupted_tokens, fwd_hooks=[(name, patch)]))
    return results


@pytest.mark.slow
def test_residual_patching_check_passes_the_right_loop_and_names_the_mistakes(model, classic, classic_run) -> None:
    clean_logits, _, corrupted_logits, _ = classic_run
    metric = patching_metric(classic.answer_tokens, logit_diff(clean_logits, classic.answer_tokens).item(),
                             logit_diff(corrupted_logits, classic.answer_tokens).item())
    check = lambda results: residual_patching_problem(  # noqa: E731
        results, model, classic.clean_tokens, classic.corrupted_tokens, metric)
    with torch.no_grad():
        right = learner_loop(model, classic, metric, "blocks.{layer}.hook_resid_pre")
        assert check(right) is None
        always_first = learner_loop(model, classic, metric, "blocks.0.hook_resid_pre")  # the loop
        problem = check(always_first)
        assert problem is not None and problem.startswith("Wrong values at layers"), problem
        assert MESSAGES["resid_post"] in check(learner_loop(model, classic, metric, "blocks.{layer}.hook_resid_post"))
        assert check(right.T) == MESSAGES["transposed"]
        assert check(-right) == MESSAGES["sign_flipped"]
        shifted = right.clone()
        shifted[:, -1] = 0  # a loop one position short
        assert check(shifted) == MESSAGES["off_by_one_position"]
