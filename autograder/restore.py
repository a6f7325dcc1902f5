"""Rebuild a submission on the assignment's own cells: what is graded is never what the learner's
metadata claims.

Every cell of the released notebook comes back in its order: read-only and test cells from the
instructor's source (a test cell the learner deleted, edited or relabelled is simply the source's
again), answer cells from the learner's notebook. Learner cells are matched by their nbgrader
``grade_id``; when an editor stripped that metadata, by content: a read-only cell by its exact text,
an answer cell by the function it defines (``def NAME``) or, for a written answer, as the markdown
between the same read-only cells. Cells the learner added stay where they were, after the cell
before them. For the sandbox, each test cell is replaced by a call of :mod:`autograder.harvest`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import nbformat
from nbformat import NotebookNode

HIDDEN_CHECK = re.compile(r"^\s*(check_\w+)\(\s*(\w+)\s*,", re.MULTILINE)
HARVEST_MODULE = "autograder_harvest"


def grade_id(cell: NotebookNode) -> str | None:
    """The cell's nbgrader grade id; None when it has none (or anything but a string)."""
    meta = cell.get("metadata", {}).get("nbgrader", {})
    gid = meta.get("grade_id") if isinstance(meta, dict) else None
    return gid if isinstance(gid, str) else None


def _meta(cell: NotebookNode) -> dict:
    meta = cell.metadata.get("nbgrader", {})
    return meta if isinstance(meta, dict) else {}


def is_test(cell: NotebookNode) -> bool:
    return bool(_meta(cell).get("grade")) and not _meta(cell).get("solution") and cell.cell_type == "code"


def is_answer(cell: NotebookNode) -> bool:
    return bool(_meta(cell).get("solution"))


def defined_name(source: str) -> str | None:
    match = re.search(r"^def (\w+)\(", source, re.MULTILINE)
    return match.group(1) if match else None


@dataclass
class Rebuilt:
    """The notebook to grade (release cells in order, learner answers, learner extra cells) and, for
    each test cell's index, the check it calls and the learner function it checks."""

    notebook: NotebookNode
    checks: dict[int, tuple[str, str]]
    matched_by_content: bool


def _match(learner: list[NotebookNode], release: list[NotebookNode]) -> tuple[dict[str | None, int], bool]:
    """{release grade_id: index of the learner cell that fills it}; True when content had to be used."""
    ids = {grade_id(c) for c in release}
    found: dict[str | None, int] = {}  # None: cells without a grade id, as at runtime
    for index, cell in enumerate(learner):
        gid = grade_id(cell)
        if gid in ids and gid not in found:
            found[gid] = index
    if any(grade_id(c) in found for c in release if is_answer(c)) or not any(is_answer(c) for c in release):
        return found, False
    # No answer cell matched by id: the metadata was stripped. Anchor on read-only cells' exact text.
    anchors: dict[str | None, int] = {}
    for cell in release:
        if not is_answer(cell):
            hits = [
                i
                for i, c in enumerate(learner)
                if c.cell_type == cell.cell_type and c.source.strip() == cell.source.strip()
            ]
            if len(hits) == 1:
                anchors[grade_id(cell)] = hits[0]
    used = set(anchors.values())
    for position, cell in enumerate(release):
        if not is_answer(cell):
            continue
        before = [anchors[grade_id(c)] for c in release[:position] if grade_id(c) in anchors]
        after = [anchors[grade_id(c)] for c in release[position + 1 :] if grade_id(c) in anchors]
        low, high = (max(before) if before else -1), (min(after) if after else len(learner))
        name = defined_name(cell.source) if cell.cell_type == "code" else None
        for index in range(low + 1, high):
            candidate = learner[index]
            if index in used or candidate.cell_type != cell.cell_type:
                continue
            if cell.cell_type == "markdown" or name is None or defined_name(candidate.source) == name:
                anchors[grade_id(cell)] = index
                used.add(index)
                break
    return anchors, True


def marks(release: NotebookNode) -> set[str]:
    """What tells a notebook of ``release``'s assignment: its grade ids, and the text of each of its
    read-only cells long enough to say something."""
    return {f"id:{gid}" for gid in map(grade_id, release.cells) if gid} | {
        f"text:{c.source.strip()}" for c in release.cells if not is_answer(c) and len(c.source.strip()) >= 40
    }


def belongs(learner: NotebookNode, own: set[str]) -> bool:
    """Whether ``learner`` is a notebook of the assignment whose :func:`marks` no other assignment has
    are ``own``: one of its cells carries such a grade id or, when an editor stripped the nbgrader
    metadata, such a read-only cell's text."""
    ids = {f"id:{gid}" for gid in map(grade_id, learner.cells) if gid}
    texts = {f"text:{c.source.strip()}" for c in learner.cells if isinstance(c.get("source"), str)}
    return bool(ids & own) if ids else bool(texts & own)


def rebuild(learner: NotebookNode, release: NotebookNode, source: NotebookNode) -> Rebuilt:
    """The notebook to grade: ``release``'s cells (with ``source``'s test code) and the learner's answers."""
    instructor = {grade_id(c): c for c in source.cells if grade_id(c)}
    found, by_content = _match(learner.cells, release.cells)
    cells: list[NotebookNode] = []
    checks: dict[int, tuple[str, str]] = {}
    taken = set(found.values())
    extra_after: dict[int, list[NotebookNode]] = {}
    last = -1
    for index, cell in enumerate(learner.cells):  # learner-added cells, keyed by the matched cell before
        if index in taken:
            last = index
        elif cell.cell_type in ("code", "markdown"):
            extra_after.setdefault(last, []).append(_plain(cell))
    cells += extra_after.get(-1, [])
    for cell in release.cells:
        gid = grade_id(cell)
        new = nbformat.from_dict(dict(cell))
        new.metadata = nbformat.from_dict(dict(cell.metadata))
        if is_answer(cell) and gid in found:
            new.source = learner.cells[found[gid]].source
        elif not is_answer(cell) and gid in instructor:
            new.source = instructor[gid].source
        if new.cell_type == "code":
            new.outputs, new.execution_count = [], None
        if is_test(new):
            match = HIDDEN_CHECK.search(new.source)
            if match:
                checks[len(cells)] = (match.group(1), match.group(2))
        cells.append(new)
        if gid in found:
            cells += extra_after.get(found[gid], [])
    nb = nbformat.v4.new_notebook(cells=cells, metadata=release.metadata)
    return Rebuilt(nb, checks, by_content)


def _plain(cell: NotebookNode) -> NotebookNode:
    """A learner-added cell, without nbgrader metadata or outputs."""
    if cell.cell_type == "code":
        return nbformat.v4.new_code_cell(cell.source)
    return nbformat.v4.new_markdown_cell(cell.source)


def for_sandbox(rebuilt: Rebuilt) -> NotebookNode:
    """The notebook the sandbox runs: each test cell calls the harvest module instead of its checks."""
    nb = nbformat.from_dict(dict(rebuilt.notebook))
    nb.cells = [nbformat.from_dict(dict(c)) for c in rebuilt.notebook.cells]
    for index, cell in enumerate(nb.cells):
        if is_test(cell):
            check, function = rebuilt.checks.get(index, (None, None))
            cell.source = (
                f"import {HARVEST_MODULE}\n{HARVEST_MODULE}.collect({grade_id(cell)!r}, {check!r}, "
                f"globals().get({function!r}))"
                if check
                else "pass"
            )
    return nb
