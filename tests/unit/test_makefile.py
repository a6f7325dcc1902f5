"""`make book` and `make test` set up the venv when it is missing, once (a stamp file), `make test`
runs both tiers and the released exercise notebooks through nbval, `make test-fast` the unit tier
alone. Checked with make's dry run (nothing is executed)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def dry_run(target: str, venv: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k != "TORCH_INDEX"}  # the default, whatever CI exports
    result = subprocess.run(["make", "-n", target, f"VENV={venv}"], cwd=ROOT, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("target", ["book", "test", "test-fast", "setup"])
def test_each_command_sets_up_a_missing_venv_then_reuses_it(target: str, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    fresh = dry_run(target, venv)
    assert f"-m venv {venv}" in fresh and "pip install -r requirements.txt" in fresh
    assert "--extra-index-url https://download.pytorch.org/whl/cpu torch" in fresh  # CPU torch first

    (venv / "bin").mkdir(parents=True)
    (venv / ".installed").touch()
    newer = max(os.stat(ROOT / name).st_mtime for name in ("pyproject.toml", "requirements.txt", "constraints.txt"))
    os.utime(venv / ".installed", (newer + 10, newer + 10))
    again = dry_run(target, venv)
    assert "-m venv" not in again and "pip install" not in again


def test_make_test_runs_the_suite_and_nbval_over_the_exercises(tmp_path: Path) -> None:
    commands = dry_run("test", tmp_path / "venv")
    assert "OMP_NUM_THREADS=1 " in commands and "-m pytest -q -n 2 --dist loadscope --durations=25\n" in commands
    nbval = next(line for line in commands.replace("\\\n", " ").splitlines() if "--nbval-lax" in line)
    assert "PATCHLAB_MODEL=ioi-mini" in nbval and "exercises/*/*.ipynb" in nbval and "book/" not in nbval
    assert "-n 2 --dist loadscope" in nbval


def test_make_test_fast_runs_the_unit_tier_alone(tmp_path: Path) -> None:
    (pytest_line,) = [line for line in dry_run("test-fast", tmp_path / "venv").splitlines() if "-m pytest" in line]
    assert pytest_line.startswith("OMP_NUM_THREADS=1 ") and pytest_line.split()[-1] == "tests/unit"
    assert "nbval" not in pytest_line and "tests/e2e" not in pytest_line and "-m \"not slow\"" in pytest_line


def test_make_test_lints_the_library_and_the_grader_first(tmp_path: Path) -> None:
    commands = dry_run("test", tmp_path / "venv").splitlines()
    ruff = next(i for i, line in enumerate(commands) if "/ruff check patchlab patchlab_dev autograder" in line)
    ruff_format = next(i for i, line in enumerate(commands) if "/ruff format --check patchlab patchlab_dev autograder" in line)
    mypy = next(i for i, line in enumerate(commands) if line.endswith("/mypy"))
    first_pytest = next(i for i, line in enumerate(commands) if "-m pytest" in line)
    assert max(ruff, ruff_format, mypy) < first_pytest
