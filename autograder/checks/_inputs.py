"""The inputs of the graded cases and the recording of what a learner's function returns: shared by
the learner's kernel (``harvest``, in the sandbox) and the trusted references (``_judge``).

The grading models are loaded once (:class:`Models`), each with its two prompt sets
(:class:`PromptSet`); :func:`call` runs a learner function on one case's arguments and turns what it
returned into plain JSON (:func:`encode`). Nothing is judged here. In the sandbox this package is
``/grader/autograder_checks/`` (a copy): its modules import each other relatively.
"""

from __future__ import annotations

import contextlib
import io
import json
import types
import warnings
from functools import cached_property
from typing import Any, Callable, Iterator

import torch

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
                classic = make_ioi_data(model, classic_prompts()[: None if first else 2])
                second = generate_ioi(model, SECOND_SET_SIZE, seed=SECOND_SET_SEED, template=BABA_TEMPLATES[0])
                self._sets[name] = [
                    PromptSet(f"the {'' if first else 'first two '}classic prompts on {name}", model, classic),
                    PromptSet(f"a second prompt set (other names, another template) on {name}", model, second),
                ]
        return self._sets[name]


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
        return {
            "type": "Tensor",
            "dtype": str(value.dtype).replace("torch.", ""),
            "shape": list(tensor.shape),
            "values": tensor.flatten().tolist(),
        }
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


def call(fn: Callable[..., Any], args: tuple, kwargs: dict) -> dict[str, Any]:
    try:
        with quiet():
            return encode(fn(*args, **kwargs))
    except NotImplementedError:
        return {"error": "NotImplementedError"}
    except Exception as err:  # learner code may raise anything: record it
        return {"error": f"{type(err).__name__}: {err}"[:MAX_REPR]}
