"""One setting for where the course lives: course.toml drives every install line and Colab link."""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

import notebooks  # noqa: E402  (tools/notebooks.py)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def test_every_install_line_colab_link_and_badge_follows_course_toml() -> None:
    assert notebooks.disagreeing(ROOT) == [], "run: python tools/notebooks.py repoint"


def test_notebooks_install_the_package_version_they_were_written_for() -> None:
    """The ref is the tag of this version (or a commit): a notebook and the package it installs match."""
    course = notebooks.load_course(ROOT)
    version = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    assert course.ref == f"v{version}" or re.fullmatch(r"[0-9a-f]{40}", course.ref), (
        f"course.toml's ref {course.ref!r} is neither the tag v{version} nor a commit")
    assert course.install.endswith(f"@{course.ref}")


def test_repoint_moves_every_link_of_a_copy_and_the_check_fails_until_it_runs(tmp_path: Path) -> None:
    for pattern in ("README.md", "_config.yml", "course.toml", "book/*.md", "book/references.bib",
                    "solutions/*/*.md", "exercises/*/*.ipynb"):
        for path in ROOT.glob(pattern):
            (tmp_path / path.relative_to(ROOT)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, tmp_path / path.relative_to(ROOT))
    # links to another repository's files survive the rewrite, even to a path this repository has too
    other = "https://colab.research.google.com/github/TransformerLensOrg/TransformerLens/blob/main/demos/Main_Demo.ipynb"
    other_readme = "https://github.com/TransformerLensOrg/TransformerLens/blob/main/README.md"
    readme = tmp_path / "README.md"
    readme.write_text(readme.read_text(encoding="utf-8") + f"\n[demo]({other}), [TL]({other_readme})\n",
                      encoding="utf-8")
    old = notebooks.load_course(ROOT)
    assert notebooks.disagreeing(tmp_path) == []

    (tmp_path / "course.toml").write_text(
        '[course]\nrepository = "https://github.com/Someone/fork"\nref = "0123456789abcdef0123456789abcdef01234567"\n',
        encoding="utf-8")
    new = notebooks.load_course(tmp_path)
    assert new.pages == "https://someone.github.io/fork"
    assert len(notebooks.disagreeing(tmp_path)) >= len(notebooks.linked_files(tmp_path))  # each disagrees now

    written = notebooks.repoint(tmp_path, release=False)
    assert tmp_path / "book" / "welcome.ipynb" in written
    # what is left is the learner notebooks, which `python -m autograder release` regenerates
    assert [line.split(":")[0] for line in notebooks.disagreeing(tmp_path)] == [
        str(path.relative_to(ROOT)) for path in sorted(ROOT.glob("exercises/*/*.ipynb"))]
    for path in notebooks.linked_files(tmp_path) + sorted(tmp_path.glob("book/*.ipynb")):
        text = path.read_text(encoding="utf-8")
        assert old.repository not in text and old.slug not in text, f"{path.name} still points at {old.slug}"
    welcome = (tmp_path / "book" / "welcome.md").read_text(encoding="utf-8")
    assert f"({new.colab('book/welcome.ipynb')})" in welcome
    assert f'%pip install -q "patchlab @ git+https://github.com/Someone/fork@{new.ref}"' in welcome
    assert "git clone https://github.com/Someone/fork\ncd fork" in welcome
    assert "url: https://github.com/Someone/fork" in (tmp_path / "_config.yml").read_text(encoding="utf-8")
    assert other in readme.read_text(encoding="utf-8") and other_readme in readme.read_text(encoding="utf-8")
    cells = nbformat.read(tmp_path / "book" / "welcome.ipynb", as_version=4).cells
    assert "https://someone.github.io/fork/book/references.html" in cells[0].source


def test_a_malformed_setting_says_what_to_write(tmp_path: Path) -> None:
    (tmp_path / "course.toml").write_text('[course]\nrepository = "gitlab.com/x"\nref = "v1"\n', encoding="utf-8")
    try:
        notebooks.load_course(tmp_path)
    except SystemExit as exit_:
        assert "repository = \"https://github.com/OWNER/NAME\"" in str(exit_)
    else:
        raise AssertionError("a malformed course.toml was accepted")


def run_install_cell(prelude: str, isolated: bool) -> tuple[list[str], list[str]]:
    """The first cell of every notebook, run in a fresh interpreter after ``prelude``, its ``%pip``
    line recording what it would install; (the installs, the printed lines)."""
    import subprocess

    cell = re.sub(r'%pip install -q "([^"]+)"', r'PIP.append("\1")', notebooks.load_course(ROOT).install_cell)
    code = f"{prelude}\nPIP = []\n{cell}\nprint('PIP', PIP)"
    flags = ["-I", "-S"] if isolated else []  # -S: no site-packages, so no patchlab
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # (not isolated: patchlab importable from this checkout)
    out = subprocess.run([sys.executable, *flags, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    *printed, last = out.splitlines()
    return eval(last.removeprefix("PIP ")), printed


def test_install_cell_installs_once_in_colab_and_elsewhere_says_how() -> None:
    course = notebooks.load_course(ROOT)
    colab = "import sys, types\nsys.modules['google.colab'] = types.ModuleType('google.colab')\n"
    having = "import importlib.metadata as m\nm.version = lambda name: {!r}\n"
    assert run_install_cell(colab, isolated=True) == ([course.install], [])  # nothing installed yet
    assert run_install_cell(colab + having.format("0.0.9"), isolated=True) == ([course.install], [])
    assert run_install_cell(colab + having.format(course.version), isolated=False) == ([], [])  # a second notebook
    # outside Colab: one line with the exact command when patchlab is missing, nothing when it is there
    assert run_install_cell("", isolated=True) == ([], [f'{notebooks.INSTALL_HINT} pip install "{course.install}"'])
    assert run_install_cell("", isolated=False) == ([], [])
