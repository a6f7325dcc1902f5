"""Sphinx extension: what each page gives its reader besides its content.

- Every script once. An inline script that an extension adds after the builder started (sphinx-thebe
  adds its configuration, ``const THEBE_JS_URL = ...``, when the sources are read) is listed twice by
  Sphinx 7.4, as ``None`` and as ``''`` filename, and the second ``const`` throws a ``SyntaxError``
  on every page. Scripts that are the same apart from that are kept once.
- The download menu offers the chapter's notebook: ``book/NAME.ipynb``, generated beside the
  MyST source ``book/NAME.md`` (the one Colab opens), is copied to ``_sources`` and offered first, as
  ``.ipynb``, by sphinx-book-theme's menu.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from sphinx.application import Sphinx


def _script_key(script: Any) -> tuple[str, tuple[tuple[str, str], ...]]:
    """What makes a script: its file (None and '' both mean inline) and its attributes (its body)."""
    filename = getattr(script, "filename", script)
    attributes = getattr(script, "attributes", {})
    return str(filename or ""), tuple(sorted((str(k), str(v)) for k, v in attributes.items()))


def unique_scripts(scripts: list[Any]) -> list[Any]:
    """``scripts`` without repeats (see `_script_key`), in their order."""
    seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    unique = []
    for script in scripts:
        key = _script_key(script)
        if key not in seen:
            seen.add(key)
            unique.append(script)
    return unique


def _dedupe_scripts(app: Sphinx, pagename: str, templatename: str, context: dict, doctree: Any) -> None:
    if "script_files" in context:
        context["script_files"][:] = unique_scripts(list(context["script_files"]))


def _offer_notebook(app: Sphinx, pagename: str, templatename: str, context: dict, doctree: Any) -> None:
    """Offer ``NAME.ipynb`` beside a page's ``NAME.md`` in the theme's download menu."""
    source = Path(app.env.doc2path(pagename))
    notebook = source.with_suffix(".ipynb")
    if doctree is None or source.suffix != ".md" or not notebook.is_file():
        return
    target = Path(app.outdir) / "_sources" / f"{pagename}.ipynb"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(notebook, target)
    context["ipynb_source"] = f"{pagename}.ipynb"


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("html-page-context", _offer_notebook, priority=400)  # before the theme's menu (501)
    app.connect("html-page-context", _dedupe_scripts, priority=900)  # after every page's own scripts
    return {"parallel_read_safe": True, "parallel_write_safe": True}
