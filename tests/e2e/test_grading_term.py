"""A term with one class (issue 17): the class graded, a written answer scored in nbgrader's formgrader,
a learner graded again alone, a late submission graded into the same folder with a penalty, a hand
score with `score`, the class reported again with `--no-run`, a learner who changes the answer
scored by hand graded again; nothing a run did not grade is lost.
The record itself (autograder/classrecord.py, autograder/late.py) and the notebook triage are tested
without grading, below."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import nbformat
import pytest

from autograder import restore
from autograder.classrecord import ClassRecord, RecordError
from autograder.config import assignments, environment, release_notebook
from autograder.grade import Grade, stopped_cells
from autograder.late import LatePolicy, LateRuleError, combine
from grading import ENV, HAS_BWRAP, LIMITS, autograder, fixtures, grade, page_text, read_grades, snapshot  # tests/grading.py

RP = "residual_patching"
DEADLINE = "2026-01-10T00:00:00+00:00"


def handed_in(path: Path, when: str) -> None:
    stamp = datetime.fromisoformat(when).timestamp()
    os.utime(path, (stamp, stamp))


def formgrader_score(out: Path, student: str, cell: str, points: float, comment: str) -> None:
    """What nbgrader's formgrader does when a score and a comment are typed in: the grade row's
    manual_score and the comment row's manual_comment, through nbgrader's Gradebook."""
    from nbgrader.api import Gradebook

    with environment(), Gradebook(f"sqlite:///{out / 'nbgrader' / 'gradebook.db'}") as gb:
        grade_row = gb.find_grade(cell, RP, RP, student)
        grade_row.manual_score = points
        grade_row.needs_manual_grade = False
        gb.find_comment(cell, RP, RP, student).manual_comment = comment
        gb.db.commit()


@pytest.fixture(scope="module")
def term(tmp_path_factory):
    if not HAS_BWRAP and not os.environ.get("CI"):
        pytest.skip("bubblewrap is not installed")
    base = tmp_path_factory.mktemp("term")
    by_name = {f.name: f for f in fixtures.RESIDUAL_RERUN}
    klass, late, out = base / "class", base / "late", base / "graded"
    fixtures.write([by_name["answered"], by_name["untouched"]], klass)
    # a notebook of another assignment, handed in by mistake
    (klass / "wrong.ipynb").write_text(fixtures.build(fixtures.LOGIT_DIFFERENCE[0]), encoding="utf-8")
    for path in klass.iterdir():
        handed_in(path, "2026-01-09T12:00:00+00:00")
    late.mkdir()
    (late / "latecomer.ipynb").write_text(fixtures.build(by_name["answered"]), encoding="utf-8")
    handed_in(late / "latecomer.ipynb", "2026-01-11T12:00:00+00:00")  # 1.5 days late: 2 days started

    seen = {}
    seen["first_out"] = grade(klass, RP, out, *LIMITS, "--deadline", DEADLINE).stdout
    seen["first"] = read_grades(out)
    seen["first_page"] = page_text(out / "feedback" / "answered.html")
    seen["first_html"] = (out / "feedback" / "answered.html").read_text(encoding="utf-8")
    seen["first_pages"] = snapshot(out / "feedback")
    formgrader_score(out, "answered", "interpretation", 1.5, "Entered in formgrader.")
    grade(klass, RP, out, "--no-run")
    seen["no_run"] = read_grades(out)
    seen["no_run_page"] = page_text(out / "feedback" / "answered.html")
    seen["no_run_pages"] = snapshot(out / "feedback")
    seen["no_run_record"] = json.loads((out / "run.json").read_text(encoding="utf-8"))
    seen["no_run_log"] = (out / "grading.log").read_text(encoding="utf-8")
    grade(klass, RP, out, *LIMITS, "--student", "answered")
    seen["again"] = read_grades(out)
    seen["again_log"] = (out / "grading.log").read_text(encoding="utf-8")
    grade(late, RP, out, *LIMITS, "--late-penalty", "10%/day")
    seen["late"] = read_grades(out)
    scored = subprocess.run(autograder("score", out, "--assignment", RP, "--student", "latecomer", "--cell",
                                       "interpretation", "--points", "2", "--comment", "Name the heads."),
                            env=ENV, capture_output=True, text=True)
    assert scored.returncode == 0, scored.stderr
    grade(late, RP, out, "--no-run")
    seen["final"] = read_grades(out)
    seen["final_page"] = page_text(out / "feedback" / "latecomer.html")
    seen["record"] = json.loads((out / "run.json").read_text(encoding="utf-8"))
    seen["pages"] = sorted(p.name for p in (out / "feedback").glob("*.html"))
    # the LMS's time of the late submission (as `import` writes it) wins over the file's
    (late / ".lms.csv").write_text("student,lms,submitted_at,late,source\n"
                                   "latecomer,gradescope,2026-01-10T06:00:00+00:00,,latecomer.ipynb\n", encoding="utf-8")
    grade(late, RP, out, "--no-run")
    seen["lms_time"] = read_grades(out)
    # The learner hands in a new answer to the question scored in formgrader and is graded again alone.
    changed = nbformat.read(klass / "answered.ipynb", as_version=4)
    next(c for c in changed.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "interpretation").source = (
        "A different answer.")
    nbformat.write(changed, klass / "answered.ipynb")
    handed_in(klass / "answered.ipynb", "2026-01-09T18:00:00+00:00")  # before the deadline too
    grade(klass, RP, out, *LIMITS, "--student", "answered")
    seen["changed"] = read_grades(out)
    seen["changed_log"] = (out / "grading.log").read_text(encoding="utf-8")
    return seen


@pytest.mark.slow
def test_a_notebook_of_another_assignment_is_skipped_with_a_reason(term):
    row = term["first"]["wrong"]
    assert row["status"] == "skipped" and row["score"] == ""
    assert "a notebook of logit_difference, not residual_patching" in row["detail"]
    assert "wrong.html" not in term["pages"]
    assert term["final"]["wrong"] == row  # kept by --no-run and by the runs of other learners


@pytest.mark.slow
def test_progress_is_one_line_per_learner_with_its_time_and_outcome(term):
    lines = [line for line in term["first_out"].splitlines() if line.startswith("  [")]
    assert len(lines) == 2, term["first_out"]
    assert any("answered: needs_manual_grade 6/8 in " in line and " s (to grade by hand: interpretation)" in line
               for line in lines), lines


@pytest.mark.slow
def test_an_unscored_answer_awaits_the_instructor_and_questions_are_titled(term):
    page = term["first_page"]
    assert "awaiting your instructor: 2 points" in page and "Awaiting your instructor: 2 points" in page
    assert "Score: 0.0 / 2.0" not in page and "Test cell" not in page
    assert "6.2 The layer × position loop" in page and "6.4 Interpretation" in page
    assert "white-space: pre-wrap" in term["first_html"]


@pytest.mark.slow
def test_per_question_points_and_the_late_columns(term):
    row = term["first"]["answered"]
    assert [row[q] for q in ("test_patch_residual_hook", "test_residual_patching", "test_plot_residual_patching",
                             "interpretation")] == ["2", "3", "1", ""]
    assert row["submitted"] == "2026-01-09T12:00:00+00:00" and row["late"] == "0.00" and row["penalty"] == "0"


@pytest.mark.slow
def test_a_formgrader_score_survives_no_run_and_a_rerun(term):
    for step in ("no_run", "again"):
        row = term[step]["answered"]
        assert (row["score"], row["status"], row["interpretation"]) == ("7.5", "graded", "1.5"), (step, row)
    assert "Entered in formgrader." in term["no_run_page"]
    assert "changed since it was scored" not in term["again_log"]
    # --no-run writes the very same page for a learner whose grade did not change
    assert term["no_run_pages"]["untouched.html"] == term["first_pages"]["untouched.html"]
    assert term["no_run_pages"]["answered.html"] != term["first_pages"]["answered.html"]


@pytest.mark.slow
def test_a_hand_score_is_dropped_when_its_answer_changes(term):
    before, after = term["lms_time"], term["changed"]
    row = after["answered"]
    assert (row["status"], row["score"], row["interpretation"]) == ("needs_manual_grade", "6", ""), row
    assert "the answer 'interpretation' changed since it was scored (1.5 points" in term["changed_log"]
    assert {name: r for name, r in after.items() if name != "answered"} == {
        name: r for name, r in before.items() if name != "answered"}


@pytest.mark.slow
def test_no_run_keeps_the_run_record_and_appends_its_own(term):
    record = term["no_run_record"]
    assert [run["executed"] for run in record["runs"]] == [True, False]
    assert record["runs"][0]["sandbox"] == "bwrap" and "sandbox" not in record["runs"][1]
    assert record["learners"] == {"answered": 0, "untouched": 0}
    log = term["no_run_log"]
    assert "answered: ran in " in log and "untouched: ran in " in log and "grading run 2: " in log


@pytest.mark.slow
def test_a_late_submission_graded_into_the_class_keeps_every_other_row(term):
    late, final = term["late"], term["final"]
    assert set(late) == set(final) == {"answered", "untouched", "wrong", "latecomer"}
    for student in ("answered", "untouched", "wrong"):
        assert late[student] == term["again"][student] == final[student], student
    assert final["answered"]["score"] == "7.5"  # the formgrader score, still there
    row = late["latecomer"]
    assert (row["status"], row["late"], row["penalty"], row["score"]) == ("needs_manual_grade", "1.50", "1.6", "4.4")
    row = final["latecomer"]
    assert (row["status"], row["penalty"], row["score"], row["interpretation"]) == ("graded", "1.6", "6.4", "2")
    assert "Late submission penalty" in term["final_page"] and "Name the heads." in term["final_page"]
    assert {"answered.html", "untouched.html", "latecomer.html"} <= set(term["pages"])
    runs = term["record"]["runs"]
    assert [run["executed"] for run in runs] == [True, False, True, True, False]
    assert runs[3]["late"] == {"deadline": DEADLINE, "percent_per_day": 10.0, "max_percent": 100.0}
    assert term["record"]["learners"] == {"answered": 2, "latecomer": 3, "untouched": 0}


@pytest.mark.slow
def test_the_lms_submission_time_decides_lateness(term):
    row = term["lms_time"]["latecomer"]
    assert (row["submitted"], row["late"], row["penalty"], row["score"]) == (
        "2026-01-10T06:00:00+00:00", "0.25", "0.8", "7.2"), row


# --- without grading ---------------------------------------------------------------------------

def test_the_late_rule_counts_started_days_and_caps_the_penalty():
    policy = LatePolicy(datetime(2026, 1, 10, tzinfo=timezone.utc), 10.0, 25.0)
    at = lambda text: datetime.fromisoformat(text)  # noqa: E731
    assert policy.penalty(at("2026-01-09T23:59:59+00:00"), 8) == 0
    assert policy.penalty(at("2026-01-10T00:00:01+00:00"), 8) == pytest.approx(0.8)
    assert policy.penalty(at("2026-01-11T12:00:00+00:00"), 8) == pytest.approx(1.6)
    assert policy.penalty(at("2026-01-20T00:00:00+00:00"), 8) == pytest.approx(2.0)  # capped at 25%
    assert policy.days_late(at("2026-01-11T12:00:00+00:00")) == pytest.approx(1.5)
    kept = combine(None, "5%/day", None, policy.record())
    assert (kept.deadline, kept.percent_per_day, kept.max_percent) == (policy.deadline, 5.0, 25.0)
    assert combine(None, None, None, None) is None
    for options, message in (((None, "10%/day", None), "give --deadline"), (("tomorrow", None, None), "ISO 8601"),
                             ((DEADLINE, "10%", None), "per day"), ((DEADLINE, None, "150%"), "0 to 100")):
        with pytest.raises(LateRuleError, match=message):
            combine(*options, None)


def test_the_class_record_adds_and_updates_rows_and_never_drops_one(tmp_path):
    old = {"assignment": RP, "model": "ioi-mini", "sandbox": "bwrap", "executed": True}  # an older grader's
    (tmp_path / "run.json").write_text(json.dumps(old), encoding="utf-8")
    (tmp_path / "grades.csv").write_text("student,score,max_score,status,detail\nada,5,8,graded,\nbob,3,8,graded,\n",
                                         encoding="utf-8")
    (tmp_path / "grading.log").write_text("grading run: {}\nada: ran in 1.0 s\n", encoding="utf-8")
    book = ClassRecord.load(tmp_path)
    with pytest.raises(RecordError, match="holds the grades of residual_patching"):
        book.check("logit_difference", tmp_path)
    kept = book.update([Grade("bob", 6, 8, "graded", questions={"q1": 6}).row(),
                        Grade("ada", None, None, "skipped", "a notebook of logit_difference").row(),
                        Grade("cy", 1, 8, "graded", questions={"q1": 1}).row()],
                       {"assignment": RP, "executed": True, "sandbox": "bwrap"}, ["bob: ran in 2.0 s"], ["bob", "cy"])
    assert kept == ["ada: a notebook of logit_difference; its earlier result is kept"]
    files = book.files(["q1"])
    rows = [line.split(",") for line in files["grades.csv"].splitlines()]
    assert rows[0] == ["student", "score", "max_score", "status", "detail", "submitted", "late", "penalty", "q1"]
    assert [r[:4] for r in rows[1:]] == [["ada", "5", "8", "graded"], ["bob", "6", "8", "graded"],
                                         ["cy", "1", "8", "graded"]]
    assert rows[2][8] == "6" and rows[1][8] == ""
    assert files["grading.log"].startswith("grading run: {}\nada: ran in 1.0 s\ngrading run 2: ")
    assert files["grading.log"].endswith("bob: ran in 2.0 s\nada: a notebook of logit_difference; its earlier result "
                                         "is kept\n")
    record = json.loads(files["run.json"])
    assert record["runs"][0] == old and record["learners"] == {"bob": 1, "cy": 1}


def test_every_fixture_belongs_to_its_own_assignment_and_to_no_other():
    found = {name: restore.marks(nbformat.read(release_notebook(name), as_version=4)) for name in assignments()}
    own = {name: found[name] - set().union(*(m for o, m in found.items() if o != name)) for name in found}
    for group, members in fixtures.GROUPS.items():
        for fixture in members:
            try:
                nb = nbformat.reads(fixtures.build(fixture), as_version=4)
            except Exception:  # the broken upload: left to its run
                continue
            assert [name for name in own if restore.belongs(nb, own[name])] == [fixture.assignment], fixture.name
    assert not restore.belongs(nbformat.v4.new_notebook(), own[RP])


def test_stopped_cells_are_named_with_their_exercise_and_limit():
    nb = nbformat.read(release_notebook("logit_difference"), as_version=4)
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    error = lambda name: nbformat.v4.new_output("error", ename=name, evalue="", traceback=[])  # noqa: E731
    nb.cells[code[-2]].outputs = [error("CellTimeoutError")]
    nb.cells[code[-1]].outputs = [error("KeyboardInterrupt"), error("NotebookTimeoutError")]
    words = stopped_cells(nb)
    assert words.startswith(f"cell {code[-2] + 1} (4.3 The normalised patching metric) stopped by the cell time "
                            "limit (--cell-timeout); ")
    assert words.endswith("stopped by the notebook time limit (--notebook-timeout)")
    nb.cells[code[-2]].outputs, nb.cells[code[-1]].outputs = [], []
    assert stopped_cells(nb) == ""


def test_scores_entered_in_formgrader_during_a_run_are_never_overwritten(tmp_path):
    from autograder.grade import GradingError, OutputFolder

    out = tmp_path / "graded"
    (out / "nbgrader").mkdir(parents=True)
    live = out / "nbgrader" / "gradebook.db"
    live.write_bytes(b"before the run")
    with OutputFolder(out) as folder:
        (folder.stage() / "nbgrader" / "gradebook.db").write_bytes(b"the run's copy")
        live.write_bytes(b"a score typed into formgrader meanwhile")
        with pytest.raises(GradingError, match="changed during this run"):
            folder.commit({"grades.csv": "new"})
    assert live.read_bytes() == b"a score typed into formgrader meanwhile" and not (out / "grades.csv").exists()
