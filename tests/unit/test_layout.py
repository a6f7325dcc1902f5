"""The suite's layout (tests/README.md): every test module in a tier, each module name once."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_every_test_module_is_in_a_tier_once() -> None:
    flat = sorted(p.name for p in TESTS.glob("test_*.py"))
    assert flat == [], f"move {flat} into tests/unit/ or tests/e2e/ (git mv; the rule: tests/README.md)"
    modules = [p.name for p in TESTS.rglob("test_*.py") if "fixtures" not in p.parts]
    assert {p.parent.name for p in TESTS.rglob("test_*.py") if "fixtures" not in p.parts} == {"unit", "e2e"}
    twice = sorted(name for name, count in Counter(modules).items() if count > 1)
    assert twice == [], f"test module names used twice (pytest imports them by name): {twice}"
