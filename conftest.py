"""pytest set-up for nbval's run of the reader notebooks (``make test``).

The learner notebooks in exercises/ run as learners get them: unsolved. A cell that calls an
exercise function still raising ``NotImplementedError``, or that uses a name such a cell was to
define (``NameError``), is an expected failure (xfail); any other error fails the run. The
kernels talk to pytest over IPC sockets (see ``IPCKernelManager``).
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import tempfile

import nbval.kernel
import pytest
from jupyter_client.manager import KernelManager

ANSI = re.compile(r"\x1b\[[0-9;]*m")
# This pytest process's folder of kernel sockets: an absolute path, as nbval starts each kernel in
# its notebook's folder.
SOCKETS = tempfile.mkdtemp(prefix="nbval-ipc-")
atexit.register(shutil.rmtree, SOCKETS, True)


class IPCKernelManager(KernelManager):
    """nbval's kernels talk over IPC sockets, not TCP ports. jupyter_client picks a kernel's ports
    by asking for free ones and releasing them; two pytest workers starting kernels at the same
    moment can be given the same port, and the kernel that loses dies before replying to
    kernel_info. A CI run failed that way: every cell of one worker's first notebook errored with
    "Kernel died before replying to kernel_info", and the same notebooks passed when run again."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(transport="ipc", ip=os.path.join(SOCKETS, "kernel"), **kwargs)


nbval.kernel.KernelManager = IPCKernelManager  # what nbval.kernel.start_new_kernel instantiates


def _expecting_unsolved_exercises(item: pytest.Item):
    run, notebook = item.runtest, item.parent

    def runtest() -> None:
        try:
            run()
        except Exception as error:  # nbval's NbCellError carries the kernel's traceback
            lines = [l for l in ANSI.sub("", str(getattr(error, "inner_traceback", "") or "")).splitlines() if l.strip()]
            last = lines[-1] if lines else ""
            undefined = re.match(r"NameError: name '(\w+)' is not defined", last)
            unsolved = getattr(notebook, "unsolved_names", set())
            if last.startswith("NotImplementedError") or (undefined and undefined.group(1) in unsolved):
                notebook.unsolved_names = unsolved | set(re.findall(r"^(\w+)\s*=", item.cell.source, re.M))
                pytest.xfail(f"unsolved exercise: {last}")
            raise

    return runtest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if type(item).__name__ == "IPyNbCell" and "exercises" in item.path.parts:
            item.runtest = _expecting_unsolved_exercises(item)
