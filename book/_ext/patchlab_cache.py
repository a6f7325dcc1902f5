"""Sphinx extension: key the notebook execution cache on the installed ``patchlab`` as well.

myst-nb's cache (jupyter-cache) re-executes a page only when its code cells change. The pages' numbers
also depend on ``patchlab``: its code and the course model's weights. This extension puts the cache in
``_build/.jupyter_cache/<fingerprint of patchlab>``, so a new model or library version re-executes
every page, while an unchanged rebuild still takes seconds. Caches of older fingerprints are removed.
A cache path set by the user (``execute.cache`` in ``_config.yml``) is left alone.
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
from pathlib import Path
from typing import Any

from sphinx.application import Sphinx
from sphinx.config import Config


def patchlab_fingerprint() -> str:
    """A short hash of every file of the installed ``patchlab`` package (code and course model)."""
    spec = importlib.util.find_spec("patchlab")
    if spec is None or spec.origin is None:
        raise RuntimeError("the book needs patchlab installed: pip install -e .")
    package = Path(spec.origin).parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(path.relative_to(package).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def _set_cache_path(app: Sphinx, config: Config) -> None:
    if config.nb_execution_cache_path:
        return
    caches = Path(app.outdir).parent / ".jupyter_cache"
    current = caches / f"patchlab-{patchlab_fingerprint()}"
    if caches.is_dir():
        for old in caches.glob("patchlab-*"):
            if old != current:
                shutil.rmtree(old, ignore_errors=True)
    config.nb_execution_cache_path = str(current)


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("config-inited", _set_cache_path, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
