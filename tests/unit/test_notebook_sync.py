"""The committed .ipynb copies (book chapters for Colab, nbgrader solution sources) match their .md."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

import notebooks  # noqa: E402  (tools/notebooks.py)


@pytest.mark.parametrize("folder", ["book", "solutions"])
def test_committed_notebooks_match_their_markdown(folder: str) -> None:
    sources = notebooks.notebook_sources(ROOT, (folder,))
    if folder == "book":
        assert sources, "no MyST notebook found under book/"
    assert notebooks.check(sources) == [], "run: python tools/notebooks.py sync"


def test_check_catches_a_stale_copy_and_sync_repairs_it(tmp_path: Path) -> None:
    md = tmp_path / "page.md"
    md.write_text(
        "---\njupytext:\n  text_representation:\n    extension: .md\n    format_name: myst\n"
        "kernelspec:\n  display_name: Python 3\n  language: python\n  name: python3\n---\n\n"
        "# Page\n\n```{code-cell} ipython3\nx = 1\n```\n",
        encoding="utf-8",
    )
    assert notebooks.stale(md) == "missing"
    assert notebooks.sync([md]) == [md.with_suffix(".ipynb")]
    assert notebooks.stale(md) is None
    assert notebooks.convert(md) == notebooks.convert(md)  # reproducible: ids derive from the cells

    cells = json.loads(md.with_suffix(".ipynb").read_text(encoding="utf-8"))["cells"]
    assert [c["cell_type"] for c in cells] == ["markdown", "code"] and cells[1]["outputs"] == []

    md.write_text(md.read_text(encoding="utf-8").replace("x = 1", "x = 2"), encoding="utf-8")
    assert notebooks.stale(md) == "differs from its .md"


def test_plain_markdown_is_not_a_notebook(tmp_path: Path) -> None:
    page = tmp_path / "guide.md"
    page.write_text("# Instructors\n\nPlain text.\n", encoding="utf-8")
    assert not notebooks.is_notebook_md(page)
