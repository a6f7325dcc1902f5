"""Check that this commit can be published as a release, test it as learners get it, and print the
commands that publish it (``make release``).

    python tools/release.py            # every check, the as-shipped test, then the commands to run
    python tools/release.py --dry-run  # the same while course.toml still names the placeholder repository

The checks: the version in pyproject.toml is ``patchlab.__version__``; course.toml's ref is its tag
``v`` + version and its repository is not the placeholder; every notebook's install line and Colab
link use that tag and every .ipynb matches its .md (``tools/notebooks.py check``); the working tree is
clean; the tag is free or already on this commit. Then ``tests/e2e/test_install.py``: the wheel and sdist,
and the install from a tagged local remote into a Colab-like venv running every reader notebook.
Nothing is tagged or pushed: the commands are printed for the maintainer to run.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

sys.path.insert(0, str(Path(__file__).resolve().parent))
import notebooks  # noqa: E402  (tools/notebooks.py)

ROOT = Path(__file__).resolve().parent.parent
AS_SHIPPED = [sys.executable, "-m", "pytest", "-q", "-rP", "-p", "no:xdist", "-p", "no:cacheprovider", "tests/e2e/test_install.py"]


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()


def package_version(root: Path) -> str:
    return tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]


def module_version(root: Path) -> str | None:
    """``patchlab.__version__`` as written in patchlab/__init__.py (read, not imported)."""
    found = re.search(r'^__version__ = "([^"]+)"$', (root / "patchlab" / "__init__.py").read_text(encoding="utf-8"), re.M)
    return found.group(1) if found else None


def placeholder(root: Path) -> str | None:
    """Why course.toml's repository is not a real one yet (``placeholder = true`` in its [course]
    table, removed by the maintainer who sets the real address), or None."""
    table = tomllib.loads((root / notebooks.COURSE_FILE).read_text(encoding="utf-8")).get("course", {})
    if table.get("placeholder", False):
        return (f"{notebooks.COURSE_FILE}: repository {table.get('repository')!r} is a placeholder: set the real "
                "repository, delete `placeholder = true`, run python tools/notebooks.py repoint and commit "
                "(or pass --dry-run to check everything else)")
    return None


def problems(root: Path = ROOT) -> list[str]:
    """One line per reason this commit cannot be released as it is (empty when it can)."""
    version, course = package_version(root), notebooks.load_course(root)
    tag, found = f"v{version}", []
    if module_version(root) != version:
        found.append(f"patchlab/__init__.py: __version__ is {module_version(root)!r}, pyproject.toml's version {version!r}")
    if course.ref != tag:
        found.append(f"{notebooks.COURSE_FILE}: ref is {course.ref!r}, not the release tag {tag!r}: set ref = \"{tag}\" "
                     "and run python tools/notebooks.py repoint")
    found += [f"{md.with_suffix('.ipynb').relative_to(root)}: {reason} (run python tools/notebooks.py sync)"
              for md in notebooks.notebook_sources(root) if (reason := notebooks.stale(md))]
    found += notebooks.disagreeing(root)
    dirty = git(root, "status", "--porcelain")
    if dirty:
        found.append(f"the working tree is not clean (commit or stash first):\n{dirty}")
    tagged = subprocess.run(["git", "rev-parse", "-q", "--verify", f"refs/tags/{tag}^{{commit}}"], cwd=root,
                            capture_output=True, text=True).stdout.strip()
    if tagged and tagged != git(root, "rev-parse", "HEAD"):
        found.append(f"the tag {tag} already names another commit ({tagged[:12]}): raise the version in "
                     "pyproject.toml and patchlab/__init__.py")
    return found


def publish_commands(root: Path = ROOT) -> list[str]:
    """What the maintainer runs to publish this commit as the release."""
    tag, head = f"v{package_version(root)}", git(root, "rev-parse", "HEAD")
    branch = git(root, "rev-parse", "--abbrev-ref", "HEAD")
    return [f"git tag {tag} {head}", f"git push origin {branch}", "git push --tags"]


def main(argv: list[str] | None = None, root: Path = ROOT) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true",
                        help="go on while course.toml's repository is the placeholder (nothing can be published then)")
    args = parser.parse_args(argv)
    refused = placeholder(root)
    if refused and not args.dry_run:
        print(refused, file=sys.stderr)
        return 1
    found = problems(root)
    for line in found:
        print(line, file=sys.stderr)
    if found:
        return 1
    print(f"checks passed; running the as-shipped test: {' '.join(AS_SHIPPED[2:])}", flush=True)
    if subprocess.run(AS_SHIPPED, cwd=root).returncode != 0:
        print("the as-shipped test failed: nothing to publish", file=sys.stderr)
        return 1
    if refused:
        print(f"dry run: all checks and the as-shipped test passed, but {refused.split(':')[0]}'s repository "
              "is a placeholder; once it is set, these would publish the release:")
    else:
        print("ready: publish the release with")
    for command in publish_commands(root):
        print(f"    {command}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
