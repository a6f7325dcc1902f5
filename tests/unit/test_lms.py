"""The LMS on both sides (``autograder/lms.py``): the roster, the import of Canvas, Moodle and
Gradescope downloads (the fakes of ``tests/fixtures/lms/build.py``, named as each LMS documents), and
the Canvas, Moodle and per-question CSV exports of a graded class read from nbgrader's gradebook."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timezone
from pathlib import Path

import pytest

from autograder import lms, results
from autograder.__main__ import main
from grading import load_module

build = load_module("lms_fixtures", "tests/fixtures/lms/build.py")


@pytest.fixture
def roster(tmp_path: Path) -> lms.Roster:
    return lms.read_roster(build.write_roster(tmp_path / "roster.csv"))


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build.graded_out(tmp_path_factory.mktemp("graded") / "out")


def rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


# --- the roster ---------------------------------------------------------------------------------
def test_a_roster_is_read_with_its_columns_in_any_order(tmp_path: Path) -> None:
    path = tmp_path / "roster.csv"
    path.write_text("\ufeffEmail,LMS_ID,Name,ID,section\nada@example.edu,1001,Ada Lovelace,ada,A\n\n", encoding="utf-8")
    assert lms.read_roster(path).people == [lms.Person("ada", "Ada Lovelace", "ada@example.edu", "1001")]


def test_every_bad_roster_row_gets_one_line_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "roster.csv"
    path.write_text("id,name,email,lms_id\n"
                    "ada,Ada Lovelace,ada@example.edu,1001\n"
                    "-x,Minus,minus@example.edu,1\n"  # line 3: not a learner id
                    "bo,,bo@example.edu,2\n"  # line 4: no name
                    "cy,Cy Young,not-an-email,3\n"  # line 5
                    "ADA,Ada Again,ada2@example.edu,4\n"  # line 6: the same id but for case
                    "dee,Dee Dunn,dee@example.edu,1001\n"  # line 7: the same Canvas id
                    "eve,Evans, Eve,eve@example.edu,5\n"  # line 8: an unquoted comma
                    "fay,Fay Far,fay@example.edu,6\n", encoding="utf-8")
    with pytest.raises(lms.LMSError) as err:
        lms.read_roster(path)
    lines = str(err.value).splitlines()
    assert [line.split(":")[0] for line in lines] == [f"{path} line {n}" for n in (3, 4, 5, 6, 7, 8)], lines
    assert "'-x' is not a usable learner id" in lines[0] and "no name" in lines[1]
    assert "'not-an-email' is not an email address" in lines[2]
    assert "id 'ADA' is also on line 2" in lines[3] and "lms_id '1001' is also on line 2" in lines[4]
    assert "double quotes" in lines[5]


@pytest.mark.parametrize("text, says", [
    ("name,email\nAda,ada@example.edu\n", "missing: id, lms_id"),
    ("id,name,email,lms_id\n", "lists nobody"),
])
def test_a_roster_without_its_columns_or_learners_is_refused_in_one_line(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "roster.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(lms.LMSError, match=says):
        lms.read_roster(path)


def test_a_roster_not_in_utf8_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "roster.csv"
    path.write_bytes("id,name,email,lms_id\nzoe,Zoë,z@example.edu,1\n".encode("latin-1"))
    with pytest.raises(lms.LMSError, match="CSV UTF-8"):
        lms.read_roster(path)


# --- import -------------------------------------------------------------------------------------
def imported(folder: Path) -> dict[str, str]:
    """Learner -> the download file its notebook came from (each fake notebook names its file)."""
    return {p.stem: p.read_text(encoding="utf-8").split("# ", 1)[1].split('"')[0]
            for p in folder.glob("*.ipynb")}


def sidecar(folder: Path) -> dict[str, dict[str, str]]:
    with open(folder / lms.SIDECAR, newline="", encoding="utf-8") as handle:
        return {row["student"]: row for row in csv.DictReader(handle)}


def expected(files: dict[str, str | None]) -> dict[str, str]:
    return {who: name for name, whom in files.items() if whom for who in whom.split("+")}


def test_canvas_names_are_mapped_by_user_id_and_late_marks_kept(tmp_path: Path, roster: lms.Roster) -> None:
    report = lms.import_download(build.canvas_zip(tmp_path / "canvas.zip"), "canvas", roster, tmp_path / "subs")
    assert imported(tmp_path / "subs") == expected(build.CANVAS)
    not_mapped = [name for name, who in build.CANVAS.items() if who is None]
    assert len(report.problems) == len(not_mapped) - 1  # cy's two notebooks: one line
    for name in not_mapped:
        assert sum(name in line for line in report.problems) == 1, (name, report.problems)
    assert any("9999" in line and "not on the roster" in line for line in report.problems)
    assert any(line.startswith("cy: 2 notebooks") for line in report.problems)
    marks = {s: (row["lms"], row["late"], row["submitted_at"]) for s, row in sidecar(tmp_path / "subs").items()}
    assert marks == {"ada": ("canvas", "false", ""), "bob": ("canvas", "true", ""), "zoë": ("canvas", "false", "")}


def test_moodle_folders_and_flat_names_are_mapped_by_full_name(tmp_path: Path, roster: lms.Roster) -> None:
    report = lms.import_download(build.moodle_folder(tmp_path / "moodle"), "moodle", roster, tmp_path / "subs")
    assert imported(tmp_path / "subs") == expected(build.MOODLE)  # zoë's name decomposed (NFD) in the download
    assert len(report.problems) == sum(who is None for who in build.MOODLE.values())
    assert any("onlinetext" in line for line in report.problems)
    assert any("matches 2 learners of the roster (sam1, sam2)" in line for line in report.problems)
    assert any("Nobody Here" in line and "not on the roster" in line for line in report.problems)
    assert any(line.startswith("Participant_320") and "blind marking" in line for line in report.problems)


def test_a_gradescope_export_is_mapped_by_its_metadata(tmp_path: Path, roster: lms.Roster) -> None:
    report = lms.import_download(build.gradescope_zip(tmp_path / "gs.zip"), "gradescope", roster, tmp_path / "subs")
    assert imported(tmp_path / "subs") == expected(build.GRADESCOPE)  # bob by email, cy by sid = lms_id
    assert len(report.problems) == 2
    assert any("stray.ipynb" in line for line in report.problems)
    assert any("Stranger" in line and "not on the roster" in line for line in report.problems)
    times = {s: row["submitted_at"] for s, row in sidecar(tmp_path / "subs").items()}
    assert times == {"ada": "2026-12-01T09:15:00.123456-08:00", "bob": "2026-12-02T23:59:59+00:00",
                     "cy": "2026-12-02T23:59:59+00:00"}


def test_a_download_of_another_lms_maps_nothing_and_says_so(tmp_path: Path, roster: lms.Roster) -> None:
    report = lms.import_download(build.canvas_zip(tmp_path / "canvas.zip"), "moodle", roster, tmp_path / "subs")
    assert report.written == 0 and len(report.problems) == len(build.CANVAS)
    with pytest.raises(lms.LMSError, match="one submission_metadata.yml, this download 0"):
        lms.import_download(tmp_path / "canvas.zip", "gradescope", roster, tmp_path / "subs")


def test_an_existing_submission_is_replaced_only_when_asked_and_always_named(tmp_path: Path,
                                                                           roster: lms.Roster) -> None:
    download, subs = build.canvas_zip(tmp_path / "canvas.zip"), tmp_path / "subs"
    subs.mkdir()
    (subs / "ada.ipynb").write_text("ada's earlier notebook", encoding="utf-8")
    (subs / lms.SIDECAR).write_text("student,lms,submitted_at,late,source\nkim,canvas,,true,x.ipynb\n",
                                    encoding="utf-8")
    report = lms.import_download(download, "canvas", roster, subs)
    assert (subs / "ada.ipynb").read_text(encoding="utf-8") == "ada's earlier notebook"
    assert any(line.startswith("ada.ipynb exists and differs") and "--replace" in line for line in report.problems)
    assert set(sidecar(subs)) == {"kim", "bob", "zoë"}  # kim kept; ada's row is not the kept notebook's
    again = lms.import_download(download, "canvas", roster, subs, replace=True)
    assert "ada: replaced by lovelaceada_1001_5001_residual_patching.ipynb" in again.lines
    assert "bob: unchanged (bobbybob_late_1002_5002_residual_patching-1.ipynb)" in again.lines
    assert again.written == 1 and imported(subs)["ada"] == "lovelaceada_1001_5001_residual_patching.ipynb"
    assert [p.name for p in subs.iterdir() if p.name.endswith(".tmp")] == []


def test_links_in_a_download_are_reported_not_followed(tmp_path: Path, roster: lms.Roster) -> None:
    download = tmp_path / "canvas"
    download.mkdir()
    secret = tmp_path / "secret.ipynb"
    secret.write_text("not the learner's", encoding="utf-8")
    (download / "lovelaceada_1001_5001_residual_patching.ipynb").symlink_to(secret)
    report = lms.import_download(download, "canvas", roster, tmp_path / "subs")
    assert report.written == 0 and report.problems == ["lovelaceada_1001_5001_residual_patching.ipynb: a symbolic "
                                                       "link: not followed"]


def test_the_grader_does_not_take_the_sidecar_for_a_submission(tmp_path: Path, roster: lms.Roster) -> None:
    from autograder.grade import inventory

    lms.import_download(build.canvas_zip(tmp_path / "canvas.zip"), "canvas", roster, tmp_path / "subs")
    subs, skipped = inventory(tmp_path / "subs")
    assert sorted(s.student for s in subs) == ["ada", "bob", "zoë"] and skipped == []


def test_import_on_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    build.write_roster(tmp_path / "roster.csv")
    code = main(["import", str(build.gradescope_zip(tmp_path / "gs.zip")), "--lms", "gradescope", "--roster",
                 str(tmp_path / "roster.csv"), "--into", str(tmp_path / "subs")])
    printed = capsys.readouterr().out.splitlines()
    assert code == 0 and printed[-1] == f"3 notebooks written into {tmp_path / 'subs'}, 2 files not imported"
    assert sum(line.startswith("not imported: ") for line in printed) == 2
    (tmp_path / "bad.csv").write_text("id,name,email,lms_id\n-x,,,\n", encoding="utf-8")
    assert main(["import", str(tmp_path / "gs.zip"), "--lms", "gradescope", "--roster", str(tmp_path / "bad.csv"),
                 "--into", str(tmp_path / "subs")]) == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'bad.csv'} line 2: ")


# --- export -------------------------------------------------------------------------------------
def total(student: str) -> float:
    """A learner's total computed from the fixture's numbers: the hand-given score where there is one."""
    return sum(manual if manual is not None else auto or 0 for auto, manual in build.SCORES[student].values())


def test_results_come_from_the_gradebook_in_the_notebooks_question_order(out: Path) -> None:
    res = results.read(out, build.ASSIGNMENT)
    assert [q.name for q in res.questions] == list(build.QUESTIONS)  # the gradebook holds them reversed
    assert res.max_score == sum(build.QUESTIONS.values())
    assert res.learners["ada"].status == "graded" and res.learners["ada"].score == total("ada")  # scored since
    assert res.learners["cy"].status == "needs_manual_grade" and res.learners["cy"].scores["interpretation"] is None
    assert res.learners["dee"].score is None and set(res.learners["dee"].scores.values()) == {None}  # timed out
    assert res.learners["eve"].status == "crashed" and res.learners["eve"].score is None  # never in the gradebook
    assert ".DS_Store" not in res.learners


def test_the_canvas_file_has_canvas_columns_points_possible_and_every_learner(out: Path, roster: lms.Roster) -> None:
    done = lms.export(results.read(out, build.ASSIGNMENT), "canvas", roster, "4242")
    table = rows(done.text)
    assert table[0] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", "residual_patching (4242)",
                        *(f"residual_patching: {q}" for q in build.QUESTIONS)]
    assert table[1] == ["Points Possible", "", "", "", "", "8", "2", "3", "1", "2"]
    assert [r[:2] for r in table[2:]] == [[name, lms_id] for _, name, _, lms_id in build.ROSTER]
    by_id = {r[1]: r for r in table[2:]}
    for student, _, _, lms_id in build.ROSTER:
        row = by_id[lms_id]
        if student in ("ada", "bob", "zoë"):
            assert float(row[5]) == total(student)
            assert [float(x) for x in row[6:]] == [build.SCORES[student][q][1] if build.SCORES[student][q][1]
                                                  is not None else build.SCORES[student][q][0] for q in build.QUESTIONS]
        elif student == "cy":  # awaiting manual grading: the answer's column empty
            assert row[5] == "2" and row[9] == ""
        else:  # timed out, crashed or never submitted: empty, never 0
            assert row[5:] == [""] * 5, row
    assert "gus: graded but not on the roster: left out (add them to the roster)" in done.notes
    assert "fay: no submission: listed as missing" in done.notes
    assert "cy: awaiting manual grading: its total lacks those points" in done.notes


def test_a_canvas_file_without_an_assignment_id_titles_the_column_by_name(out: Path, roster: lms.Roster) -> None:
    assert rows(lms.export(results.read(out, build.ASSIGNMENT), "canvas", roster).text)[0][5] == "residual_patching"
    with pytest.raises(lms.LMSError, match="give --roster"):
        lms.export(results.read(out, build.ASSIGNMENT), "canvas")


def test_the_moodle_file_maps_by_email_or_id_number_and_lists_the_missing(out: Path, roster: lms.Roster) -> None:
    table = rows(lms.export(results.read(out, build.ASSIGNMENT), "moodle", roster).text)
    assert table[0] == ["ID number", "Email address", "Full name", "residual_patching",
                        *(f"residual_patching: {q}" for q in build.QUESTIONS), "Status"]
    got = {r[0]: (r[1], r[3], r[-1]) for r in table[1:]}
    assert got == {
        "ada": ("ada@example.edu", "8", "graded"), "bob": ("bob@example.edu", "4", "graded"),
        "cy": ("cy@example.edu", "2", "needs_manual_grade"), "dee": ("dee@example.edu", "", "timed_out"),
        "eve": ("eve@example.edu", "", "crashed"), "zoë": ("zoe@example.edu", "2.5", "graded"),
        "fay": ("fay@example.edu", "", "missing"), "sam1": ("sam1@example.edu", "", "missing"),
        "sam2": ("sam2@example.edu", "", "missing")}


def test_without_a_roster_the_moodle_file_lists_the_graded_learners_by_id_number(out: Path) -> None:
    table = rows(lms.export(results.read(out, build.ASSIGNMENT), "moodle").text)
    assert [r[0] for r in table[1:]] == sorted(set(build.SCORES) | {"eve"}) and {r[1] for r in table[1:]} == {""}


def test_a_damaged_zip_is_refused_in_one_line(tmp_path: Path, roster: lms.Roster) -> None:
    data = build.canvas_zip(tmp_path / "canvas.zip").read_bytes()
    (tmp_path / "cut.zip").write_bytes(data[:len(data) // 2] + data[-22:])  # its end record kept, half its files
    with pytest.raises(lms.LMSError, match="damaged zip file"):
        lms.import_download(tmp_path / "cut.zip", "canvas", roster, tmp_path / "subs")


def test_the_plain_csv_has_one_row_per_learner_and_question(out: Path, roster: lms.Roster) -> None:
    table = rows(lms.export(results.read(out, build.ASSIGNMENT), "csv", roster).text)
    assert table[0] == ["student", "name", "email", "lms_id", "status", "question", "score", "max_score"]
    learners = [p[0] for p in build.ROSTER] + ["gus"]  # the roster's order, then graded learners it lacks
    assert [r[0] for r in table[1:]] == [s for s in learners for _ in range(len(build.QUESTIONS) + 1)]
    got = {(r[0], r[5]): (r[6], r[7]) for r in table[1:]}
    for student in ("bob", "zoë", "gus"):
        assert float(got[student, "total"][0]) == total(student)
        for q, points in build.QUESTIONS.items():
            assert got[student, q][1] == f"{points:g}"
    assert got["fay", "total"] == ("", "8") and {r[4] for r in table[1:] if r[0] == "fay"} == {"missing"}


def test_export_on_the_command_line_writes_the_file(out: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    build.write_roster(tmp_path / "roster.csv")
    target = tmp_path / "to-canvas.csv"
    assert main(["export", str(out), "--assignment", build.ASSIGNMENT, "--format", "canvas", "--roster",
                 str(tmp_path / "roster.csv"), "--canvas-assignment-id", "4242", "--to", str(target)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"wrote {target}"
    assert rows(target.read_text(encoding="utf-8"))[0][5] == "residual_patching (4242)"
    assert main(["export", str(tmp_path / "nowhere"), "--assignment", build.ASSIGNMENT, "--format", "csv"]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert main(["export", str(out), "--assignment", "logit_difference", "--format", "csv"]) == 2
    assert capsys.readouterr().err.strip().endswith("holds no grades of 'logit_difference': check --assignment")


def test_the_sidecars_times_are_read_for_the_late_rule(tmp_path):
    (tmp_path / lms.SIDECAR).write_text(
        "student,lms,submitted_at,late,source\n"
        "ada,gradescope,2026-01-10T06:00:00+00:00,,a.ipynb\n"
        "bob,canvas,,late,b.ipynb\n"          # Canvas's late mark without a time: the file's time decides
        "cy,gradescope,2026-01-10T06:00,,c.ipynb\n"  # no UTC offset: not trusted to be UTC
        "dee,gradescope,yesterday,,d.ipynb\n", encoding="utf-8")
    assert lms.submitted_times(tmp_path) == {"ada": datetime(2026, 1, 10, 6, tzinfo=timezone.utc)}
    assert lms.submitted_times(tmp_path / "nowhere") == {}
    (tmp_path / lms.SIDECAR).write_text("who,when\nada,now\n", encoding="utf-8")
    with pytest.raises(lms.LMSError, match="not the file import writes"):
        lms.submitted_times(tmp_path)
