"""Keep the committed .ipynb copies of the MyST notebooks (book/, solutions/) in step with their .md.

The .md files are the truth; each .ipynb beside one is a plain jupytext conversion of it (what
``jupytext --to ipynb`` writes), without outputs. Cell ids are derived from the cells, so a
conversion is reproducible and the check can compare files exactly (jupytext itself draws random
ids; the check ignores ids, so a file converted by plain jupytext passes too).

    python tools/notebooks.py sync    # write every .ipynb from its .md
    python tools/notebooks.py check   # exit 1, listing the .ipynb that differ from a fresh conversion
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import jupytext
import nbformat

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ("book", "solutions")


def is_notebook_md(path: Path) -> bool:
    """True for a MyST notebook: a .md whose YAML header names a jupytext format or a kernel."""
    text = path.read_text(encoding="utf-8")
    if not text.startswith("---\n"):
        return False
    header = text[4:].split("\n---", 1)[0]
    return any(line.startswith(("jupytext:", "kernelspec:")) for line in header.splitlines())


def notebook_sources(root: Path = ROOT, folders: tuple[str, ...] = FOLDERS) -> list[Path]:
    """Every MyST notebook under ``folders`` (build outputs and static files left out)."""
    found = []
    for folder in folders:
        for path in sorted((root / folder).rglob("*.md")):
            parts = set(path.relative_to(root).parts)
            if parts & {"_build", "_static", ".ipynb_checkpoints"}:
                continue
            if is_notebook_md(path):
                found.append(path)
    return found


def convert(md_path: Path) -> str:
    """The .ipynb text of ``md_path`` (jupytext conversion, ids derived from index and source)."""
    notebook = jupytext.read(md_path, fmt="md:myst")
    for index, cell in enumerate(notebook.cells):
        digest = hashlib.sha1(f"{index}\n{cell.cell_type}\n{cell.source}".encode()).hexdigest()
        cell["id"] = digest[:8]
    return jupytext.writes(notebook, fmt="ipynb")


def _without_ids(text: str) -> dict:
    notebook = nbformat.reads(text, as_version=4)
    for cell in notebook.cells:
        cell.pop("id", None)
    return notebook


def stale(md_path: Path) -> str | None:
    """Why the .ipynb beside ``md_path`` is out of date, or None if it matches a fresh conversion."""
    ipynb = md_path.with_suffix(".ipynb")
    if not ipynb.exists():
        return "missing"
    if _without_ids(ipynb.read_text(encoding="utf-8")) != _without_ids(convert(md_path)):
        return "differs from its .md"
    return None


def sync(paths: list[Path]) -> list[Path]:
    """Write the .ipynb of each source whose copy is missing or stale; return those written."""
    written = []
    for md_path in paths:
        if stale(md_path):
            md_path.with_suffix(".ipynb").write_text(convert(md_path), encoding="utf-8")
            written.append(md_path.with_suffix(".ipynb"))
    return written


def check(paths: list[Path]) -> list[str]:
    """One line per .ipynb that is missing or differs from a fresh conversion of its .md."""
    problems = []
    for md_path in paths:
        reason = stale(md_path)
        if reason:
            problems.append(f"{md_path.with_suffix('.ipynb').relative_to(ROOT)}: {reason}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("sync", "check"))
    parser.add_argument("folders", nargs="*", default=list(FOLDERS), help="folders to scan (default: book solutions)")
    args = parser.parse_args(argv)
    paths = notebook_sources(ROOT, tuple(args.folders))
    if args.command == "sync":
        for path in sync(paths):
            print(f"wrote {path.relative_to(ROOT)}")
        return 0
    problems = check(paths)
    for line in problems:
        print(line)
    if problems:
        print("run: python tools/notebooks.py sync", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
