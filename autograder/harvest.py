"""What a graded test cell runs in the learner's kernel: call the learner's function on the graded
inputs and record what it returns. Nothing is judged here.

The grader replaces each hidden test ``check_NAME(learner_function, model)`` of an exercise by
``collect(GRADE_ID, "check_NAME", learner_function)``; this module (copied read-only into the
sandbox) calls the function on every case of ``cases`` and writes the returned values, as plain JSON,
to ``results/GRADE_ID.json`` in the sandbox's scratch folder. The grader outside the sandbox rebuilds
the same inputs, computes the references itself and compares (:mod:`autograder.checks`). Learner code
can change anything in this kernel, this module included: all it can gain is to write values, and
values are only accepted when they are right.

The cases are shared with the trusted side: ``cases(check, models)`` lists them and ``PromptSets``
builds their inputs, the same way on both sides.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import types
import warnings
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

RESULTS = Path("results")
MODELS_VARIABLE = "AUTOGRADER_MODELS"  # comma-separated model names the checks run on
DEVICE_VARIABLE = "AUTOGRADER_DEVICE"  # where they run: cpu (default) or cuda (grade --device cuda)
SECOND_SET_SIZE = 8
SECOND_SET_SEED = 20240607
MAX_REPR = 300


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """No gradients, no warnings, nothing on stderr."""
    with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


class PromptSet:
    """A batch of IOI prompts of one model with its clean and corrupted runs (computed lazily)."""

    def __init__(self, label: str, model: Any, data: Any) -> None:
        self.label, self.model, self.data = label, model, data

    @cached_property
    def _clean(self) -> tuple[torch.Tensor, Any]:
        self.model.reset_hooks()
        with quiet():
            return self.model.run_with_cache(self.data.clean_tokens)

    @cached_property
    def _corrupted(self) -> tuple[torch.Tensor, Any]:
        self.model.reset_hooks()
        with quiet():
            return self.model.run_with_cache(self.data.corrupted_tokens)

    clean_logits = property(lambda self: self._clean[0])
    clean_cache = property(lambda self: self._clean[1])
    corrupted_logits = property(lambda self: self._corrupted[0])
    corrupted_cache = property(lambda self: self._corrupted[1])

    @cached_property
    def clean_logit_diff(self) -> float:
        from patchlab.metrics import logit_diff

        return logit_diff(self.clean_logits, self.data.answer_tokens).item()

    @cached_property
    def corrupted_logit_diff(self) -> float:
        from patchlab.metrics import logit_diff

        return logit_diff(self.corrupted_logits, self.data.answer_tokens).item()

    @cached_property
    def metric(self) -> Callable[[torch.Tensor], torch.Tensor]:
        from patchlab.metrics import patching_metric

        return patching_metric(self.data.answer_tokens, self.clean_logit_diff, self.corrupted_logit_diff)

    def logits(self, which: str) -> torch.Tensor:
        """``clean``, ``corrupted`` or ``halfway`` (their mean: the logit difference is linear in the logits)."""
        if which == "halfway":
            return (self.clean_logits + self.corrupted_logits) / 2
        return self.clean_logits if which == "clean" else self.corrupted_logits

    def hook_layers(self) -> list[tuple[int, int]]:
        """The (layer, position) pairs a patching hook is checked at: S2 early, END last."""
        n_layers = self.model.cfg.n_layers
        return [(min(1, n_layers - 1), self.data.s2_pos), (n_layers - 1, self.data.end_pos)]

    def head_hooks(self) -> list[tuple[int, int, int]]:
        """The (layer, head, position) a head-patching hook is checked at: not head 0, so that a hook
        that patches every head, or the wrong axis, cannot pass by chance."""
        n_layers, n_heads = self.model.cfg.n_layers, self.model.cfg.n_heads
        return [(0, n_heads - 1, self.data.s2_pos), (n_layers - 1, 1, self.data.end_pos)]


class Models:
    """The models the checks run on, loaded once, each with its two prompt sets: the classic prompts
    and a second set (other names, another template, one token longer). On the models after the
    first (there to catch sizes written into the code) the classic set is its first pair only: as
    telling for sizes, at a quarter of the cost of a patching loop on a model twice as wide."""

    def __init__(self, names: list[str], device: str = "cpu") -> None:
        self.names, self.device = names, device
        self._models: dict[str, Any] = {}
        self._sets: dict[str, list[PromptSet]] = {}

    def model(self, name: str) -> Any:
        if name not in self._models:
            import patchlab

            with quiet(), contextlib.redirect_stdout(io.StringIO()):
                self._models[name] = patchlab.load_model(name, device=self.device, verbose=False)
        return self._models[name]

    def prompt_sets(self, name: str) -> list[PromptSet]:
        if name not in self._sets:
            from patchlab.ioi import BABA_TEMPLATES, classic_prompts, generate_ioi, make_ioi_data

            model = self.model(name)
            first = name == self.names[0]
            with quiet():
                classic = make_ioi_data(model, classic_prompts()[:None if first else 2])
                second = generate_ioi(model, SECOND_SET_SIZE, seed=SECOND_SET_SEED, template=BABA_TEMPLATES[0])
                self._sets[name] = [
                    PromptSet(f"the {'' if first else 'first two '}classic prompts on {name}", model, classic),
                    PromptSet(f"a second prompt set (other names, another template) on {name}", model, second),
                ]
        return self._sets[name]


# Checks of a whole patching loop: one model run per cell, the bulk of a submission's grading time.
# They run the second prompt set on the first model only: three cases, not four, and still one that
# tells results copied from the notebook (the second set) from sizes fixed in the code (the second
# model) apart.
LOOPS = ("check_residual_patching", "check_head_by_pos", "check_path_to_logits", "check_path_to_receivers")
# Attribution patching (exercise 13): one forward and one backward pass each, called as the loops are.
# The learner's function runs with gradients off, as every call here: it must switch them on itself.
ATTRIBUTION = ("check_attribution_resid", "check_attribution_heads")


def cases(check: str, models: Models) -> list[dict[str, Any]]:
    """The calls ``check`` makes, as keys: model, prompt set index and what varies within a set."""
    keys = []
    for model_index, name in enumerate(models.names):
        for index, ps in enumerate(models.prompt_sets(name)):
            if check in LOOPS and model_index > 0 and index > 0:
                continue
            base = {"model": name, "set": index}
            if check in ("check_logit_diff_per_prompt", "check_mean_logit_diff"):
                keys += [{**base, "logits": which} for which in ("clean", "corrupted")]
            elif check == "check_normalised_metric":
                keys += [{**base, "logits": which} for which in ("clean", "corrupted", "halfway")]
            elif check == "check_patch_hook":
                keys += [{**base, "layer": layer, "position": pos} for layer, pos in ps.hook_layers()]
            elif check in ("check_residual_patching", "check_heatmap", "check_head_by_pos", "check_path_to_logits",
                           *ATTRIBUTION):
                keys.append(base)
            elif check == "check_head_hook":
                keys += [{**base, "layer": layer, "head": head, "position": pos}
                         for layer, head, pos in ps.head_hooks()]
            elif check == "check_head_inputs":
                keys += [{**base, "which": which} for which in HEAD_INPUTS]
            elif check == "check_path_to_receivers":  # the queries once; the values, larger, everywhere
                inputs = ("q", "v") if model_index == index == 0 else ("v",)
                keys += [{**base, "receiver_input": which} for which in inputs]
            elif check == "check_top_heads":
                keys.append({**base, "k": TOP_K[index % len(TOP_K)]})
            else:
                raise ValueError(f"unknown check {check}")
    return keys

HEAD_INPUTS = ("q", "k", "v", "pattern")  # what check_head_inputs patches, by hook_{which}
TOP_K = (3, 5)  # how many heads check_top_heads asks for, on the first and the second prompt set


def path_receivers(model: Any) -> list[tuple[int, int]]:
    """The receiver heads of the path-patching checks: every head of the layers between the first (no
    sender reaches it) and the last, so that senders of several layers reach them."""
    return [(layer, head) for layer in range(1, max(2, model.cfg.n_layers - 1)) for head in range(model.cfg.n_heads)]


def head_map_values(n_layers: int, n_heads: int, seed: int) -> torch.Tensor:
    """A [n_layers, n_heads] map a top-k function is checked with: distinct magnitudes, the largest
    ones of both signs, so that ranking by value and by magnitude disagree."""
    n = n_layers * n_heads
    generator = torch.Generator().manual_seed(seed)
    magnitudes = torch.linspace(0.05, 1.0, n)[torch.randperm(n, generator=generator)]
    signs = torch.where(torch.arange(n) % 3 == 1, -1.0, 1.0)[torch.randperm(n, generator=generator)]
    values = magnitudes * signs
    top = values.abs().argsort(descending=True)
    values[top[0]], values[top[1]] = -values[top[0]].abs(), values[top[1]].abs()  # the largest is negative
    return values.reshape(n_layers, n_heads)


def heatmap_values(n_layers: int, n_pos: int) -> torch.Tensor:
    """The values a heatmap function is checked with: all distinct, negative and positive."""
    return torch.linspace(-0.4, 1.0, n_layers * n_pos).reshape(n_layers, n_pos)


def hook_point(model: Any, name: str) -> Any:
    """The model's hook point ``name`` (what TransformerLens passes a hook as ``hook``)."""
    hooks = getattr(model, "hook_dict", {})
    return hooks[name] if name in hooks else types.SimpleNamespace(name=name)


