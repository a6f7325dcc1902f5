"""nbgrader's OverwriteCells, with deleted cells put back where they were.

nbgrader can re-add a deleted test cell, but only after a graded or answer cell; after any other
cell (our read-only sanity checks) it fails and the whole submission is lost. :class:`RestoreCells`
puts back every deleted test cell and every deleted read-only cell right after the nearest cell
that precedes it in the source notebook, so a notebook is always graded with the original tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat
from nbformat import NotebookNode
from nbgrader.preprocessors import OverwriteCells
from traitlets import Unicode


def grade_id(cell: NotebookNode) -> str | None:
    return cell.metadata.get("nbgrader", {}).get("grade_id")


class RestoreCells(OverwriteCells):
    """Overwrite the read-only and test cells from the gradebook and put back the deleted ones."""

    source_root = Unicode(help="Folder of the source notebooks: SOURCE_ROOT/ASSIGNMENT/NOTEBOOK.ipynb").tag(
        config=True
    )

    def add_missing_grade_cells(self, nb: NotebookNode, resources: Any) -> tuple[NotebookNode, Any]:
        source = nbformat.read(Path(self.source_root) / self.assignment_id / f"{self.notebook_id}.ipynb",
                               as_version=4)
        source_nb = self.gradebook.find_notebook(self.notebook_id, self.assignment_id)
        stored = {cell.name: cell for cell in source_nb.source_cells}
        graded = {cell.name: cell for cell in source_nb.grade_cells}
        answers = {cell.name for cell in source_nb.solution_cells}
        order = [grade_id(cell) for cell in source.cells if grade_id(cell)]
        for position, cell_id in enumerate(order):
            present = {grade_id(cell): index for index, cell in enumerate(nb.cells) if grade_id(cell)}
            if cell_id in present:
                continue
            if cell_id in graded:
                self.log.warning("Missing grade cell %s encountered, adding to notebook", cell_id)
                cell = self.missing_cell_transform(stored[cell_id], graded[cell_id].max_score,
                                                   is_solution=cell_id in answers)
            elif cell_id in stored and stored[cell_id].locked:
                self.log.warning("Missing read-only cell %s encountered, adding to notebook", cell_id)
                cell = next(c for c in source.cells if grade_id(c) == cell_id)
            else:
                continue  # a deleted answer cell stays deleted: its tests fail
            before = [present[earlier] for earlier in order[:position] if earlier in present]
            nb.cells.insert(max(before) + 1 if before else 0, cell)
        return nb, resources
