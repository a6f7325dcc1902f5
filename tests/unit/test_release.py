"""tools/release.py: each check of a release refuses what it must, on a small copy of the repository
(git, no network; the as-shipped test it then runs is tests/e2e/test_install.py's)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

import release  # noqa: E402  (tools/release.py)

FILES = ("pyproject.toml", "patchlab/__init__.py", "course.toml", "README.md", "_config.yml",
         "exercises/residual_patching/residual_patching.ipynb")


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@localhost", "-c", "commit.gpgsign=false",
                           "-c", "tag.gpgsign=false", *args], cwd=repo, capture_output=True, text=True, check=True).stdout


def commit(repo: Path) -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "change")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A committed copy of the files the checks read, its course.toml naming a real repository."""
    for name in FILES:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    course = tmp_path / "course.toml"
    course.write_text("\n".join(line for line in course.read_text(encoding="utf-8").splitlines()
                                if not line.startswith("placeholder")) + "\n", encoding="utf-8")
    git(tmp_path, "init", "-q")
    commit(tmp_path)
    return tmp_path


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new), encoding="utf-8")


def test_a_consistent_clean_commit_passes_and_gets_the_commands_to_publish_it(repo: Path) -> None:
    assert release.placeholder(repo) is None and release.problems(repo) == []
    head = git(repo, "rev-parse", "HEAD").strip()
    version = release.package_version(repo)
    assert release.publish_commands(repo)[0] == f"git tag v{version} {head}"
    assert release.publish_commands(repo)[-1] == "git push --tags"


def test_the_version_must_agree_in_pyproject_and_the_module(repo: Path) -> None:
    edit(repo / "patchlab/__init__.py", '__version__ = "0.1.0"', '__version__ = "0.1.1"')
    commit(repo)
    assert release.problems(repo) == [
        "patchlab/__init__.py: __version__ is '0.1.1', pyproject.toml's version '0.1.0'"]


def test_course_toml_must_name_the_release_tag(repo: Path) -> None:
    edit(repo / "pyproject.toml", 'version = "0.1.0"', 'version = "0.2.0"')
    edit(repo / "patchlab/__init__.py", '__version__ = "0.1.0"', '__version__ = "0.2.0"')
    commit(repo)
    found = release.problems(repo)
    assert len(found) == 1 and "ref is 'v0.1.0', not the release tag 'v0.2.0'" in found[0]


def test_every_notebook_must_install_the_tag(repo: Path) -> None:
    edit(repo / "exercises/residual_patching/residual_patching.ipynb", "activation-patching@v0.1.0",
         "activation-patching@v0.0.9")
    commit(repo)
    found = release.problems(repo)
    assert found and all("residual_patching.ipynb" in line for line in found)


def test_the_tree_must_be_clean(repo: Path) -> None:
    (repo / "notes.txt").write_text("uncommitted\n", encoding="utf-8")
    found = release.problems(repo)
    assert len(found) == 1 and found[0].startswith("the working tree is not clean") and "notes.txt" in found[0]


def test_the_tag_must_not_name_another_commit(repo: Path) -> None:
    git(repo, "tag", "v0.1.0")
    assert release.problems(repo) == []  # already on this commit: fine
    (repo / "README.md").write_text("changed\n", encoding="utf-8")
    commit(repo)
    found = release.problems(repo)
    assert len(found) == 1 and found[0].startswith("the tag v0.1.0 already names another commit")


def test_a_placeholder_repository_is_refused_in_one_line_unless_dry_run(repo: Path, capsys) -> None:
    shutil.copy(ROOT / "course.toml", repo / "course.toml")  # the repository's own: still the placeholder
    assert release.main([], root=repo) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a placeholder" in err
    # --dry-run goes on to the other checks (here the uncommitted course.toml stops it before the test)
    assert release.main(["--dry-run"], root=repo) == 1
    err = capsys.readouterr().err
    assert "placeholder" not in err and "the working tree is not clean" in err
