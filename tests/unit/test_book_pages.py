"""Static checks of the book's chapters: table of contents, Colab links, the Colab install cell."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import jupytext
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

import notebooks  # noqa: E402  (tools/notebooks.py)

COURSE = notebooks.load_course(ROOT)  # course.toml: where the course lives
COLAB = COURSE.colab("")
INSTALL_CELL = COURSE.install_cell


def toc_pages() -> list[Path]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    files = [toc["root"]] + [entry["file"] for entry in toc["chapters"]]
    return [ROOT / f"{name}.md" for name in files]


CHAPTERS = [page for page in toc_pages() if page.exists() and notebooks.is_notebook_md(page)]


def test_toc_lists_existing_pages_and_all_fourteen_notebook_chapters() -> None:
    missing = [str(p.relative_to(ROOT)) for p in toc_pages() if not p.exists()]
    assert missing == []
    assert len(CHAPTERS) == 14


def test_config_names_the_course_repository_and_serves_mathjax_locally() -> None:
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    assert config["repository"]["url"] == COURSE.repository
    assert config["execute"]["execute_notebooks"] == "cache"
    mathjax = config["sphinx"]["config"]["mathjax_path"]
    assert not mathjax.startswith(("http:", "https:", "//"))
    assert (ROOT / "book" / "_static" / mathjax).is_file()


@pytest.mark.parametrize("page", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_opens_in_colab_and_installs_only_patchlab_there(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    ipynb = page.with_suffix(".ipynb").relative_to(ROOT).as_posix()
    assert f"]({COLAB}{ipynb})" in text, f"{page.name} has no 'Open in Colab' link to {ipynb}"
    code = [cell for cell in jupytext.read(page).cells if cell.cell_type == "code"]
    assert code and code[0].source.strip() == INSTALL_CELL
    assert not any(re.search(r"pip install[^\n]*\btorch\b", cell.source) for cell in code), \
        "never reinstall torch in Colab"


@pytest.mark.parametrize("page", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_names_its_model_in_its_first_output_and_runs_without_the_book_tools(page: Path) -> None:
    code = [cell.source for cell in jupytext.read(page).cells if cell.cell_type == "code"]
    assert 'load_model("auto")' in code[1]
    assert re.search(r'print\(f"The numbers on this page come from \{(name|model_label\(model\))\}\."\)', code[1])
    # Colab installs patchlab alone: the book's build tools (myst-nb, jupyter-book) are not there
    assert not any(re.search(r"^\s*(from|import) (myst_nb|jupyter_book|sphinx)", c, re.M) for c in code)


@pytest.mark.parametrize("stem, exercise", [
    ("logit_difference", "exercises/logit_difference/logit_difference.ipynb"),
    ("residual_patching", "exercises/residual_patching/residual_patching.ipynb"),
    ("attribution_patching", "exercises/attribution_patching/attribution_patching.ipynb"),
    ("path_patching", "exercises/path_patching/path_patching.ipynb"),
    ("choosing_corruption", "exercises/choosing_corruption/choosing_corruption.ipynb"),
])
def test_chapter_ends_with_its_exercise(stem: str, exercise: str) -> None:
    text = (ROOT / "book" / f"{stem}.md").read_text(encoding="utf-8")
    assert f"({COLAB}{exercise})" in text.split("## Exercise")[-1]


def test_offline_extension_drops_plotlys_cdn_mathjax_and_flags_other_remote_scripts(caplog) -> None:
    from docutils import nodes
    from docutils.utils import new_document

    sys.path.insert(0, str(ROOT / "book" / "_ext"))
    import offline_html

    document = new_document("page")
    plotly_output = ('<div><script src="https://cdnjs.cloudflare.com/ajax/libs/mathjax/3.2.2/es5/tex-svg.min.js">'
                     '</script><div class="plotly-graph-div"></div></div>')
    document += nodes.raw("", plotly_output, format="html")
    document += nodes.raw("", '<script src="https://unpkg.com/some/lib.js"></script>', format="html")
    with caplog.at_level("WARNING"):
        offline_html._clean_outputs(None, document)
    html = [node.astext() for node in document.findall(nodes.raw)]
    assert html[0] == '<div><div class="plotly-graph-div"></div></div>'
    assert "unpkg.com" in html[1]
    assert [r.getMessage() for r in caplog.records if "network" in r.getMessage()] != []
    assert not any("cdnjs" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("renderer", ["notebook", "notebook_connected"])
def test_offline_extension_keeps_figures_and_serves_plotly_js_once(renderer: str, monkeypatch, caplog) -> None:
    """plotly's own loader of plotly.js (a 4.6 MB inline copy, or an import from its CDN) leaves the
    page; the figure stays, for the book's one copy of plotly.js (``_static/plotly.min.js``) to draw."""
    import plotly.graph_objects as go
    import plotly.io as pio
    from docutils import nodes
    from docutils.utils import new_document
    from plotly.io import _base_renderers

    sys.path.insert(0, str(ROOT / "book" / "_ext"))
    import offline_html

    shown: list[str] = []
    monkeypatch.setattr(_base_renderers.ipython_display, "display_html", lambda html, raw: shown.append(html))
    pio.renderers[renderer].activate()  # what a kernel shows before its first figure
    figure = pio.renderers[renderer].to_mimebundle(go.Figure(go.Bar(y=[1, 2])).to_dict())["text/html"]
    document = new_document("page")
    document += nodes.raw("", shown[0], format="html")
    document += nodes.raw("", figure, format="html")
    with caplog.at_level("WARNING"):
        offline_html._clean_outputs(None, document)
    html = [node.astext() for node in document.findall(nodes.raw)]
    assert len(html) == 1 and "Plotly.newPlot" in html[0] and "plotly-graph-div" in html[0]
    assert "cdn.plot.ly" not in html[0] and "plotly.js v" not in html[0]
    assert not any("network" in r.getMessage() for r in caplog.records)


