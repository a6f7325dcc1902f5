"""IOI (Indirect Object Identification) prompts: the 8 classic prompts, templates and a generator.

A prompt such as "When John and Mary went to the shops, John gave the bag to" names two people;
the subject (S) is named twice (S1, S2), the indirect object (IO) once, and the model should
continue with the IO (" Mary"). The corrupted twin of a prompt has its S2 name replaced by the IO
name, so only the S2 position differs and the correct answer flips. The ABC corruption replaces S2
by a third name instead (as in Wang et al.'s "ABC" prompts, which name three different people), so no
name is repeated and the corrupted prompt is not another clean prompt.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Sequence

import torch
from jaxtyping import Int
from torch import Tensor

if TYPE_CHECKING:
    from patchlab.types import Model

# The prompts of the TransformerLens demos (Exploratory Analysis and Activation Patching demos),
# in the demos' order: prompt 2k ends with names[k][1] and is answered by names[k][0].
CLASSIC_TEMPLATES: list[str] = [
    "When John and Mary went to the shops,{} gave the bag to",
    "When Tom and James went to the park,{} gave the ball to",
    "When Dan and Sid went to the shops,{} gave an apple to",
    "After Martin and Amy went to the park,{} gave a drink to",
]
CLASSIC_NAME_PAIRS: list[tuple[str, str]] = [
    (" Mary", " John"),
    (" Tom", " James"),
    (" Dan", " Sid"),
    (" Martin", " Amy"),
]

# The 15 BABA templates of Wang et al. (2022), "Interpretability in the Wild", ioi_dataset.py.
# [B] is the subject S, [A] the indirect object IO; the final [A] is the answer.
BABA_TEMPLATES: list[str] = [
    "Then, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to [A]",
    "Then, [B] and [A] had a lot of fun at the [PLACE]. [B] gave a [OBJECT] to [A]",
    "Then, [B] and [A] were working at the [PLACE]. [B] decided to give a [OBJECT] to [A]",
    "Then, [B] and [A] were thinking about going to the [PLACE]. [B] wanted to give a [OBJECT] to [A]",
    "Then, [B] and [A] had a long argument, and afterwards [B] said to [A]",
    "After [B] and [A] went to the [PLACE], [B] gave a [OBJECT] to [A]",
    "When [B] and [A] got a [OBJECT] at the [PLACE], [B] decided to give it to [A]",
    "When [B] and [A] got a [OBJECT] at the [PLACE], [B] decided to give the [OBJECT] to [A]",
    "While [B] and [A] were working at the [PLACE], [B] gave a [OBJECT] to [A]",
    "While [B] and [A] were commuting to the [PLACE], [B] gave a [OBJECT] to [A]",
    "After the lunch, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to [A]",
    "Afterwards, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to [A]",
    "Then, [B] and [A] had a long argument. Afterwards [B] said to [A]",
    "The [PLACE] [B] and [A] went to had a [OBJECT]. [B] gave it to [A]",
    "Friends [B] and [A] found a [OBJECT] at the [PLACE]. [B] gave it to [A]",
]
# The shapes of the classic demo prompts, so that the course model has seen their wording.
DEMO_BABA_TEMPLATES: list[str] = [
    "When [B] and [A] went to the [PLACE], [B] gave the [OBJECT] to [A]",
    "When [B] and [A] went to the [PLACE], [B] gave an [VOBJECT] to [A]",
]


def abba(template: str) -> str:
    """The ABBA mirror of a BABA template: the IO is named first, the subject second."""
    return template.replace("[B] and [A]", "[A] and [B]", 1)


TEMPLATES: list[str] = [t for base in BABA_TEMPLATES + DEMO_BABA_TEMPLATES for t in (base, abba(base))]

# Names from Wang et al.'s IOI dataset plus those of the classic prompts: one GPT-2 token each.
NAMES: list[str] = sorted(
    set(
        """
