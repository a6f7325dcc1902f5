"""Sentences found wrong in a review of the book (issue 18) stay out of the chapters, the solutions'
mark schemes and the library's docstrings; the corrected ones stay in. Whitespace is normalised, so
a sentence broken over lines still matches. The chapters are numbered in the table of contents'
order, and every number in chapter 8's list of the course model's heads is recomputed here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted({*ROOT.glob("book/*.md"), *ROOT.glob("solutions/*/*.md"), *ROOT.glob("patchlab/**/*.py")})

WRONG = [
    # The course model's heads 1.0 and 2.3 attend END -> S2 and lower the S logit: not name movers.
    "name movers of this model",
    "direct, name-mover-like: on ioi-mini 1.0",
    "the early heads change *what* the name movers copy",
    "the three heads with the largest path to the final residual stream (on GPT-2 small, name movers):",
    # Attribution patching also needs the clean run: two forward passes and one backward pass.
    "at the corrupted run, one forward and one backward pass: a first-order approximation",
    "what the cells cost (one forward and one backward pass per function",
    "ranks cells at the cost of one backward pass",
    "heads' outputs (one forward and one backward pass)",  # the instructors' guide, twice
    "`attribution_patching` needs one forward and one backward pass per function",
    # The guide's path patching: one frozen run per sender plus one receiver run, not two frozen runs.
    "two frozen runs per sender",
    # The head-output QK fix is the course's extension, not AtP*'s.
    "adds the QK fix of AtP* (Kramár et al. 2024) for heads' queries, keys and outputs",
    "adds the QK fix of AtP* (exact softmax) for heads' outputs, queries and keys",
    # Cross-references and small errors.
    "chapters 8 and 9 open it up into single heads, attention and MLP outputs",
    "Chapters 5 and 6 found *where*",
    "A head reads twice from the residual stream",
    "at the second a pass took in chapter 6's loop",
    r"{\sigma_\text{clean}}",
    "is the layer whose heads write the answer at END",
    "how much to look at each earlier position",
    "Each row is a probability distribution over the earlier positions, and",
    "such as GPT-2 small's negative name mover heads), which",
    # Choosing the corruption moved from chapter 15 (after the instructors' pages) to chapter 14.
    "patches any set of cells together (chapter 15)",
    "# 15. Choosing the corruption",
    "# 14. For instructors",
]

RIGHT = {
    "book/path_patching.md": ["## The paper's direction: noising with ABC senders", "fast_path_patching(model, data.clean_tokens, abc_cache",
                              "need not match the paper's", "its query map is empty"],
    "book/attribution_patching.md": ["an extension of its own, not the paper's method"],
    "patchlab/patching/attribution.py": ["the course's own first-order extension, not part of AtP*"],
    "book/direct_effects.md": ["which are **not** name movers"],
    "book/attention_heads.md": ["## Evidence from the weights: what a head writes", "**S-suppression heads**",
                                "copy_scores(model, names_cache, tokens, first, heads=checked)"],
    "solutions/path_patching/path_patching.md": ["*S-suppression* heads, not name movers"],
    "book/choosing_corruption.md": ["## Exercise", "Exercise 14.1", "Exercise 14.2",
                                    "exercises/choosing_corruption/choosing_corruption.ipynb"],
    "book/welcome.md": ["Chapters 4, 6, 8, 9, 13 and 14 end with a link to an exercise notebook"],
    "book/instructors.md": ["one frozen run per sender, plus one receiver run per sender"],
}


def flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def test_the_sources_are_found() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in SOURCES}
    assert {"book/direct_effects.md", "solutions/path_patching/path_patching.md",
            "patchlab/patching/attribution.py"} <= names


@pytest.mark.parametrize("sentence", WRONG)
def test_wrong_sentence_is_gone(sentence: str) -> None:
    found = [p.relative_to(ROOT).as_posix() for p in SOURCES if flat(sentence) in flat(p.read_text())]
    assert not found, f"{sentence!r} is still in {found}"


@pytest.mark.parametrize("path", sorted(RIGHT))
def test_corrected_sentences_are_there(path: str) -> None:
    text = flat((ROOT / path).read_text())
    missing = [s for s in RIGHT[path] if flat(s) not in text]
    assert not missing, f"{path} lacks {missing}"


def test_chapters_are_numbered_in_the_order_of_the_table_of_contents() -> None:
    """Each numbered page's title is its place in _toc.yml; choosing the corruption comes right after
    attribution patching, before the instructors' pages, and the welcome page lists them so."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    pages = [toc["root"]] + [entry["file"] for entry in toc["chapters"]]
    numbered = {}
    for page in pages:
        title = next(line for line in (ROOT / f"{page}.md").read_text(encoding="utf-8").splitlines()
                     if line.startswith("# "))
        if match := re.match(r"# (\d+)\. ", title):
            numbered[page] = int(match.group(1))
    assert list(numbered.values()) == list(range(1, len(numbered) + 1)), numbered
    assert numbered["book/attribution_patching"] == 13
    assert numbered["book/choosing_corruption"] == 14 and numbered["book/instructors"] == 15
    welcome = (ROOT / "book" / "welcome.md").read_text(encoding="utf-8")
    listed = {int(n): stem for n, stem in re.findall(r"^ ?(\d+)\. \{doc\}`(\w+)`", welcome, re.M)}
    assert {f"book/{stem}": n for n, stem in listed.items()} == {p: n for p, n in numbered.items() if n > 1}