def encode(value: Any) -> dict[str, Any]:
    """A returned value as plain JSON: tensors and arrays as shape and values, figures as plotly JSON."""
    kind = type(value).__name__
    if value is None:
        return {"type": "None"}
    if isinstance(value, torch.Tensor):
        tensor = value.detach().to("cpu", torch.float64)
        return {"type": "Tensor", "dtype": str(value.dtype).replace("torch.", ""), "shape": list(tensor.shape),
                "values": tensor.flatten().tolist()}
    if isinstance(value, (bool, int, float)):
        return {"type": kind, "shape": [], "values": [float(value)]}
    if isinstance(value, (list, tuple)):  # e.g. [(layer, head), ...]: numbers, if they are
        try:
            rows = [[float(x) for x in row] if isinstance(row, (list, tuple)) else float(row) for row in value]
            tensor = torch.tensor(rows, dtype=torch.float64)
            return {"type": kind, "shape": list(tensor.shape), "values": tensor.flatten().tolist()}
        except (TypeError, ValueError, RuntimeError):
            return {"type": kind, "repr": repr(value)[:MAX_REPR]}
    if hasattr(value, "to_plotly_json"):  # arrays as lists (plotly's own JSON packs them in base64)
        plain = json.dumps(value.to_plotly_json(), default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))
        return {"type": "Figure", "figure": json.loads(plain)}
    try:
        import numpy as np

        if isinstance(value, np.ndarray):
            array = value.astype(float)
            return {"type": "ndarray", "shape": list(array.shape), "values": array.flatten().tolist()}
    except (TypeError, ValueError):
        pass
    return {"type": kind, "repr": repr(value)[:MAX_REPR]}


