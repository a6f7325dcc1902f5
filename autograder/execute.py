"""nbgrader's Execute with a whole-notebook time limit and a dead kernel recorded, not raised.

nbgrader alone has only a per-cell timeout, and a kernel that dies (``os.kill``, out of memory)
or stays silent after a timeout aborts the notebook, which then exports as 0 like a real zero.
Here each cell's timeout is also cut to the time left for the notebook; a timeout is always
recorded as a ``CellTimeoutError`` output; once the notebook's time is spent, or once the kernel
died, the remaining cells are not run and get an error output naming the reason
(``NotebookTimeoutError``, ``DeadKernelError``). The grades of the cells that did run are still saved, and
:func:`autograder.grade.run_status` reads the reason back from the outputs.
"""

from __future__ import annotations

import math
import time
from typing import Any

from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbformat import NotebookNode
from nbformat.v4 import new_output
from nbgrader.preprocessors import Execute
from traitlets import Integer

# Error names written into the outputs (nbgrader itself writes CellTimeoutError on a cell timeout).
CELL_TIMEOUT_ERROR = "CellTimeoutError"
NOTEBOOK_TIMEOUT_ERROR = "NotebookTimeoutError"
DEAD_KERNEL_ERROR = "DeadKernelError"


def error_output(ename: str, evalue: str) -> NotebookNode:
    """An error output as a kernel would write it (shown in the feedback)."""
    return new_output("error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"])


class GuardedExecute(Execute):
    """Execute with ``notebook_timeout`` seconds for the whole notebook and dead kernels recorded."""

    notebook_timeout = Integer(600, help="Seconds the whole notebook may run (kernel start included).").tag(
        config=True
    )

    def preprocess(self, nb: NotebookNode, resources: Any = None, km: Any = None) -> tuple[NotebookNode, Any]:
        self._deadline = time.monotonic() + self.notebook_timeout
        self._kernel_died = False
        cell_timeout = self.timeout
        try:
            return super().preprocess(nb, resources, km)
        finally:
            self.timeout = cell_timeout

    def preprocess_cell(self, cell: NotebookNode, resources: Any, index: int) -> tuple[NotebookNode, Any]:
        if cell.cell_type != "code" or not cell.source.strip():
            return super().preprocess_cell(cell, resources, index)
        if self._kernel_died:
            cell.outputs = [error_output(DEAD_KERNEL_ERROR, "not run: the kernel died in an earlier cell")]
            return cell, resources
        left = self._deadline - time.monotonic()
        if left <= 0:
            cell.outputs = [error_output(
                NOTEBOOK_TIMEOUT_ERROR, f"not run: the notebook used up its {self.notebook_timeout} s limit"
            )]
            return cell, resources
        cell_timeout = self.timeout
        self.timeout = max(1, min(cell_timeout or math.inf, math.ceil(left)))
        try:
            return super().preprocess_cell(cell, resources, index)
        except CellTimeoutError:  # raised, not recorded, when the interrupted kernel stays silent
            cell.outputs.append(error_output(CELL_TIMEOUT_ERROR, f"the cell ran past its {self.timeout} s limit"))
            return cell, resources
        except DeadKernelError:
            self._kernel_died = True
            cell.outputs.append(error_output(
                DEAD_KERNEL_ERROR,
                "the kernel died while running this cell (it was killed, ran out of memory or crashed)",
            ))
            return cell, resources
        finally:
            self.timeout = cell_timeout