Aaron Adam Alan Alex Alice Amy Anderson Andre Andrew Andy Anna Anthony Arthur Austin Blake Brandon
Brian Carter Charles Charlie Christian Christopher Clark Cole Collins Connor Crew Crystal Daniel
David Dean Edward Elizabeth Emily Eric Eva Ford Frank George Georgia Graham Grant Henry Ian Jack
Jacob Jake James Jamie Jane Jason Jay Jennifer Jeremy Jessica John Jonathan Jordan Joseph Joshua
Justin Kate Kelly Kevin Kyle Laura Leon Lewis Lisa Louis Luke Madison Marco Marcus Maria Mark Martin
Mary Matthew Max Michael Michelle Morgan Patrick Paul Peter Prince Rachel Richard River Robert Roman
Rose Ruby Russell Ryan Sarah Scott Sean Simon Stephen Steven Sullivan Taylor Thomas Tyler Victoria
Warren William Tom Dan Sid
""".split()
    )
)
PLACES: list[str] = """
shops park store school hospital station office restaurant garden house beach market library cafe
museum church airport zoo bank gym lake river farm mall hotel theater bakery cinema
""".split()
OBJECTS: list[str] = """
bag ball drink ring kiss bone basketball computer necklace book snack cake pen box letter phone hat
key cup bottle flower gift ticket card toy map coin note shirt sandwich
""".split()
VOWEL_OBJECTS: list[str] = "apple orange egg umbrella envelope onion ice".split()


class IOIInputError(ValueError):
    """Bad IOI input: the message says what is wrong and what to do instead."""


@dataclass(frozen=True)
class IOIPrompt:
    """One IOI prompt as text: ``text`` is continued correctly by ``io``, wrongly by ``s``."""

    text: str
    io: str
    s: str
    template: str

    @property
    def corrupted_text(self) -> str:
        """The prompt with the second mention of S replaced by IO (so the answer flips)."""
        return self.with_s2(self.io)

    def with_s2(self, name: str) -> str:
        """The prompt with the second mention of S replaced by ``name`` (with its leading space)."""
        head, sep, tail = self.text.rpartition(self.s)
        if not sep:
            raise IOIInputError(f"subject {self.s!r} does not occur in {self.text!r}")
        return head + name + tail


def classic_prompts() -> list[IOIPrompt]:
    """The 8 classic prompts of the TransformerLens IOI demos, in the demos' order."""
    prompts = []
    for template, (first, second) in zip(CLASSIC_TEMPLATES, CLASSIC_NAME_PAIRS):
        for io, s in ((first, second), (second, first)):
            prompts.append(IOIPrompt(template.format(s), io, s, template))
    return prompts


def fill_template(template: str, a: str, b: str, place: str, obj: str) -> IOIPrompt:
    """Fill a template ([A] = IO, [B] = S) and cut it before the answer."""
    if not template.endswith(" [A]"):
        raise IOIInputError(f"template must end with ' [A]' (the answer): {template!r}")
    body = template[: -len(" [A]")]
    text = (
        body.replace("[A]", a)
        .replace("[B]", b)
        .replace("[PLACE]", place)
        .replace("[OBJECT]", obj)
        .replace("[VOBJECT]", obj)
    )
    return IOIPrompt(text, " " + a, " " + b, template)


def sample_prompts(
    n: int,
    seed: int = 0,
    templates: Sequence[str] = TEMPLATES,
    names: Sequence[str] = NAMES,
    places: Sequence[str] = PLACES,
    objects: Sequence[str] = OBJECTS,
    vowel_objects: Sequence[str] = VOWEL_OBJECTS,
) -> list[IOIPrompt]:
    """``n`` random IOI prompts (text only), reproducible from ``seed``."""
    if n < 1:
        raise IOIInputError(f"n must be at least 1, got {n}")
    if len(names) < 2:
        raise IOIInputError("need at least two names to build IOI prompts")
    rng = random.Random(seed)
    prompts = []
    for _ in range(n):
        template = rng.choice(list(templates))
        a, b = rng.sample(list(names), 2)
        obj_pool = vowel_objects if "[VOBJECT]" in template else objects
        prompts.append(fill_template(template, a, b, rng.choice(list(places)), rng.choice(list(obj_pool))))
    return prompts