def _call(fn: Callable[..., Any], args: tuple, kwargs: dict) -> dict[str, Any]:
    try:
        with quiet():
            return encode(fn(*args, **kwargs))
    except NotImplementedError:
        return {"error": "NotImplementedError"}
    except Exception as err:  # learner code may raise anything: record it
        return {"error": f"{type(err).__name__}: {err}"[:MAX_REPR]}


def run_case(check: str, key: dict[str, Any], fn: Callable[..., Any], models: Models) -> dict[str, Any]:
    """Call ``fn`` on the inputs of one case; the record of what came back."""
    ps = models.prompt_sets(key["model"])[key["set"]]
    answers = ps.data.answer_tokens
    if check in ("check_logit_diff_per_prompt", "check_mean_logit_diff"):
        return _call(fn, (ps.logits(key["logits"]).clone(), answers.clone()), {})
    if check == "check_normalised_metric":
        return _call(fn, (ps.logits(key["logits"]).clone(), answers.clone(), ps.clean_logit_diff,
                          ps.corrupted_logit_diff), {})
    if check == "check_patch_hook":
        name = f"blocks.{key['layer']}.hook_resid_pre"
        clean = ps.clean_cache[name]
        before = clean.clone()
        record = _call(fn, (ps.corrupted_cache[name].clone(),), {
            "hook": hook_point(ps.model, name), "position": key["position"], "clean_cache": ps.clean_cache})
        record["cache_mutated"] = not torch.equal(clean, before)
        clean.copy_(before)
        return record
    if check in ("check_residual_patching", *ATTRIBUTION):
        record = _call(fn, (ps.model, ps.data.clean_tokens.clone(), ps.data.corrupted_tokens.clone(), ps.metric), {})
        ps.model.reset_hooks()
        return record
    if check == "check_head_hook":
        name = f"blocks.{key['layer']}.attn.hook_z"
        clean = ps.clean_cache[name]
        before = clean.clone()
        record = _call(fn, (ps.corrupted_cache[name].clone(),), {
            "hook": hook_point(ps.model, name), "head": key["head"], "position": key["position"],
            "clean_cache": ps.clean_cache})
        record["cache_mutated"] = not torch.equal(clean, before)
        clean.copy_(before)
        return record
    if check in ("check_head_by_pos", "check_head_inputs"):
        args = (ps.model, ps.data.clean_tokens.clone(), ps.data.corrupted_tokens.clone(), ps.metric)
        record = _call(fn, args + ((key["which"],) if check == "check_head_inputs" else ()), {})
        ps.model.reset_hooks()
        return record
    if check in ("check_path_to_logits", "check_path_to_receivers"):
        args = (ps.model, ps.data.clean_tokens.clone(), ps.data.corrupted_tokens.clone(), ps.metric)
        if check == "check_path_to_receivers":
            args += (path_receivers(ps.model), key["receiver_input"])
        record = _call(fn, args, {})
        ps.model.reset_hooks()
        return record
    if check == "check_top_heads":
        cfg = ps.model.cfg
        return _call(fn, (head_map_values(cfg.n_layers, cfg.n_heads, key["set"]), key["k"]), {})
    values = heatmap_values(ps.model.cfg.n_layers, ps.data.clean_tokens.shape[1])
    return _call(fn, (values, list(ps.data.str_tokens), ps.data.s2_pos, ps.data.end_pos), {})


_MODELS: Models | None = None


def collect(grade_id: str, check: str, fn: Any) -> None:
    """Run ``fn`` on every case of ``check`` and write the records to ``results/GRADE_ID.json``."""
    global _MODELS
    if _MODELS is None:
        _MODELS = Models(os.environ.get(MODELS_VARIABLE, "ioi-mini,ioi-mini-reshaped").split(","),
                         os.environ.get(DEVICE_VARIABLE, "cpu"))
    if not callable(fn):
        records: list[dict[str, Any]] = [{"error": "missing"}]
    else:
        records = []
        for key in cases(check, _MODELS):
            _MODELS.model(key["model"]).reset_hooks()
            records.append({"case": key, **run_case(check, key, fn, _MODELS)})
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{grade_id}.json").write_text(json.dumps({"check": check, "records": records}))
    print("Recorded for grading.")