def _head_table() -> dict[str, str]:
    """Chapter 8's list of the course model's heads (one item per head, so that it reads on a phone):
    each head's item, whitespace normalised."""
    text = (ROOT / "book" / "attention_heads.md").read_text(encoding="utf-8")
    section = text.split("(course-model-heads)=")[1].split("\n## ")[0]
    items = re.findall(r"^- \*\*Head (\d+\.\d+)(.*?)(?=^- |^\n)", section, re.M | re.S)
    return {head: flat(item) for head, item in items}


def _signed(value: float, digits: int = 2) -> str:
    """A number as the table prints it: a sign unless it rounds to 0, and the minus sign as −."""
    text = f"{value:+.{digits}f}"
    return text[1:] if float(text) == 0 else text.replace("-", "−")


@pytest.fixture(scope="module")
def head_evidence(model, classic, classic_run):
    """What chapters 8, 9, 11 and 12 compute about the course model's heads, with their own prompts."""
    import torch

    from patchlab.direct import direct_effects, leading_heads, ranked_heads
    from patchlab.heads import answer_logit_effects, attention_to, copy_scores
    from patchlab.ioi import generate_ioi
    from patchlab.metrics import logit_diff, metric_from_runs
    from patchlab.patching import fast_patching, fast_path_patching
    from patchlab.uncertainty import bootstrap_interval, normalised, per_prompt_patching

    clean_logits, cache, corrupted_logits, metric = classic_run
    tokens, answers = classic.corrupted_tokens, classic.answer_tokens
    out = {"patching": fast_patching(model, tokens, cache, metric, "head_out", progress=False),
           "v": fast_patching(model, tokens, cache, metric, "head_v", progress=False)}
    per_prompt = per_prompt_patching(model, tokens, cache, answers, "head_out")
    out["low"], out["high"] = bootstrap_interval(
        lambda prompts: normalised(per_prompt, logit_diff(clean_logits, answers, per_prompt=True),
                                   logit_diff(corrupted_logits, answers, per_prompt=True), prompts),
        classic.n_prompts)
    out["to logits"] = fast_path_patching(model, tokens, cache, metric, progress=False)
    out["receivers"] = ranked_heads(out["to logits"])[:3]
    for which in ("q", "v"):
        out[f"via {which}"] = fast_path_patching(model, tokens, cache, metric, out["receivers"], which, progress=False)
    out["leading"] = leading_heads(direct_effects(model, cache, answers).heads.mean(-1), fraction=0.1)

    names = generate_ioi(model, 64, seed=1)  # chapter 8's names
    with torch.no_grad():
        _, names_cache = model.run_with_cache(names.clean_tokens)
    n, layers, named = names.n_prompts, model.cfg.n_layers, names.clean_tokens
    first = torch.stack([(named == names.answer_tokens[:, i:i + 1]).int().argmax(1) for i in (0, 1)], 1)
    end, s2 = torch.full((n,), names.end_pos), torch.full((n,), names.s2_pos)
    out |= {"END→IO": attention_to(names_cache, layers, end, first[:, 0]),
            "END→S1": attention_to(names_cache, layers, end, first[:, 1]),
            "END→S2": attention_to(names_cache, layers, end, s2),
            "S2→S1": attention_to(names_cache, layers, s2, first[:, 1]),
            "S2→S2": attention_to(names_cache, layers, s2, s2),
            "copy S2": copy_scores(model, names_cache, named, s2[:, None])}
    out["IO logit"], out["S logit"] = answer_logit_effects(model, names_cache, names.answer_tokens)

    faith = generate_ioi(model, 24, seed=20)  # chapter 12's prompts and its rule for the candidate circuit
    with torch.no_grad():
        faith_logits, faith_cache = model.run_with_cache(faith.clean_tokens)
        faith_metric = metric_from_runs(faith_logits, model(faith.corrupted_tokens), faith.answer_tokens)
    patched = fast_patching(model, faith.corrupted_tokens, faith_cache, faith_metric, "head_out", progress=False)
    out["circuit"] = [(l, h) for l, h in ranked_heads(patched.abs()) if abs(patched[l, h]) >= 0.05][:12]
    return out


