"""Sphinx extension: make the executed pages readable offline, with one copy of plotly.js for the book.

- Executed pages render plotly figures with the ``notebook`` renderer (the default renderer in a
  Jupyter kernel, ``plotly_mimetype``, has no HTML form and its figures vanish from the book). The
  variable is only a default: ``PLOTLY_RENDERER`` set by the caller wins (``notebook_connected``
  works too). Readers running the notebooks keep plotly's own choice (Colab, JupyterLab, VS Code).
- Both renderers put a loader of plotly.js into the first figure's page: ``notebook`` a 4.6 MB copy
  inline, ``notebook_connected`` an import from the plotly CDN. Both are removed from the outputs;
  instead the plotly.js of the installed plotly package (the one that drew the figures) is copied
  once to ``_static/plotly.min.js`` and loaded from there by every page that has a figure, so a
  browser fetches it once for the whole book, and the book still reads offline.
- plotly also writes a ``<script src>`` for MathJax from a CDN into every figure; the book already
  serves MathJax itself (``mathjax_path``), so those tags are removed.
- circuitsvis's ``local_src`` inlines its whole JavaScript bundle (1.3 MB) into every widget. The
  bundle is removed from the outputs, copied once to ``_static/circuitsvis.js`` and loaded from there
  by the pages that draw a widget (before the widgets' own ``CircuitsVis.render`` calls run). A bundle
  that is not the installed circuitsvis's (a page executed with another version) is a warning.
- Any other output that still loads a script from the network is reported as a warning, so a
  build with ``-W`` fails instead of shipping a page that breaks offline.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
from pathlib import Path
from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util import logging

logger = logging.getLogger(__name__)

PLOTLY_JS = "plotly.min.js"
PLOTLY_CDN_MATHJAX = re.compile(r'<script src="https://cdnjs\.cloudflare\.com/ajax/libs/mathjax/[^"]*"></script>')
# the notebook renderer's inline copy of plotly.js (it starts with plotly.js's licence banner), and
# the notebook_connected renderer's (or include_plotlyjs="cdn"'s) load of plotly.js from its CDN
PLOTLY_LOADERS = re.compile(
    r'<script[^>]*>\s*/\*\*?\s*\*\s*plotly\.js v.*?</script>'
    r'|<script type="module">\s*import\s*"https://cdn\.plot\.ly/[^"]*"\s*;?\s*</script>'
    r'|<script[^>]*\bsrc="https://cdn\.plot\.ly/[^"]*"[^>]*></script>',
    re.DOTALL,
)
# plotly's configuration script that comes with its loader (the book sets it once, in `_add_plotly`)
PLOTLY_CONFIG = re.compile(r"<script[^>]*>\s*window\.PlotlyConfig = [^<]*</script>")
CIRCUITSVIS_JS = "circuitsvis.js"
CIRCUITSVIS_BUNDLE = "var CircuitsVis="  # how circuitsvis's bundle starts (after "use strict")
CIRCUITSVIS_RENDER = "CircuitsVis.render("  # what a widget's own script calls
SOURCE_MAP = re.compile(r"\n//# sourceMappingURL=\S*\s*$")
REMOTE_SCRIPT = re.compile(
    r'<script[^>]*\bsrc="(?:https?:)?//[^"]*"|\bimport\s[^;]*?from\s*"https?://[^"]*"|\bimport\s*"https?://[^"]*"'
)


def _circuitsvis_bundle() -> str | None:
    """The installed circuitsvis's JavaScript bundle (None without circuitsvis)."""
    spec = importlib.util.find_spec("circuitsvis")
    if spec is None or spec.origin is None:
        return None
    return (Path(spec.origin).parent / "dist" / "cdn" / "iife.js").read_text(encoding="utf-8")


def _clean_outputs(app: Sphinx, doctree: nodes.document) -> None:
    """Drop plotly's own loaders of plotly.js and of MathJax, and circuitsvis's inline bundle, from
    HTML outputs; warn about any other remote script or inline bundle."""
    for node in list(doctree.findall(nodes.raw)):
        if "html" not in node.get("format", ""):
            continue
        html = node.astext()
        cleaned = PLOTLY_CDN_MATHJAX.sub("", html)
        if PLOTLY_LOADERS.search(cleaned):
            cleaned = PLOTLY_CONFIG.sub("", PLOTLY_LOADERS.sub("", cleaned))
            if not cleaned.strip():  # the output was only the loader: leave no empty output box
                node.parent.remove(node)
                continue
        if CIRCUITSVIS_BUNDLE in cleaned:
            bundle = _circuitsvis_bundle()
            if bundle is not None:  # inlined as circuitsvis's render_local does, without "</script>"
                cleaned = cleaned.replace(bundle.replace("</script>", ""), "")
            if CIRCUITSVIS_BUNDLE in cleaned:
                logger.warning(
                    "an output inlines a circuitsvis bundle that is not the installed circuitsvis's: "
                    "execute the page again with the installed version", location=node,
                )
        if cleaned != html:
            node.replace_self(nodes.raw(node.rawsource, cleaned, **node.attributes))
        remote = REMOTE_SCRIPT.search(cleaned)
        if remote:
            logger.warning(
                "an output loads a script from the network (%s...): the page would break offline",
                remote.group(0)[:120], location=node,
            )


def _add_plotly(app: Sphinx, pagename: str, templatename: str, context: dict, doctree: Any) -> None:
    """Load the book's one copy of plotly.js on the pages that draw a plotly figure, and of
    circuitsvis on the pages that draw a widget (in the head, before the figures' own scripts call
    ``Plotly.newPlot`` or ``CircuitsVis.render``)."""
    body = context.get("body", "")
    if "plotly-graph-div" in body:
        app.add_js_file(None, body="window.PlotlyConfig = {MathJaxConfig: 'local'};", priority=400)
        app.add_js_file(PLOTLY_JS, priority=401)
    if CIRCUITSVIS_RENDER in body:
        app.add_js_file(CIRCUITSVIS_JS, priority=402)


def _copy_plotly(app: Sphinx, exception: Exception | None) -> None:
    """Copy the installed plotly package's plotly.js, and circuitsvis's bundle (without its source
    map, which the book does not ship), to ``_static`` (once for the whole book)."""
    if exception is not None or app.builder.format != "html":
        return
    import plotly

    source = Path(plotly.__file__).parent / "package_data" / PLOTLY_JS
    static = Path(app.outdir) / "_static"
    static.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, static / PLOTLY_JS)
    bundle = _circuitsvis_bundle()
    if bundle is not None:
        (static / CIRCUITSVIS_JS).write_text(SOURCE_MAP.sub("\n", bundle), encoding="utf-8")


def setup(app: Sphinx) -> dict[str, Any]:
    os.environ.setdefault("PLOTLY_RENDERER", "notebook")
    app.connect("doctree-read", _clean_outputs)
    app.connect("html-page-context", _add_plotly)
    app.connect("build-finished", _copy_plotly)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
