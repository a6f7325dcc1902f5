"""The class at a glance (``autograder/summary.py``): the summary page of a graded class (the output
folder of ``tests/fixtures/lms/build.py``), its numbers checked against the fixture's own, its
learner text escaped (the page in headless Chromium: tests/e2e/test_summary_browser.py)."""

from __future__ import annotations

import html
import statistics
from collections import Counter
from pathlib import Path

import pytest

from autograder import results, summary
from autograder.__main__ import main
from grading import load_module

build = load_module("lms_fixtures", "tests/fixtures/lms/build.py")
SCORED = ("ada", "bob", "cy", "zoë", "gus")  # dee timed out, eve crashed: no score


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build.graded_out(tmp_path_factory.mktemp("graded") / "out")


@pytest.fixture(scope="module")
def page(out: Path) -> str:
    return summary.of(out, build.ASSIGNMENT)


def score(student: str, question: str) -> float | None:
    auto, manual = build.SCORES[student][question]
    return manual if manual is not None else auto


def totals() -> dict[str, float]:
    return {s: sum(score(s, q) or 0 for q in build.QUESTIONS) for s in SCORED}


@pytest.mark.parametrize("scores, maximum", [([0, 0.5, 2.5, 2.5, 8], 8), ([0, 7, 7, 33, 40], 40), ([99, 100], 100)])
def test_histogram_bins_count_each_score_once_at_its_nearest_step(scores: list[float], maximum: float) -> None:
    step, centres, counts = summary.bins(scores, maximum)
    assert centres[0] == 0 and centres[-1] >= maximum and sum(counts) == len(scores)
    assert all(b - a == step for a, b in zip(centres, centres[1:]))
    nearest = Counter(min(centres, key=lambda c: abs(c - s)) for s in scores)
    assert dict(zip(centres, counts)) == {c: nearest.get(c, 0) for c in centres}


def test_the_histogram_shows_the_scored_learners(out: Path) -> None:
    res = results.read(out, build.ASSIGNMENT)
    scored = sorted(x.score for x in res.learners.values() if x.status in summary.SCORED)
    assert scored == sorted(totals().values())
    html_part = summary.histogram(res)
    assert 'id="histogram"' in html_part and f"Scores of {len(SCORED)} learners (out of 8)" in html_part
    assert f"Mean {statistics.mean(totals().values()):.2f}" in html_part and "1 still to grade by hand" in html_part


def test_question_means_are_over_the_learners_whose_run_ended(out: Path) -> None:
    means = summary.question_means(results.read(out, build.ASSIGNMENT))
    assert [m[0] for m in means] == list(build.QUESTIONS)
    for name, points, mean, n in means:
        given = [score(s, name) for s in SCORED if score(s, name) is not None]
        assert points == build.QUESTIONS[name] and n == len(given) and mean == pytest.approx(statistics.mean(given))


def test_diagnoses_are_named_counted_and_their_learners_listed(out: Path) -> None:
    found = [(d.name, d.question, d.learners) for d in summary.diagnoses(out, results.read(out, build.ASSIGNMENT))]
    assert found == [
        ("sign_flipped", "test_residual_patching", ["bob", "zoë"]),
        ("resid_mid", "test_patch_residual_hook", ["zoë"]),
        ("resid_mid", "test_residual_patching", ["cy"]),
        (summary.UNNAMED, "test_plot_residual_patching", ["cy"]),
    ]


def test_the_page_escapes_learner_text_and_lists_who_stopped(page: str) -> None:
    assert build.HOSTILE not in page and html.escape(build.HOSTILE) in page  # dee's detail, escaped
    assert page.count(html.escape(build.HOSTILE)) == 1  # the unnamed diagnosis shows its title only
    stopped = page.split("<h2>Timed out and crashed</h2>", 1)[1]
    assert "<td>dee</td><td>timed_out</td>" in stopped and "<td>eve</td><td>crashed</td>" in stopped
    assert "Sign flipped <span class=muted>(sign_flipped)</span>" in page and "<td>bob, zoë</td>" in page


def test_the_page_says_the_grading_time_and_carries_plotly_once(page: str) -> None:
    assert "7 submissions executed in 84.0 s, 12.0 s per submission; --jobs 2; sandbox bwrap" in page
    from plotly.offline import get_plotlyjs

    assert page.count("plotly.js v") == 1 and page.count(get_plotlyjs()) == 1
    rest = page.replace(get_plotlyjs(), "")  # the page's own markup and figures: nothing fetched
    assert "<script src" not in rest and "https://" not in rest


def test_summary_on_the_command_line(out: Path, capsys: pytest.CaptureFixture) -> None:
    (out / summary.PAGE).unlink(missing_ok=True)
    assert main(["summary", str(out), "--assignment", build.ASSIGNMENT]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out / summary.PAGE}"
    assert (out / summary.PAGE).read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert main(["summary", str(out), "--assignment", "logit_difference"]) == 2
    assert "holds no grades of 'logit_difference'" in capsys.readouterr().err


def test_every_grading_run_commits_its_summary_page(tmp_path: Path) -> None:
    """The hook in ``grade()``: here a run that executes nothing (no submission, ``--no-run``)."""
    from autograder.grade import grade

    (tmp_path / "subs").mkdir()
    (tmp_path / "subs" / "notes.txt").write_text("not a submission", encoding="utf-8")
    grade(tmp_path / "subs", "logit_difference", tmp_path / "out", run=False)
    written = (tmp_path / "out" / summary.PAGE).read_text(encoding="utf-8")
    assert "<h1>logit_difference: the class at a glance</h1>" in written and "No learner has a score yet" in written