HEADS = {"1.0": (1, 0), "2.3": (2, 3), "0.3": (0, 3), "0.1": (0, 1), "2.0": (2, 0)}


def test_the_table_names_every_head_the_book_names_on_the_course_model() -> None:
    assert sorted(_head_table()) == sorted(HEADS)


@pytest.mark.parametrize("head", sorted(HEADS))
def test_each_number_of_the_course_models_head_table_is_the_librarys(head: str, head_evidence) -> None:
    e, (l, h), row = head_evidence, HEADS[head], _head_table()[head]
    phrases = [f"patching {_signed(e['patching'][l, h])}"]
    if head in ("1.0", "2.3"):  # S-suppression: END -> S2, writing against S
        phrases += [f"END→S2 {e['END→S2'][l, h]:.2f}", f"negative copy score at S2 {e['copy S2'][1, l, h]:.2f}",
                    f"on the S logit {_signed(e['S logit'][l, h])}", f"on the IO logit {_signed(e['IO logit'][l, h])}",
                    f"path to the final residual stream {e['to logits'][l, h]:.2f}"]
        assert e["leading"] == [(1, 0), (2, 3)] and (l, h) in e["circuit"]
        assert e["S logit"][l, h] < 3 * min(e["IO logit"][l, h].item(), 0.0)
    if head == "1.0":
        phrases.append(f"interval {_signed(e['low'][l, h])} to {_signed(e['high'][l, h])}")
        assert abs(e["via q"][l, h]) < 0.005 and abs(e["v"][l, h] - e["patching"][l, h]) < 0.02
        assert e["leading"][0] == (l, h)  # chapter 11's largest direct effect
    if head in ("0.3", "0.1"):  # the name at S2, through the receivers' values
        phrases += [f"S2→S2 {e['S2→S2'][l, h]:.2f}", f"copy score at S2 {e['copy S2'][0, l, h]:.2f}",
                    f"through the receivers' values {e['via v'][l, h]:.2f}",
                    f"through their queries {abs(e['via q'][l, h]):.2f}"]
        assert (l, h) in e["circuit"] and abs(e["to logits"][l, h]) < 0.005
        assert abs(e["v"][l, h] - e["patching"][l, h]) < 0.02  # "through its values"
    if head == "0.3":
        assert (e["copy S2"][0, 0] == 1).all()  # as for every layer-0 head
        phrases.append(f"path to the final residual stream {abs(e['to logits'][l, h]):.2f}")
    if head == "2.0":
        assert (l, h) in e["receivers"] and abs(e["to logits"][l, h]) < 0.005
        phrases += [f"END→S2 {e['END→S2'][l, h]:.2f}", f"its own path is {abs(e['to logits'][l, h]):.2f}"]
    missing = [p for p in phrases if p not in row]
    assert not missing, f"head {head}: the book's item lacks {missing} (the library computes these)"


