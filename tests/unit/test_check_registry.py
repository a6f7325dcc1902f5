"""The registry of graded checks (``autograder.checks``), without bubblewrap: every registered check,
run in this process on the course model's two prompt sets, passes a right learner function and names
a known mistake of a wrong one; a check added as one new module is found and graded with no other
change; the sandbox's copy of the package imports on its own; and no code dispatches on check names."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from autograder import checks
from autograder.checks._check import messages
from patching_setups import SLOW_CHECKS  # tests/unit/patching_setups.py
from patchlab.corruptions import embedding_noise as library_noise
from patchlab.patching import attribution_patching, fast_path_patching, fast_patching
from patchlab.patching.components import patch_position
from patchlab.plots import heatmap, position_labels

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "checks"
MODELS = ["ioi-mini"]
pytestmark = pytest.mark.usefixtures("one_thread")


def verdict(check: checks.Check, fn, refs: checks.References, inside: checks.Models) -> str | None:
    """Record ``fn`` on every case as the learner's kernel does, and judge the records as the grader does."""
    records = [{"case": key, **checks.record(check, key, fn, inside)} for key in checks.cases(check, inside)]
    return checks._judge.judge(check, json.loads(json.dumps(records)), refs)


# --- a right and a wrong learner function for every check ------------------------------------------

def per_prompt(logits, answers):
    picked = logits[:, -1].gather(-1, answers)
    return picked[:, 0] - picked[:, 1]


def cached(model, tokens):
    return model.run_with_cache(tokens)[1]


def heads(component):
    return lambda model, clean, corrupted, metric, which=None: fast_patching(
        model, corrupted, cached(model, clean), metric, component if which is None else f"head_{which}", progress=False)


def paths(model, clean, corrupted, metric, receivers=None, receiver_input="q"):
    return fast_path_patching(model, corrupted, cached(model, clean), metric, receivers, receiver_input, progress=False)


def attribution(component):
    return lambda model, clean, corrupted, metric: attribution_patching(
        model, corrupted, cached(model, clean), metric, component, progress=False)


def head_hook(z, hook, head, position, clean_cache):
    z[:, position, head] = clean_cache[hook.name][:, position, head]
    return z


def top_heads(results, k):
    flat = results.abs().flatten().argsort(descending=True)[:k]
    return [(int(i) // results.shape[1], int(i) % results.shape[1]) for i in flat]


def noise(model, tokens, positions, factor, draws, scale=None):
    out = torch.zeros_like(draws)
    out[:, positions] = draws[:, positions] * (factor * model.W_E.std() if scale is None else scale)
    return out


def right_heatmap(results, tokens, s2, end):
    return heatmap(results, position_labels(tokens, s2, end), "title")


# name: (a right function, a wrong one, the mistake it must be told: a MESSAGES key or words of the message)
LEARNERS = {
    "check_logit_diff_per_prompt": (per_prompt, lambda lg, a: -per_prompt(lg, a), "sign_flipped"),
    "check_mean_logit_diff": (lambda lg, a: per_prompt(lg, a).mean(), lambda lg, a: per_prompt(lg, a).sum(),
                              "sum_not_mean"),
    "check_normalised_metric": (lambda lg, a, c, k: (per_prompt(lg, a).mean() - k) / (c - k),
                                lambda lg, a, c, k: per_prompt(lg, a).mean(), "unnormalised"),
    "check_patch_hook": (lambda r, hook, position, clean_cache: patch_position(r, clean_cache[hook.name], position),
                         lambda r, hook, position, clean_cache: clean_cache[hook.name].clone(),
                         "patched_all_positions"),
    "check_residual_patching": (heads("resid_pre"), lambda *args: heads("resid_pre")(*args).T, "transposed"),
    "check_heatmap": (right_heatmap, lambda *args: right_heatmap(*args).update_traces(zmid=None, zmin=-1, zmax=2),
                      "centre the colour scale"),
    "check_head_hook": (head_hook, lambda z, hook, head, position, clean_cache: z, "head_not_patched"),
    "check_head_by_pos": (heads("head_out_by_pos"), lambda *args: heads("head_out_by_pos")(*args).permute(0, 2, 1),
                          "head_transposed_by_pos"),
    "check_head_inputs": (heads(None), lambda *args: heads(None)(*args).T, "head_transposed"),
    "check_top_heads": (top_heads, lambda r, k: [(h, layer) for layer, h in top_heads(r, k)], "top_heads_swapped"),
    "check_attribution_resid": (attribution("resid_pre"), lambda *args: attribution("resid_pre")(*args).T,
                                "transposed"),
    "check_attribution_heads": (attribution("head_out"), lambda *args: attribution("head_out")(*args).T,
                                "head_transposed"),
    "check_path_to_logits": (paths, lambda *args: paths(*args).T, "head_transposed"),
    "check_path_to_receivers": (paths, lambda *args: paths(*args[:4]), "path_receivers_not_patched"),
    "check_embedding_noise": (noise, lambda m, t, p, f, d: noise(m, t, p, f, d, m.W_E.std()), "noise_without_factor"),
}


def test_every_registered_check_has_a_unit_test_here():
    assert sorted(LEARNERS) == sorted(checks.REGISTRY)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_CHECKS else n
                                  for n in sorted(LEARNERS)])
