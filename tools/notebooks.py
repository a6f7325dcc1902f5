"""Keep the committed .ipynb copies of the MyST notebooks (book/, solutions/) in step with their .md,
and every install line, Colab link and badge in step with where the course lives (``course.toml``).

The .md files are the truth; each .ipynb beside one is their jupytext conversion (without outputs)
whose markdown cells are turned into plain Markdown for Colab and Jupyter (``plain_markdown.py``:
citations, notes, cross-references). Cell ids are derived from the cells, so a conversion is
reproducible and the check can compare files exactly (ids are ignored in the comparison).

    python tools/notebooks.py sync      # write every .ipynb from its .md
    python tools/notebooks.py check     # exit 1, listing each .ipynb or link that disagrees
    python tools/notebooks.py repoint   # after editing course.toml: rewrite every install line,
                                        # Colab link and badge, then the notebooks and exercises/
"""

from __future__ import annotations

import argparse
import hashlib
import re
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import jupytext
import nbformat

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover  (jupytext brings tomli on Python 3.10)
    import tomli as tomllib

sys.path.insert(0, str(Path(__file__).resolve().parent))
import plain_markdown  # noqa: E402  (tools/plain_markdown.py)

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ("book", "solutions")
COURSE_FILE = "course.toml"
# The text files whose links and install lines follow course.toml (the .ipynb follow their .md).
LINKED_FILES = ("README.md", "CONTRIBUTING.md", "docs/*.md", "_config.yml", "book/*.md", "solutions/*/*.md")

COLAB_LINK = re.compile(r"https://colab\.research\.google\.com/github/(?P<slug>[\w.-]+/[\w.-]+)/blob/[^/\s)\]>\"']+/"
                        r"(?P<path>[^\s)\]>\"'#]+)")
GITHUB_LINK = re.compile(r"(?P<repo>https://github\.com/[\w.-]+/[\w.-]+)/(?P<kind>blob|tree)/[^/\s)\]>\"']+/"
                         r"(?P<path>[^\s)\]>\"'#]+)")
INSTALL = re.compile(r"patchlab @ git\+(?P<url>https://github\.com/[\w.-]+/[\w.-]+?)(\.git)?(@[\w./-]+)?(?=[\"'\s]|$)")
CLONE = re.compile(r"git clone https://github\.com/[\w.-]+/[\w.-]+?(\.git)?\n(?P<indent>[ \t]*)cd [\w.-]+")
INSTALL_CELL_HEAD = "# patchlab, the course's library: installed once per Colab runtime; elsewhere, by you."
INSTALL_HINT = "patchlab is missing; install it, then restart the kernel:"
# An install cell, as every notebook's first code cell has it (this form, or the earlier three lines).
INSTALL_CELL = re.compile(rf"{re.escape(INSTALL_CELL_HEAD)}\n.*?\n    print\([^\n]*"
                          r'|import sys\n\n?if "google\.colab" in sys\.modules:\n    %pip install -q "patchlab @ git\+[^"\n]+"',
                          re.S)
CONFIG_URL = re.compile(r"^(?P<head>repository:[ \t]*\n(?:[ \t]+.*\n)*?[ \t]+url:[ \t]*)\S+", re.M)