def test_offline_extension_serves_circuitsvis_once(caplog) -> None:
    """A widget keeps its own render call but not the 1.3 MB bundle circuitsvis inlines into each
    (the book loads ``_static/circuitsvis.js`` instead); a bundle of another circuitsvis version is a warning."""
    import circuitsvis as cv
    import torch
    from docutils import nodes
    from docutils.utils import new_document

    sys.path.insert(0, str(ROOT / "book" / "_ext"))
    import offline_html

    widget = cv.attention.attention_heads(torch.rand(2, 3, 3), ["a", "b", "c"]).local_src
    document = new_document("page")
    document += nodes.raw("", widget, format="html")
    document += nodes.raw("", widget.replace("var CircuitsVis=", "var CircuitsVis= /* other version */"), format="html")
    with caplog.at_level("WARNING"):
        offline_html._clean_outputs(None, document)
    html = [node.astext() for node in document.findall(nodes.raw)]
    assert len(widget) > 1_000_000 and len(html[0]) < 2_000, len(html[0])
    assert offline_html.CIRCUITSVIS_RENDER in html[0] and offline_html.CIRCUITSVIS_BUNDLE not in html[0]
    assert [r.getMessage() for r in caplog.records if "circuitsvis" in r.getMessage()] != []


def test_reader_page_lists_each_script_once() -> None:
    """Sphinx 7.4 lists an inline script added after its builder started twice (filename None, then
    ''): sphinx-thebe's ``const THEBE_JS_URL`` then throws on every page. Each script stays once, in order."""
    from sphinx.builders.html._assets import _JavaScript

    sys.path.insert(0, str(ROOT / "book" / "_ext"))
    import reader_page

    thebe = 'const THEBE_JS_URL = "x"'
    scripts = [_JavaScript("a.js"), _JavaScript(None, body=thebe), _JavaScript("", body=thebe),
               _JavaScript("", body="let y = 1"), _JavaScript("a.js")]
    kept = reader_page.unique_scripts(scripts)
    assert [(s.filename or "", s.attributes.get("body")) for s in kept] == [("a.js", None), ("", thebe), ("", "let y = 1")]
