"""What a graded check is: one :class:`Check` object declares everything the grader knows about it.

A hidden test ``check_NAME(learner_function, model)`` names a check; the registry
(``autograder.checks.REGISTRY``) maps the name to its object. The learner's kernel uses the sandbox
half (``cases``, ``arguments``, ``lent``), the trusted grader the other (``expected``, ``judge``);
:func:`cases` and :func:`record` are the loops both sides share.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

from torch import Tensor

from patchlab.check import MESSAGES

from ._inputs import Models, PromptSet, call

if TYPE_CHECKING:
    from ._judge import References

# A candidate mistake: the result it would give, or a function computing it (run only when needed).
Candidate = Tensor | Callable[[], Tensor]
Key = dict[str, Any]
Expected = tuple[Tensor, list[tuple[str, Candidate]], dict[str, Any]]


def one_case(ps: PromptSet, model_index: int, set_index: int) -> list[Key]:
    """The default: one call per prompt set, on nothing more than the set itself."""
    return [{}]


@dataclass(frozen=True)
class Check:
    """One graded check.

    ``name``: what the hidden test calls (``check_NAME``). ``returns``: what the learner's function
    returns, in the messages ("a tensor of shape [batch]"). ``variants(ps, model_index, set_index)``:
    what varies within a prompt set, one dict per call (merged into the case key with ``model`` and
    ``set``). ``arguments(ps, key)``: the positional and keyword arguments of one call (copies: the
    learner may change them). ``expected(refs, key)``: the trusted reference of one case, the known
    mistakes it can name (``[(MESSAGES key, Candidate)]``) and :func:`patchlab.check.diagnose`'s
    options. ``lent(ps, key)``: a cached tensor the call is lent and must leave unchanged (it is
    restored after the call). ``loop``: a whole patching loop (the second prompt set on the first
    model only). ``grid``: a patching grid, whose shape only a transposition changes. ``separate_branches``:
    its cases exercise separate branches of the learner's code, so a mistake is named when it
    explains every wrong case. ``accepted``: the types it accepts back. ``record_fields``: fields of a
    record beyond a tensor's. ``messages``: what the mistakes it names tell the learner, for those not
    in :data:`patchlab.check.MESSAGES`. ``judge``: replaces the generic judgement (a figure, not values).
    """

    name: str
    returns: str
    arguments: Callable[[PromptSet, Key], tuple[tuple, dict[str, Any]]]
    expected: Callable[[References, Key], Expected] | None = None
    variants: Callable[[PromptSet, int, int], list[Key]] = one_case
    lent: Callable[[PromptSet, Key], Tensor] | None = None
    loop: bool = False
    grid: bool = False
    separate_branches: bool = False
    accepted: tuple[str, ...] = ("Tensor",)
    record_fields: frozenset[str] = frozenset()
    messages: Mapping[str, str] = field(default_factory=dict)
    judge: Callable[[Check, list[dict[str, Any]], References], str | None] | None = None


def messages(check: Check) -> dict[str, str]:
    """Every mistake's message ``check`` may give: the shared ones and its own."""
    return {**MESSAGES, **check.messages}


def cases(check: Check, models: Models) -> list[Key]:
    """The calls ``check`` makes, as keys: model, prompt set index and what varies within a set."""
    keys = []
    for model_index, name in enumerate(models.names):
        for set_index, ps in enumerate(models.prompt_sets(name)):
            if check.loop and model_index > 0 and set_index > 0:
                continue
            keys += [{"model": name, "set": set_index, **extra} for extra in check.variants(ps, model_index, set_index)]
    return keys


def record(check: Check, key: Key, fn: Callable[..., Any], models: Models) -> dict[str, Any]:
    """Call ``fn`` on the inputs of one case; the record of what came back (and whether it changed
    what it was lent, which is put back)."""
    ps = models.prompt_sets(key["model"])[key["set"]]
    args, kwargs = check.arguments(ps, key)
    if check.lent is None:
        result = call(fn, args, kwargs)
        ps.model.reset_hooks()
        return result
    lent = check.lent(ps, key)
    before = lent.clone()
    result = call(fn, args, kwargs)
    result["cache_mutated"] = not lent.equal(before)
    lent.copy_(before)
    return result
