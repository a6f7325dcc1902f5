"""Run by the learner's kernel as it starts, before the notebook's first cell: import the course's
libraries ahead of the notebook, with the cyclic garbage collector paused meanwhile, then freeze
what the imports left (``gc.freeze``) so that later collections do not walk it again.

Copied into the sandbox as ``{grader}/autograder_preload.py``; the runner starts the kernel with
``IPKernelApp.exec_lines`` = ``__import__("autograder_preload").preload("torch,patchlab,...")``, which
binds no name in the learner's namespace: a notebook that forgets ``import torch`` still fails as it
would anywhere else. Nothing is judged here, and a module that does not import is left for the
notebook to import (and fail on) itself.

Why: importing torch, transformers and TransformerLens is about 7 of the 17-19 s a
``residual_patching`` submission runs for; the collector runs hundreds of times while those thousands of modules load, and every full
collection afterwards (in the learner's loops) walks their millions of objects again.
"""

from __future__ import annotations

import gc
import importlib


def preload(modules: str) -> None:
    """Import every module of the comma-separated ``modules`` (errors ignored), then freeze the heap."""
    gc.disable()
    try:
        for name in filter(None, modules.split(",")):
            try:
                importlib.import_module(name)
            except Exception:  # the notebook's own import will say what is wrong
                pass
    finally:
        gc.enable()
    gc.freeze()
