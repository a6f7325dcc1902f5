"""The sandbox's notebook runner, run here without a sandbox: the kernel's preloaded modules."""

from __future__ import annotations

import shutil
import subprocess
import sys

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

from grading import ROOT


def test_preloaded_modules_are_imported_but_bind_no_name(tmp_path):
    """``--preload`` imports modules as the kernel starts, and the notebook's namespace stays as it
    would be anywhere else: a notebook that forgets ``import colorsys`` still fails on it. (Modules the
    kernel does not import by itself: ipykernel loads ``json``, for one.)"""
    shutil.copy(ROOT / "autograder" / "preload.py", tmp_path / "autograder_preload.py")
    cells = ["import sys\nprint(sorted(m for m in ('colorsys', 'wave') if m in sys.modules), 'colorsys' in dir())",
             "colorsys.rgb_to_hsv(1, 0, 0)", "import gc\nprint(gc.isenabled(), gc.get_freeze_count() > 0)"]
    nbformat.write(new_notebook(cells=[new_code_cell(c) for c in cells]), tmp_path / "in.ipynb")
    subprocess.run([sys.executable, str(ROOT / "autograder" / "runner.py"), "in.ipynb", "out.ipynb",
                    "--cell-timeout", "60", "--notebook-timeout", "120", "--max-output", "1000",
                    "--preload", "colorsys,no_such_module,wave"],
                   cwd=tmp_path, env={"PATH": f"{sys.prefix}/bin:/usr/bin:/bin", "PYTHONPATH": str(tmp_path),
                                      "HOME": str(tmp_path), "JUPYTER_PLATFORM_DIRS": "1"},
                   capture_output=True, check=True, timeout=180)
    loaded, unbound, collector = nbformat.read(tmp_path / "out.ipynb", as_version=4).cells
    assert loaded.outputs[0]["text"] == "['colorsys', 'wave'] False\n"  # a module that fails is skipped
    assert unbound.outputs[0]["ename"] == "NameError"
    assert collector.outputs[0]["text"] == "True True\n"  # the collector back on, the preloaded heap frozen
