"""The notebooks readers open (Colab, Jupyter) are plain Markdown: no MyST-only markup survives."""

from __future__ import annotations

import sys
from pathlib import Path

import jupytext
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

import notebooks  # noqa: E402  (tools/notebooks.py)
import plain_markdown  # noqa: E402  (tools/plain_markdown.py)

READER_NOTEBOOKS = sorted([*ROOT.glob("book/*.ipynb"), *ROOT.glob("solutions/*/*.ipynb"),
                           *ROOT.glob("exercises/*/*.ipynb")])

SITE = plain_markdown.Site(
    page_url=lambda path: f"https://pages.example/{path.removesuffix('.md')}.html",
    file_url=lambda path: f"https://raw.example/v1/{path}",
    references="book/references.md",
    citations={"a2024": ("Heimersheim & Nanda", "2024"), "b2023": ("Wang et al.", "2023")},
    labels={"sec-noise": ("book/beyond.md", "sec-noise", "Noising: the other direction")},
    titles={"book/beyond.md": "7. Beyond", "book/references.md": "References"},
)
REFS = "https://pages.example/book/references.html"


@pytest.mark.parametrize("path", READER_NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_committed_notebook_holds_no_myst_only_markup(path: Path) -> None:
    cells = nbformat.read(path, as_version=4).cells
    found = [f"cell {i}: {item}" for i, cell in enumerate(cells) if cell.cell_type == "markdown"
             for item in plain_markdown.leftovers(cell.source)]
    assert found == [], f"{path.relative_to(ROOT)}: run python tools/notebooks.py sync"


def test_every_construct_becomes_plain_markdown() -> None:
    source = "\n".join([
        "(sec-intro)=",
        "% a MyST comment",
        "As shown {cite:p}`a2024,b2023`, and by {cite:t}`a2024`; see {doc}`beyond` and {ref}`sec-noise`,",
        "{ref}`the noising section <sec-noise>`, [the next page](beyond.md#top) and {math}`x^2`.",
        "",
        ":::{note}",
        "A note with {cite:p}`b2023`.",
        ":::",
        "",
        "```{admonition} Why it matters",
        ":class: dropdown",
        "Body.",
        "```",
        "",
        "```{figure} figs/heatmap.png",
        ":alt: the heatmap",
        "The heatmap.",
        "```",
        "",
        "```python",
        "d = {x}`y`  # code is left alone",
        "```",
        "Inline `{doc}` code stays.",
    ])
    out = plain_markdown.to_markdown(source, "book/welcome.md", SITE)
    assert f"As shown ([Heimersheim & Nanda, 2024]({REFS}); [Wang et al., 2023]({REFS})), and by " \
           f"[Heimersheim & Nanda (2024)]({REFS}); see [7. Beyond](https://pages.example/book/beyond.html) and " \
           "[Noising: the other direction](https://pages.example/book/beyond.html#sec-noise)," in out
    assert "[the noising section](https://pages.example/book/beyond.html#sec-noise)" in out
    assert "[the next page](https://pages.example/book/beyond.html#top) and $x^2$." in out
    assert f"> **Note**\n>\n> A note with ([Wang et al., 2023]({REFS}))." in out
    assert "> **Why it matters**\n>\n> Body." in out
    assert "![the heatmap](https://raw.example/v1/book/figs/heatmap.png)\n\n*The heatmap.*" in out
    assert "```python\nd = {x}`y`  # code is left alone\n```" in out and "Inline `{doc}` code stays." in out
    assert "sec-intro" not in out and "MyST comment" not in out
    assert plain_markdown.leftovers(out) == []
    assert len(plain_markdown.leftovers(source)) >= 8


@pytest.mark.parametrize("snippet, kind", [
    ("see {cite:p}`x`", "role"), (":::{note}\nx\n:::", "directive"), ("```{warning}\nx\n```", "directive"),
    ("(label)=\n# Title", "target"), ("% comment", "comment"), ("{{ value }}", "substitution"),
    ("[next](ioi_task.md)", "relative .md link"), ("$$ x $$ (eq-1)", "equation label"),
])
def test_leftovers_names_each_kind_of_myst_markup(snippet: str, kind: str) -> None:
    assert any(item.startswith(kind) for item in plain_markdown.leftovers(snippet))


@pytest.mark.parametrize("snippet, what", [
    ("{unknownrole}`x`", "the role {unknownrole}"), ("```{tab-set}\nx\n```", "the directive {tab-set}"),
    ("{cite:p}`nobody`", "no entry 'nobody'"), ("{doc}`missing`", "names no page"),
])
def test_markup_without_a_plain_form_fails_with_the_file_named(snippet: str, what: str) -> None:
    with pytest.raises(plain_markdown.MystError, match="book/x.md") as error:
        plain_markdown.to_markdown(snippet, "book/x.md", SITE)
    assert what in str(error.value)


def test_bibliography_gives_author_and_year() -> None:
    bib = (ROOT / "book" / "references.bib").read_text(encoding="utf-8")
    citations = plain_markdown.read_bibliography(bib)
    assert citations["wang2023ioi"] == ("Wang et al.", "2023")
    assert citations["heimersheim2024patching"] == ("Heimersheim & Nanda", "2024")
    assert citations["nanda2023attribution"] == ("Nanda", "2023")


@pytest.mark.parametrize("md", sorted(ROOT.glob("solutions/*/*.md")), ids=lambda p: p.stem)
def test_conversion_keeps_the_nbgrader_metadata_of_every_cell(md: Path) -> None:
    original = [cell.metadata.get("nbgrader") for cell in jupytext.read(md).cells]
    converted = [cell.metadata.get("nbgrader") for cell in nbformat.reads(notebooks.convert(md), as_version=4).cells]
    assert converted == original and any(original)