def test_the_classes_the_course_model_lacks(head_evidence) -> None:
    """No name movers: heads that look from END to IO look as much at S1 and raise both logits alike;
    no S-inhibition heads: no sender reaches the receivers' queries; no duplicate-token heads."""
    e = head_evidence
    text = flat((ROOT / "book" / "attention_heads.md").read_text(encoding="utf-8"))
    for sentence in ("no S-inhibition heads (no sender reaches the receivers' queries, chapter 9)",
                     "as 0.1 and 0.3 do with 0.50, it attends as much to S1 and raises both answers' logits alike"):
        assert sentence in text
    looking = [tuple(lh) for lh in (e["END→IO"] > 0.3).nonzero().tolist()]
    assert {(0, 1), (0, 3)} <= set(looking)
    for l, h in looking:
        assert abs(e["END→IO"][l, h] - e["END→S1"][l, h]) < 0.05
        assert abs(e["IO logit"][l, h] - e["S logit"][l, h]) < 0.3
    assert f"{e['END→IO'][0, 1]:.2f}" == f"{e['END→IO'][0, 3]:.2f}" == "0.50"
    assert e["via q"].abs().max() < 0.005
    l, h = divmod(int(e["S2→S1"].argmax()), e["S2→S1"].shape[1])
    assert (f"no duplicate-token heads (the most any head attends from S2 to S1 is {e['S2→S1'].max():.2f}, "
            f"head {l}.{h}, whose patching effect is {_signed(e['patching'][l, h])})") in text


@pytest.mark.parametrize("page, drawn", [
    ("residual_patching", 'heatmap(high - low, labels, f"{model_label(model)}: width of the 95% bootstrap interval'),
    ("attention_heads", 'heatmap(high - low, [f"H{h}" for h in range(n_heads)]'),
    ("circuit_faithfulness", '"95% bootstrap interval, low": (sizes, [low.tolist()])'),
])
def test_uncertainty_is_drawn_on_the_residual_map_the_head_map_and_the_faithfulness_figure(page: str, drawn: str) -> None:
    """The bootstrap interval (patchlab.uncertainty, tested in test_uncertainty.py) is drawn on the figure
    where the numbers are compared, not only printed."""
    import jupytext

    code = "\n".join(c.source for c in jupytext.read(ROOT / "book" / f"{page}.md").cells if c.cell_type == "code")
    assert "bootstrap_interval(" in code and drawn in code


def test_what_chapter_14_says_of_its_corruptions_holds_on_the_course_model(model, classic, classic_run) -> None:
    """The S2 swap's corrupted run is the clean one's mirror; ABC's sits near 0; noise three times the
    embeddings' std makes the S2 embedding much larger; the name swap changes S1 and IO too, and only
    its map lights up before S2."""
    import torch

    from patchlab.corruptions import embedding_noise, swap_names
    from patchlab.ioi import abc_ioi, make_ioi_data
    from patchlab.metrics import metric_from_runs
    from patchlab.patching import fast_patching

    text = flat((ROOT / "book" / "choosing_corruption.md").read_text(encoding="utf-8"))
    for sentence in ("0 is a model that confidently names S (its logit difference is the negative of the clean one)",
                     "the noised embedding is much larger than the clean one",
                     "its corrupted logit difference sits near 0 rather than at the clean one's negative",
                     "so its map can light up where the names first appear"):
        assert sentence in text
    clean_logits, cache, corrupted_logits, metric = classic_run
    assert metric.corrupted_logit_diff == pytest.approx(-metric.clean_logit_diff, rel=0.01)
    embedding = cache["hook_embed"][:, classic.s2_pos]
    noise = embedding_noise(model, classic.clean_tokens, [classic.s2_pos], factor=3.0, seed=0)[:, classic.s2_pos]
    assert (embedding + noise).norm(dim=-1).mean() > 2 * embedding.norm(dim=-1).mean()
    swap = make_ioi_data(model, classic.prompts, swap_names(classic.prompts))
    maps = {}
    for label, tokens in (("S2 swap", classic.corrupted_tokens), ("name swap", swap.corrupted_tokens),
                          ("ABC", abc_ioi(model).corrupted_tokens)):
        with torch.no_grad():
            run = metric_from_runs(clean_logits, model(tokens), classic.answer_tokens)
        maps[label] = fast_patching(model, tokens, cache, run, "resid_pre", progress=False)[:, :classic.s2_pos]
        if label == "ABC":
            assert abs(run.corrupted_logit_diff) < 0.1 * run.clean_logit_diff
        changed = set((classic.clean_tokens != tokens).nonzero()[:, 1].tolist())
        if label == "name swap":
            assert classic.s2_pos in changed and len(changed) == 3  # IO, S1 and S2
        else:
            assert changed == {classic.s2_pos}
    assert maps["name swap"].abs().max() > 0.1 and maps["S2 swap"].abs().max() < 1e-3 and maps["ABC"].abs().max() < 1e-3
