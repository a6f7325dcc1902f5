"""Learner text made safe to show: on the terminal, in ``grades.csv`` and ``grading.log``, and in the
feedback pages the instructor opens.

- :func:`printable` / :func:`one_line`: control characters (C0, C1, DEL) and the bidirectional
  overrides shown as visible escapes (``\\x1b``), so no learner text clears a screen, moves the
  cursor, adds a line or reorders what is shown;
- :func:`csv_cell`: a cell a spreadsheet would evaluate (starting with ``= + - @``, a tab or a carriage
  return) gets a leading ``'``;
- :class:`SanitiseLearnerContent` (an nbgrader feedback preprocessor): the learner's markdown (answers
  and added cells) keeps only inert tags; :func:`with_csp` puts a Content-Security-Policy that allows
  no script, no request and no form at the top of a page, a second wall behind the first.
"""

from __future__ import annotations

import re
from typing import Any

import bleach
from nbformat import NotebookNode
from nbgrader.preprocessors import NbGraderPreprocessor

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]")
_BREAKS = re.compile(r"[\t\n]")
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# No script (inline, external, javascript: URLs or handlers), nothing fetched, no form, no frame, no <base>:
# the page is static text, inline styles and data: images.
CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; font-src data:; base-uri 'none'; "
    "form-action 'none'; frame-src 'none'; object-src 'none'"
)
CSP_META = f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
# What the learner's markdown may keep as HTML: inert formatting (the rest is shown as text).
SAFE_TAGS = {
    "b",
    "i",
    "em",
    "strong",
    "code",
    "pre",
    "sub",
    "sup",
    "br",
    "p",
    "ul",
    "ol",
    "li",
    "blockquote",
    "details",
    "summary",
    "table",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
    "hr",
    "h1",
    "h2",
    "h3",
    "h4",
    "a",
}
SAFE_ATTRIBUTES = {"a": ["href", "title"]}
SAFE_PROTOCOLS = {"http", "https", "mailto"}


def _escape(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: Any) -> str:
    """``text`` with every control character but newline and tab shown as an escape (``\\x1b``)."""
    return _CONTROL.sub(_escape, str(text))


def one_line(text: Any, limit: int = 500) -> str:
    """``text`` on one line (newlines and tabs as spaces), control characters escaped, at most ``limit`` characters."""
    line = printable(_BREAKS.sub(" ", str(text)))
    return line if len(line) <= limit else line[: limit - 1] + "…"


def csv_cell(value: str) -> str:
    """A CSV cell a spreadsheet shows as text: one that would start a formula gets a leading ``'``."""
    return "'" + value if value.startswith(FORMULA_START) else value


def safe_markdown(source: str) -> str:
    """Learner markdown with its HTML reduced to :data:`SAFE_TAGS` (anything else escaped: shown as text)."""
    return bleach.clean(source, tags=SAFE_TAGS, attributes=SAFE_ATTRIBUTES, protocols=SAFE_PROTOCOLS, strip=False)


def with_csp(page: str) -> str:
    """``page`` with :data:`CSP_META` as the first element of its head (before any script could run);
    a page that already starts its head with it (a shard's page, merged) is returned as it is."""
    match = re.search(r"<head[^>]*>", page, re.IGNORECASE)
    if match is None:
        return f"<!DOCTYPE html>\n<html><head>{CSP_META}</head><body><pre>{bleach.clean(page)}</pre></body></html>\n"
    if page.startswith(CSP_META, match.end()):
        return page
    return page[: match.end()] + CSP_META + page[match.end() :]


def _from_learner(cell: NotebookNode) -> bool:
    """An answer cell or a cell the learner added (rebuilt notebooks give those no other nbgrader metadata)."""
    meta = cell.metadata.get("nbgrader", {})
    return not isinstance(meta, dict) or not meta or bool(meta.get("solution"))


class SanitiseLearnerContent(NbGraderPreprocessor):
    """Feedback preprocessor: the learner's markdown keeps inert HTML only, its attachments are dropped
    (outputs were reduced to text and images as they were read back: :func:`autograder.untrusted.clean_outputs`)."""

    def preprocess_cell(self, cell: NotebookNode, resources: Any, index: int) -> tuple[NotebookNode, Any]:
        if cell.cell_type in ("markdown", "raw") and _from_learner(cell):
            cell.source = safe_markdown(cell.source)
            cell.pop("attachments", None)
            if cell.cell_type == "raw":
                cell.cell_type = "markdown"  # raw cells are copied into the page as they are
        return cell, resources
