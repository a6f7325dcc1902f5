"""Execute a prepared notebook inside the sandbox: the Jupyter client and its kernel, together.

    python runner.py IN.ipynb OUT.ipynb --cell-timeout S --notebook-timeout S --max-output N [--preload M,M]

Runs in the sandbox (no network namespace to cross: client and kernel talk over IPC sockets in the
sandbox's private /tmp). Each code cell gets ``--cell-timeout`` seconds, cut to what is left of
``--notebook-timeout`` (a cell past its limit is interrupted and recorded as ``CellTimeoutError``;
the next cells still run); once the notebook's time is spent or the kernel died, the cells left get
an error output that names why (``NotebookTimeoutError``, ``DeadKernelError``), so the trusted side
can tell "did not run" from "failed". Each output is cut to ``--max-output`` characters, with a note.
OUT is rewritten after every cell, so what ran before a kill is kept. ``--preload`` names modules the
kernel imports as it starts (``autograder_preload``, beside this file), before the first cell.

Nothing here is trusted: learner code runs in the kernel next to it and can change this process or
its files. The grader outside reads OUT as untrusted data.
"""

from __future__ import annotations

import argparse
import math
import os
import time

import nbformat
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbformat.v4 import new_output

CUT = "[output cut: {n} more characters]"


def error_output(ename: str, evalue: str) -> nbformat.NotebookNode:
    return new_output("error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"])


def cut_outputs(cell: nbformat.NotebookNode, limit: int) -> None:
    """Cut every text in the cell's outputs to ``limit`` characters (images over it are dropped)."""
    for output in cell.get("outputs", []):
        if "text" in output and len(output.text) > limit:
            output.text = output.text[:limit] + "\n" + CUT.format(n=len(output.text) - limit)
        if output.get("output_type") == "error":
            output.traceback = [line[:limit] for line in output.get("traceback", [])[-20:]]
            output.evalue = output.get("evalue", "")[:limit]
        data = output.get("data", {})
        for mime in list(data):
            value = data[mime]
            size = len(value) if isinstance(value, str) else len(str(value))
            if size > limit and not mime.startswith("text/"):
                del data[mime]
                data.setdefault("text/plain", CUT.format(n=size))
            elif size > limit and isinstance(value, str):
                data[mime] = value[:limit] + "\n" + CUT.format(n=size - limit)


def save(nb: nbformat.NotebookNode, path: str) -> None:
    tmp = f"{path}.tmp"
    nbformat.write(nb, tmp)
    os.replace(tmp, path)


def execute(
    nb: nbformat.NotebookNode, out: str, cell_timeout: int, notebook_timeout: int, max_output: int, preload: str = ""
) -> None:
    deadline = time.monotonic() + notebook_timeout
    km = AsyncKernelManager(kernel_name="python3", transport="ipc")  # async: a silent kernel cannot block it
    # Binds no name in the learner's namespace (see autograder_preload).
    start = [f"--IPKernelApp.exec_lines=__import__('autograder_preload').preload({preload!r})"] if preload else []
    client = NotebookClient(
        nb,
        km=km,
        timeout=cell_timeout,
        allow_errors=True,
        kernel_name="python3",
        startup_timeout=min(120, notebook_timeout),
        record_timing=False,
        interrupt_on_timeout=True,
        extra_arguments=start,
    )
    stopped: nbformat.NotebookNode | None = None
    try:
        with client.setup_kernel():
            for index, cell in enumerate(nb.cells):
                if cell.cell_type != "code" or not cell.source.strip():
                    continue
                if stopped is not None:
                    cell.outputs = [stopped]
                    continue
                left = deadline - time.monotonic()
                if left <= 0:
                    stopped = error_output(
                        "NotebookTimeoutError", f"not run: the notebook used up its {notebook_timeout} s limit"
                    )
                    cell.outputs = [stopped]
                    continue
                client.timeout = max(1, min(cell_timeout, math.ceil(left)))
                started = time.monotonic()
                try:
                    client.execute_cell(cell, index)
                    interrupted = any(o.get("ename") == "KeyboardInterrupt" for o in cell.outputs)
                    if interrupted and time.monotonic() - started >= client.timeout:  # nbclient interrupted it
                        cell.outputs.append(
                            error_output("CellTimeoutError", f"the cell ran past its {client.timeout} s limit")
                        )
                except CellTimeoutError:
                    cell.outputs.append(
                        error_output("CellTimeoutError", f"the cell ran past its {client.timeout} s limit")
                    )
                except DeadKernelError:
                    cell.outputs.append(
                        error_output(
                            "DeadKernelError",
                            "the kernel died while running this cell (it exited, was killed, "
                            "ran out of memory or crashed)",
                        )
                    )
                    stopped = error_output("DeadKernelError", "not run: the kernel died in an earlier cell")
                cut_outputs(cell, max_output)
                save(nb, out)
    except DeadKernelError:  # the kernel died while starting
        for cell in nb.cells:
            if cell.cell_type == "code":
                cell.outputs = [error_output("DeadKernelError", "not run: the kernel could not start")]
    save(nb, out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("notebook")
    parser.add_argument("out")
    parser.add_argument("--cell-timeout", type=int, required=True)
    parser.add_argument("--notebook-timeout", type=int, required=True)
    parser.add_argument("--max-output", type=int, required=True)
    parser.add_argument("--preload", default="")
    args = parser.parse_args()
    nb = nbformat.read(args.notebook, as_version=4)
    execute(nb, args.out, args.cell_timeout, args.notebook_timeout, args.max_output, args.preload)


if __name__ == "__main__":
    main()
