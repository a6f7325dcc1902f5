"""patchlab.check (the grader's diagnosis of known mistakes): each mistake is recognised, and only that one (synthetic tensors, fast)."""

from __future__ import annotations

import pytest
import torch

from patchlab.check import (MESSAGES, close, diagnose, grid_mistakes, matches, mismatch_message,
                                 off_by_one)

ATOL = RTOL = 1e-4
AXES = {0: "off_by_one_layer", 1: "off_by_one_position"}


@pytest.fixture
def grid() -> torch.Tensor:
    """A [layer, position] grid shaped like a patching result: S2 early, END late, a switch between."""
    g = torch.zeros(4, 7)
    g[:, 4] = torch.tensor([1.0, 0.8, 0.3, 0.05])  # S2
    g[:, 6] = torch.tensor([0.0, 0.15, 0.6, 0.93])  # END
    g[2, 5] = -0.07
    return g


def grid_diagnosis(learner: torch.Tensor, reference: torch.Tensor, alternatives=()):
    clean, corrupted = 3.2, -1.1
    return diagnose(learner, reference, [*grid_mistakes(reference, clean, corrupted), *alternatives],
                    off_by_one_axes=AXES, axis_names=("layer", "position"), atol=ATOL, rtol=RTOL)


def test_a_right_result_has_no_diagnosis(grid):
    assert grid_diagnosis(grid.clone() + 1e-6, grid) is None


def test_transposed(grid):
    assert grid_diagnosis(grid.T.contiguous(), grid).name == "transposed"


def test_sign_flipped(grid):
    assert grid_diagnosis(-grid, grid).name == "sign_flipped"


def test_not_normalised_is_the_raw_logit_difference(grid):
    clean, corrupted = 3.2, -1.1
    raw = corrupted + grid * (clean - corrupted)  # what the metric undoes
    assert grid_diagnosis(raw, grid).name == "unnormalised"


def test_normalised_backwards(grid):
    clean, corrupted = 3.2, -1.1
    raw = corrupted + grid * (clean - corrupted)
    backwards = (clean - raw) / (clean - corrupted)
    assert grid_diagnosis(backwards, grid).name == "normalised_backwards"


@pytest.mark.parametrize("name", ["wrong_direction", "resid_mid", "resid_post"])
def test_computed_alternatives_are_matched_by_name(grid, name):
    other = torch.rand(4, 7, generator=torch.Generator().manual_seed(1))
    alternatives = [(n, (lambda o=other: o) if n == name else torch.full((4, 7), 9.0))
                    for n in ("wrong_direction", "resid_mid", "resid_post")]
    assert grid_diagnosis(other, grid, alternatives).name == name


def test_two_mistakes_with_the_same_numbers_are_both_named(grid):
    same = torch.rand(4, 7, generator=torch.Generator().manual_seed(2))
    found = grid_diagnosis(same, grid, [("resid_mid", same), ("resid_post", same.clone())])
    assert found.name == "resid_mid+resid_post"
    assert MESSAGES["resid_mid"] in found.message and MESSAGES["resid_post"] in found.message


def test_alternatives_are_computed_only_when_needed(grid):
    def never() -> torch.Tensor:
        raise AssertionError("computed although the result was right")

    assert diagnose(grid, grid, [("wrong_direction", never)]) is None


@pytest.mark.parametrize("axis, name", [(0, "off_by_one_layer"), (1, "off_by_one_position")])
def test_a_loop_one_step_short(grid, axis, name):
    short = grid.clone()
    short.select(axis, grid.shape[axis] - 1).zero_()  # the last layer / position never filled in
    assert grid_diagnosis(short, grid).name == name


@pytest.mark.parametrize("axis, name", [(0, "off_by_one_layer"), (1, "off_by_one_position")])
@pytest.mark.parametrize("step", [1, -1])
def test_results_shifted_by_one(grid, axis, name, step):
    shifted = torch.roll(grid, step, dims=axis)
    assert grid_diagnosis(shifted, grid).name == name


def test_off_by_one_needs_a_real_shift(grid):
    assert not off_by_one(grid, grid, 0, ATOL, RTOL)
    assert not off_by_one(torch.rand(4, 7), grid, 1, ATOL, RTOL)
    assert not off_by_one(grid[:, :3], grid, 1, ATOL, RTOL)


def test_per_prompt_mistakes():
    reference = torch.tensor([2.5, 1.0, 3.25, -0.5])
    candidates = [("sign_flipped", -reference), ("reduced_too_early", reference.mean()),
                  ("single_prompt", reference[0])]
    assert diagnose(-reference, reference, candidates).name == "sign_flipped"
    assert diagnose(reference.mean(), reference, candidates).name == "reduced_too_early"
    assert diagnose(reference[0], reference, candidates).name == "single_prompt"


def test_unknown_mistake_says_where_without_giving_the_values(grid):
    wrong = grid.clone()
    wrong[2, 5] = 0.5
    found = grid_diagnosis(wrong, grid)
    assert found.name == "mismatch"
    assert "layer 2; position 5" in found.message and "1 of 28" in found.message
    assert "0.93" not in found.message


def test_mismatch_messages_for_shape_nan_and_scalars(grid):
    assert "expected (4, 7) [layer, position], got (3,)" in mismatch_message(torch.zeros(3), grid,
                                                                             ("layer", "position"))
    assert "NaN" in mismatch_message(torch.full((4, 7), float("nan")), grid)
    assert "off by 0.5" in mismatch_message(torch.tensor(1.5), torch.tensor(1.0))


def test_close_and_matches():
    a = torch.tensor([1.0, 2.0])
    assert close(a, a + 5e-5, 1e-4, 0) and not close(a, a + 1e-3, 1e-4, 0)
    assert not close(a, a.reshape(2, 1), 1, 1)
    assert not close(torch.tensor(float("nan")), torch.tensor(float("nan")), 1, 1)
    assert matches(a, [("x", a + 1), ("y", lambda: a), ("z", a.clone())], 1e-6, 0) == ["y", "z"]


def test_every_message_names_a_fix():
    for name, message in MESSAGES.items():
        assert len(message) > 40 and message.endswith("."), name
