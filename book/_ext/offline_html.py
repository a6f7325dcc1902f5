"""Sphinx extension: make the executed pages readable offline.

- Executed pages render plotly figures with the ``notebook`` renderer, which embeds plotly.js in the
  page (the default renderer in a Jupyter kernel, ``plotly_mimetype``, has no HTML form and its
  figures vanish from the book). The variable is only a default: ``PLOTLY_RENDERER`` set by the
  caller wins. Readers running the notebooks keep plotly's own choice (Colab, JupyterLab, VS Code).
- plotly's notebook renderer also writes a ``<script src>`` for MathJax from a CDN into every figure;
  the book already serves MathJax itself (``mathjax_path``), so those tags are removed.
- Any other output that still loads a script from the network is reported as a warning, so a
  build with ``-W`` fails instead of shipping a page that breaks offline.
"""

from __future__ import annotations

import os
import re
from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util import logging

logger = logging.getLogger(__name__)

PLOTLY_CDN_MATHJAX = re.compile(r'<script src="https://cdnjs\.cloudflare\.com/ajax/libs/mathjax/[^"]*"></script>')
REMOTE_SCRIPT = re.compile(r'<script[^>]*\bsrc="(?:https?:)?//[^"]*"|\bimport\s[^;]*?from\s*"https?://[^"]*"')


def _clean_outputs(app: Sphinx, doctree: nodes.document) -> None:
    """Drop plotly's CDN MathJax tag from HTML outputs and warn about any other remote script."""
    for node in doctree.findall(nodes.raw):
        if "html" not in node.get("format", ""):
            continue
        html = node.astext()
        cleaned = PLOTLY_CDN_MATHJAX.sub("", html)
        if cleaned != html:
            node.replace_self(nodes.raw(node.rawsource, cleaned, **node.attributes))
        remote = REMOTE_SCRIPT.search(cleaned)
        if remote:
            logger.warning(
                "an output loads a script from the network (%s...): the page would break offline",
                remote.group(0)[:120], location=node,
            )


def setup(app: Sphinx) -> dict[str, Any]:
    os.environ.setdefault("PLOTLY_RENDERER", "notebook")
    app.connect("doctree-read", _clean_outputs)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
