"""Feedback without hidden-test source.

nbgrader's feedback shows the autograded notebook: the test cells still hold their hidden tests,
and a traceback through a test cell quotes its lines. :class:`ScrubOutputs` cuts every traceback of a
test cell down to ``ErrorName: message`` (the diagnosis) and removes any output line that quotes a
hidden test; nbgrader's ``ClearHiddenTests`` then removes the hidden tests from the sources.
:func:`leaks` checks the final HTML.
"""

from __future__ import annotations

import html
import re
from typing import Any

from nbformat import NotebookNode
from nbgrader.preprocessors import NbGraderPreprocessor

BEGIN, END = "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"
MIN_LINE = 12  # shorter hidden lines (a bracket, a blank) say nothing and are not searched for
REMOVED = "[line of a hidden test removed]"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def hidden_test_lines(nb: NotebookNode) -> list[str]:
    """The (stripped) lines of every hidden-test region of ``nb`` that are worth searching for."""
    lines, inside = [], False
    for cell in nb.cells:
        for line in cell.source.splitlines():
            if BEGIN in line:
                inside = True
            elif END in line:
                inside = False
            elif inside and len(line.strip()) >= MIN_LINE:
                lines.append(line.strip())
    return lines


def _scrub_text(text: str, hidden: list[str]) -> str:
    return "\n".join(REMOVED if any(h in _ANSI.sub("", line) for h in hidden) else line for line in text.split("\n"))


def _is_test_cell(cell: NotebookNode) -> bool:
    meta = cell.metadata.get("nbgrader", {})
    return cell.cell_type == "code" and meta.get("grade", False) and not meta.get("solution", False)


class ScrubOutputs(NbGraderPreprocessor):
    """Feedback preprocessor: no traceback lines in test cells, no hidden-test line in any output."""

    def preprocess(self, nb: NotebookNode, resources: Any) -> tuple[NotebookNode, Any]:
        self._hidden = hidden_test_lines(nb)
        return super().preprocess(nb, resources)

    def preprocess_cell(self, cell: NotebookNode, resources: Any, index: int) -> tuple[NotebookNode, Any]:
        for output in cell.get("outputs", []):
            if output.output_type == "error":
                if _is_test_cell(cell):
                    output.traceback = [f"{output.ename}: {output.evalue}"]
                output.evalue = _scrub_text(output.evalue, self._hidden)
                output.traceback = [_scrub_text(line, self._hidden) for line in output.traceback]
            elif output.output_type == "stream":
                output.text = _scrub_text(output.text, self._hidden)
            for mime, value in output.get("data", {}).items():
                if isinstance(value, str) and mime.startswith("text/"):
                    output.data[mime] = _scrub_text(value, self._hidden)
        return cell, resources


def leaks(page: str, hidden: list[str]) -> list[str]:
    """The hidden-test lines that appear in an HTML page's text (tags removed, entities decoded)."""
    text = html.unescape(re.sub(r"<[^>]+>", "", page))
    return [line for line in hidden if line in text]


# --- what nbgrader's feedback page says, made readable ----------------------------------------------

AWAITING = "awaiting your instructor"
# Diagnoses and tracebacks wrap instead of running off the page in one long line.
WRAP_CSS = (
    "<style>div.output_area pre, div.output_subarea pre {white-space: pre-wrap; overflow-wrap: anywhere;}</style>"
)


def exercise_titles(nb: NotebookNode) -> list[str]:
    """For each cell of ``nb``, the heading of the exercise it belongs to ("1.2 Mean logit
    difference"): the last ``##`` heading of an assignment cell (one with nbgrader metadata) above it."""
    titles, current = [], ""
    for cell in nb.cells:
        if cell.cell_type == "markdown" and cell.metadata.get("nbgrader", {}).get("grade_id"):
            headings = [line.lstrip("#").strip() for line in cell.source.splitlines() if re.match(r"#{1,3}\s", line)]
            current = headings[-1] if headings else current
        titles.append(current)
    return titles


def polish(page: str, titles: dict[str, str], awaiting: dict[str, float]) -> str:
    """nbgrader's feedback page with each graded cell titled by its exercise (``titles``: grade id ->
    title) instead of "Test cell", and each answer still to grade by hand (``awaiting``: grade id ->
    points) saying "awaiting your instructor" instead of a score of 0; long lines wrap."""
    for gid, title in titles.items():
        anchor = re.escape(html.escape(gid))
        name = html.escape(title)
        page = re.sub(
            rf'(<li><a href="#{anchor}">)(?:Test cell|Written response|Coding free-response|Task)</a>',
            rf"\g<1>{name}</a>",
            page,
        )
        page = re.sub(
            rf'(<a name="{anchor}"></a>\s*<div class="panel-heading">\s*<span class="nbgrader-label">)'
            rf"(?:Grade cell: <code>{anchor}</code>|Student&#39;s answer|Student\'s answer)</span>",
            rf"\g<1>{name}</span>",
            page,
        )
    for gid, points in awaiting.items():
        anchor = re.escape(html.escape(gid))
        waiting = f"{AWAITING}: {points:g} points"
        page = re.sub(rf'(<li><a href="#{anchor}">[^<]*</a>) \(Score: [^)]*\)', rf"\g<1> ({waiting})", page)
        page = re.sub(
            rf'(<a name="{anchor}"></a>\s*<div class="panel-heading">.*?<span class="pull-right">)\s*'
            r"Score: [0-9.]+ / [0-9.]+",
            rf"\g<1>{waiting[0].upper() + waiting[1:]}",
            page,
            flags=re.DOTALL,
        )
    if awaiting:
        total = sum(awaiting.values())
        page = re.sub(
            r"(<h4>[^<]*\(Score: [0-9.]+ / [0-9.]+)\)</h4>", rf"\g<1>; {total:g} points {AWAITING})</h4>", page, count=1
        )
    return page.replace("</head>", WRAP_CSS + "\n</head>", 1)