@dataclass
class IOIData:
    """A batch of clean prompts, their corrupted twins and answers, tokenized for one model.

    ``answer_tokens[:, 0]`` is the correct answer (IO), ``answer_tokens[:, 1]`` the incorrect one (S).
    ``s2_pos`` / ``end_pos`` are the token positions of the second subject mention and the last token
    (with BOS at position 0); they are the same for every prompt of the batch.
    """

    prompts: list[IOIPrompt]
    clean_tokens: Int[Tensor, "batch pos"]
    corrupted_tokens: Int[Tensor, "batch pos"]
    answer_tokens: Int[Tensor, "batch 2"]
    str_tokens: list[str]
    s2_pos: int
    end_pos: int

    @property
    def n_prompts(self) -> int:
        return self.clean_tokens.shape[0]

    def first(self, n: int) -> IOIData:
        """The first ``n`` prompts (all of them if there are fewer), as a batch of their own."""
        return replace(
            self,
            prompts=self.prompts[:n],
            clean_tokens=self.clean_tokens[:n],
            corrupted_tokens=self.corrupted_tokens[:n],
            answer_tokens=self.answer_tokens[:n],
        )

    def to(self, device: torch.device | str) -> IOIData:
        self.clean_tokens = self.clean_tokens.to(device)
        self.corrupted_tokens = self.corrupted_tokens.to(device)
        self.answer_tokens = self.answer_tokens.to(device)
        return self


def single_token_id(model: Model, word: str) -> int:
    """The token id of ``word`` (with its leading space), or a clear error if it is not one token."""
    ids = model.to_tokens(word, prepend_bos=False)[0].tolist()
    if len(ids) != 1:
        pieces = model.to_str_tokens(word, prepend_bos=False)
        raise IOIInputError(
            f"{word!r} is {len(ids)} tokens for this model ({pieces}); IOI names and answers must be "
            "single tokens (with their leading space, e.g. ' Mary'): choose another word"
        )
    if ids[0] == getattr(model.tokenizer, "unk_token_id", None):
        raise IOIInputError(
            f"{word!r} is not in this model's vocabulary (the course model knows only the IOI words of "
            "patchlab.ioi: NAMES, PLACES, OBJECTS): choose one of those"
        )
    return ids[0]


def _tokenize_each(model: Model, texts: Sequence[str], what: str) -> Int[Tensor, "batch pos"]:
    rows = [model.to_tokens(t, prepend_bos=True)[0] for t in texts]
    lengths = {len(r) for r in rows}
    if len(lengths) != 1:
        detail = ", ".join(f"{len(r)} tokens: {t!r}" for r, t in zip(rows, texts))
        raise IOIInputError(
            f"all {what} prompts of a batch must have the same number of tokens ({detail}); "
            "use one template per batch, or names/places/objects that are single tokens"
        )
    return torch.stack(rows)


def make_ioi_data(model: Model, prompts: Sequence[IOIPrompt], corrupted: Sequence[str] | None = None) -> IOIData:
    """Tokenize clean prompts, their corrupted twins (default: S2 replaced by IO) and answers.

    Raises :class:`IOIInputError` for a name that is not one token, prompts of different lengths,
    or a corrupted batch whose size or length differs from the clean one.
    """
    prompts = list(prompts)
    if not prompts:
        raise IOIInputError("no prompts given")
    corrupted_texts = [p.corrupted_text for p in prompts] if corrupted is None else list(corrupted)
    if len(corrupted_texts) != len(prompts):
        raise IOIInputError(
            f"{len(prompts)} clean prompts but {len(corrupted_texts)} corrupted prompts: give one "
            "corrupted prompt per clean prompt"
        )
    answers = torch.tensor([[single_token_id(model, p.io), single_token_id(model, p.s)] for p in prompts])
    clean = _tokenize_each(model, [p.text for p in prompts], "clean")
    corrupt = _tokenize_each(model, corrupted_texts, "corrupted")
    if clean.shape != corrupt.shape:
        raise IOIInputError(
            f"clean prompts have {clean.shape[1]} tokens but corrupted prompts have {corrupt.shape[1]}: "
            "the corrupted twin must change one name for another single-token name, nothing else"
        )
    s2_positions = {_s2_position(model, row, p) for row, p in zip(clean.tolist(), prompts)}
    if len(s2_positions) != 1:
        raise IOIInputError(
            f"S2 sits at different positions in this batch ({sorted(s2_positions)}): use prompts of one template"
        )
    str_tokens = [str(token) for token in model.to_str_tokens(prompts[0].text, prepend_bos=True)]
    return IOIData(
        prompts=prompts,
        clean_tokens=clean,
        corrupted_tokens=corrupt,
        answer_tokens=answers,
        str_tokens=str_tokens,
        s2_pos=s2_positions.pop(),
        end_pos=clean.shape[1] - 1,
    )