def test_check_passes_the_right_function_and_names_the_mistake(name, refs, inside):
    check = checks.REGISTRY[name]
    right, wrong, mistake = LEARNERS[name]
    assert verdict(check, right, refs, inside) is None
    message = verdict(check, wrong, refs, inside)
    assert message is not None and messages(check).get(mistake, mistake) in message, message


def test_embedding_noise_is_the_library_noise_and_names_its_mistakes(refs, inside):
    """The check's reference against patchlab.corruptions (an independent implementation, its own draws)."""
    ps = inside.prompt_sets("ioi-mini")[0]
    generator = torch.Generator().manual_seed(0)
    draws = torch.zeros(*ps.data.clean_tokens.shape, ps.model.cfg.d_model)
    draws[:, [ps.data.s2_pos]] = torch.randn(draws.shape[0], 1, draws.shape[2], generator=generator)
    expected = library_noise(ps.model, ps.data.clean_tokens, [ps.data.s2_pos], factor=3.0, seed=0).cpu()
    assert torch.allclose(noise(ps.model, ps.data.clean_tokens, [ps.data.s2_pos], 3.0, draws), expected, atol=1e-7)
    check = checks.REGISTRY["check_embedding_noise"]
    told = messages(check)
    wrongs = {
        "noise_every_position": lambda m, t, p, f, d: d * f * m.W_E.std(),
        "noise_std_of_prompt": lambda m, t, p, f, d: noise(m, t, p, f, d, f * m.W_E[t].std()),
        "noise_std_per_dimension": lambda m, t, p, f, d: noise(m, t, p, f, d, f * m.W_E.std(dim=0)),
        "noise_added_to_embeddings": lambda m, t, p, f, d: m.W_E[t] + noise(m, t, p, f, d),
    }
    for mistake, fn in wrongs.items():
        message = verdict(check, fn, refs, inside)
        assert message is not None and told[mistake] in message, (mistake, message)


# --- adding a check is one module ---------------------------------------------------------------------

def test_a_check_in_a_new_module_is_found_and_graded_with_no_other_change(monkeypatch, refs, inside):
    registry = checks.discover([checks.HERE, FIXTURES])
    assert set(registry) - set(checks.REGISTRY) == {"check_answer_probability"}
    monkeypatch.setattr(checks, "REGISTRY", registry)
    from patchlab.grading import check_answer_probability  # how a hidden test reaches it

    assert check_answer_probability.__name__ == "check_answer_probability"
    check = registry["check_answer_probability"]
    fixture = sys.modules[f"{checks.__name__}.answer_probability"]
    right = lambda lg, a: (fixture.probabilities(lg, a)[:, 0] - fixture.probabilities(lg, a)[:, 1]).mean()  # noqa: E731
    assert verdict(check, right, refs, inside) is None
    assert fixture.answer_probability.messages["probability_of_logits"] in verdict(
        check, lambda lg, a: per_prompt(lg, a).mean(), refs, inside)
    assert "Sign flipped" in verdict(check, lambda lg, a: -right(lg, a), refs, inside)
    with pytest.raises(ValueError, match="two checks are named"):
        checks.discover([checks.HERE, FIXTURES, FIXTURES / "duplicate"])


@pytest.mark.slow  # a fresh interpreter imports torch and the registry
def test_the_sandbox_copy_of_the_registry_imports_on_its_own(tmp_path):
    """As install_grader_files lays it out: the package as autograder_checks/, harvest as autograder_harvest."""
    shutil.copytree(checks.HERE, tmp_path / "autograder_checks", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "autograder" / "harvest.py", tmp_path / "autograder_harvest.py")
    code = ("import sys, autograder_harvest as h; assert 'autograder' not in sys.modules; "
            "print(sorted(h.REGISTRY))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{tmp_path}:{ROOT}", "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == repr(sorted(checks.REGISTRY))


def test_no_code_dispatches_on_check_names():
    """Check names appear only as the ``name`` of their Check: no ``check == ...``, ``check in (...)``,
    or "check_NAME" literal anywhere else in the grader or the library."""
    dispatch = re.compile(r"\bcheck\s*(==|!=|\bin\b|\bnot in\b)\s|[\"']check_[a-z_]+[\"']")
    found = []
    for path in [*(ROOT / "autograder").rglob("*.py"), *(ROOT / "patchlab").rglob("*.py")]:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if dispatch.search(line) and not re.search(r"name=\"check_[a-z_]+\"", line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert found == []