class Course(NamedTuple):
    """Where the course lives: its GitHub repository, the ref learners install and open, the book."""

    repository: str  # https://github.com/OWNER/NAME
    ref: str  # a tag or commit
    pages: str  # the published book, without a trailing slash

    @property
    def slug(self) -> str:
        return self.repository.removeprefix("https://github.com/")

    def colab(self, path: str) -> str:
        """The Colab address that opens the repository file ``path`` at the course's ref."""
        return f"https://colab.research.google.com/github/{self.slug}/blob/{self.ref}/{path}"

    def github(self, path: str, kind: str = "blob") -> str:
        return f"{self.repository}/{kind}/{self.ref}/{path}"

    def raw(self, path: str) -> str:
        return f"https://raw.githubusercontent.com/{self.slug}/{self.ref}/{path}"

    def page(self, path: str) -> str:
        """The published page of the book's source ``path`` (``book/ioi_task.md``)."""
        return f"{self.pages}/{path.removesuffix('.md')}.html"

    @property
    def install(self) -> str:
        """What the first cell of every notebook installs in Colab: patchlab at the course's ref."""
        return f"patchlab @ git+{self.repository}@{self.ref}"

    @property
    def version(self) -> str | None:
        """The patchlab version the ref is the tag of (``v0.1.0`` → ``0.1.0``); None for a commit."""
        return self.ref[1:] if re.fullmatch(r"v\d+(\.\d+)*", self.ref) else None

    @property
    def install_cell(self) -> str:
        """The first code cell of every notebook: in Colab, install patchlab unless this runtime already
        has this version (a second notebook's cell is instant); elsewhere, without patchlab, one line
        saying how to install it."""
        wanted = f'!= "{self.version}"' if self.version else "is None"
        return "\n".join([
            INSTALL_CELL_HEAD,
            "import importlib.metadata",
            "import importlib.util",
            "import sys",
            "",
            "try:",
            '    patchlab_installed = importlib.metadata.version("patchlab")',
            "except importlib.metadata.PackageNotFoundError:",
            "    patchlab_installed = None",
            f'if "google.colab" in sys.modules and patchlab_installed {wanted}:',
            f'    %pip install -q "{self.install}"',
            'elif importlib.util.find_spec("patchlab") is None:',
            f"    print('{INSTALL_HINT} pip install \"{self.install}\"')",
        ])


def load_course(root: Path = ROOT) -> Course:
    """The ``[course]`` table of ``root/course.toml`` (one clear error when it is malformed)."""
    path = root / COURSE_FILE
    table = tomllib.loads(path.read_text(encoding="utf-8")).get("course", {})
    repository, ref = str(table.get("repository", "")).rstrip("/"), str(table.get("ref", ""))
    match = re.fullmatch(r"https://github\.com/([\w.-]+)/([\w.-]+)", repository)
    if not match or not re.fullmatch(r"[\w./-]+", ref):
        raise SystemExit(f"{path}: [course] needs repository = \"https://github.com/OWNER/NAME\" and "
                         f"ref = a tag or commit (got {repository!r}, {ref!r})")
    pages = str(table.get("pages", f"https://{match.group(1).lower()}.github.io/{match.group(2)}")).rstrip("/")
    return Course(repository, ref, pages)


def find_root(path: Path) -> Path:
    """The repository holding ``path`` (the folder with course.toml); this repository otherwise."""
    return next((p for p in Path(path).resolve().parents if (p / COURSE_FILE).is_file()), ROOT)


def site(root: Path = ROOT) -> plain_markdown.Site:
    """Where the plain-Markdown notebooks of ``root`` link to: the published book, files at the ref."""
    course = load_course(root)
    pages = {p.relative_to(root).as_posix(): p.read_text(encoding="utf-8") for p in sorted((root / "book").glob("*.md"))}
    labels, titles = plain_markdown.scan_pages(pages)
    bib = root / "book" / "references.bib"
    citations = plain_markdown.read_bibliography(bib.read_text(encoding="utf-8")) if bib.exists() else {}
    return plain_markdown.Site(page_url=course.page, file_url=course.raw, references="book/references.md",
                               citations=citations, labels=labels, titles=titles)


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
    """The .ipynb text of ``md_path``: jupytext conversion, markdown cells in plain Markdown, ids
    derived from index and source."""
    root = find_root(md_path)
    notebook = jupytext.read(md_path, fmt="md:myst")
    links = site(root)
    source = Path(md_path).resolve().relative_to(root).as_posix() if Path(md_path).resolve().is_relative_to(root) \
        else Path(md_path).name
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "markdown":
            cell.source = plain_markdown.to_markdown(cell.source, source, links)
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


def linked_files(root: Path = ROOT) -> list[Path]:
    """The text files whose install lines, Colab links and badges follow course.toml."""
    return sorted({p for pattern in LINKED_FILES for p in root.glob(pattern) if p.is_file()})