def _s2_position(model: Model, row: list[int], prompt: IOIPrompt) -> int:
    s_id = single_token_id(model, prompt.s)
    hits = [i for i, t in enumerate(row) if t == s_id]
    if len(hits) < 2:
        raise IOIInputError(f"subject {prompt.s!r} should appear twice in {prompt.text!r}")
    return hits[-1]


def classic_ioi(model: Model) -> IOIData:
    """The 8 classic prompts tokenized for ``model`` (corrupted = adjacent prompts swapped)."""
    return make_ioi_data(model, classic_prompts())


def abc_corruption(prompts: Sequence[IOIPrompt], names: Sequence[str] = NAMES, seed: int = 0) -> list[str]:
    """ABC corrupted twins: each prompt with S2 replaced by a third name, neither its IO nor its S.

    ``names`` are bare words (no leading space), as in :data:`NAMES`; the third name of each prompt
    is drawn from them reproducibly from ``seed``.
    """
    rng = random.Random(seed)
    texts = []
    for prompt in prompts:
        others = [n for n in names if " " + n not in (prompt.io, prompt.s)]
        if not others:
            raise IOIInputError("need a third name besides each prompt's IO and S: give more names")
        texts.append(prompt.with_s2(" " + rng.choice(others)))
    return texts


def abc_ioi(model: Model, prompts: Sequence[IOIPrompt] | None = None, seed: int = 0) -> IOIData:
    """Clean prompts (default: the 8 classic ones) and their ABC twins (S2 -> a third name).

    The answers stay the clean ones (IO correct, S incorrect). Unlike the classic corruption, the
    corrupted batch is not the clean batch reordered, so noising and denoising are different runs.
    Only names that are single tokens for ``model`` are drawn.
    """
    prompts = classic_prompts() if prompts is None else list(prompts)
    names = [n for n in NAMES if len(model.to_tokens(" " + n, prepend_bos=False)[0]) == 1]
    return make_ioi_data(model, prompts, abc_corruption(prompts, names, seed))


def generate_ioi(
    model: Model,
    n: int,
    seed: int = 0,
    template: str = DEMO_BABA_TEMPLATES[0],
    abba_share: float = 0.5,
) -> IOIData:
    """``n`` IOI prompts from one template (half BABA, half ABBA by default) tokenized for ``model``.

    Only names, places and objects that are single tokens for this model are used, so every prompt
    has the same length and the batch can be patched position by position.
    """
    if template not in BABA_TEMPLATES + DEMO_BABA_TEMPLATES:
        raise IOIInputError(f"unknown template {template!r}: pick one of patchlab.ioi.BABA_TEMPLATES")

    def usable(words: Sequence[str]) -> list[str]:
        return [w for w in words if len(model.to_tokens(" " + w, prepend_bos=False)[0]) == 1]

    names, places = usable(NAMES), usable(PLACES)
    objects, vowel_objects = usable(OBJECTS), usable(VOWEL_OBJECTS)
    if len(names) < 2 or not places or not (objects and vowel_objects):
        raise IOIInputError("this model's tokenizer splits too many IOI words into several tokens")
    rng = random.Random(seed)
    n_abba = round(n * abba_share)
    order = [abba(template)] * n_abba + [template] * (n - n_abba)
    rng.shuffle(order)
    prompts = [sample_prompts(1, rng.randrange(2**31), [t], names, places, objects, vowel_objects)[0] for t in order]
    return make_ioi_data(model, prompts)