def course_urls(texts: list[str], course: Course) -> set[str]:
    """The repository addresses the files give the course: the setting's, and those their install
    lines and _config.yml still hold (so a bare link to the old address is found and moved too)."""
    urls = {course.repository}
    for text in texts:
        urls |= {m["url"] for m in INSTALL.finditer(text)}
        urls |= {m[0].split()[-1] for m in CONFIG_URL.finditer(text)}
    return urls


def repointed(text: str, course: Course, known: set[str] = frozenset()) -> str:
    """``text`` with every install line, clone command, Jupyter Book repository URL, and every Colab,
    GitHub or bare link to one of the ``known`` course addresses (or the setting's) pointing at
    ``course``. Links to other repositories are left alone."""
    ours = known | {course.repository}
    slugs = {url.removeprefix("https://github.com/") for url in ours}
    text = COLAB_LINK.sub(lambda m: course.colab(m["path"]) if m["slug"] in slugs else m[0], text)
    text = GITHUB_LINK.sub(lambda m: course.github(m["path"], m["kind"]) if m["repo"] in ours else m[0], text)
    text = INSTALL_CELL.sub(lambda m: course.install_cell, text)
    text = INSTALL.sub(course.install, text)
    text = CLONE.sub(lambda m: f"git clone {course.repository}\n{m['indent']}cd {course.slug.split('/')[1]}", text)
    text = CONFIG_URL.sub(lambda m: m["head"] + course.repository, text)
    bare = "|".join(re.escape(url) for url in sorted(ours))
    return re.sub(rf"(?<![\w/+])(?:{bare})(?![\w/.@-])", course.repository, text)


def disagreeing(root: Path = ROOT) -> list[str]:
    """One line per file whose links or install line differ from course.toml (empty when all agree)."""
    course = load_course(root)
    texts = {p: p.read_text(encoding="utf-8") for p in linked_files(root)}
    known = course_urls(list(texts.values()), course)
    problems = [f"{p.relative_to(root)}: links or install line differ from {COURSE_FILE}"
                for p, text in texts.items() if repointed(text, course, known) != text]
    for exercise in sorted(root.glob("exercises/*/*.ipynb")):
        code = [c for c in nbformat.read(exercise, as_version=4).cells if c.cell_type == "code"]
        if not code or course.install_cell not in code[0].source:
            problems.append(f"{exercise.relative_to(root)}: its first cell does not install {course.install}")
    return problems


def repoint(root: Path = ROOT, release: bool = True) -> list[Path]:
    """Rewrite every linked file from course.toml, regenerate the notebooks and (``release``) the
    learner notebooks in exercises/ (``python -m autograder release``); return the files rewritten."""
    course = load_course(root)
    texts = {p: p.read_text(encoding="utf-8") for p in linked_files(root)}
    known = course_urls(list(texts.values()), course)
    written = []
    for path, text in texts.items():
        if repointed(text, course, known) != text:
            path.write_text(repointed(text, course, known), encoding="utf-8")
            written.append(path)
    written += sync(notebook_sources(root, FOLDERS))
    if release and (root / "exercises").is_dir():
        subprocess.run([sys.executable, "-m", "autograder", "release"], cwd=root, check=True)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("sync", "check", "repoint"))
    parser.add_argument("folders", nargs="*", default=list(FOLDERS), help="folders to scan (default: book solutions)")
    args = parser.parse_args(argv)
    paths = notebook_sources(ROOT, tuple(args.folders))
    if args.command == "sync":
        for path in sync(paths):
            print(f"wrote {path.relative_to(ROOT)}")
        return 0
    if args.command == "repoint":
        for path in repoint(ROOT):
            print(f"wrote {path.relative_to(ROOT)}")
        print(f"every install line and Colab link now follows {COURSE_FILE}: {load_course(ROOT).install}")
        return 0
    problems = check(paths) + disagreeing(ROOT)
    for line in problems:
        print(line)
    if problems:
        print("run: python tools/notebooks.py repoint  (it also syncs the notebooks)", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
