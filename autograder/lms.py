"""The LMS on both sides: a class roster, submissions downloaded from Canvas, Moodle or Gradescope
turned into ``LEARNER_ID.ipynb`` files, and grade files those LMSs import.

**Roster**: a CSV file with the columns ``id`` (the learner id the grader uses), ``name``, ``email``
and ``lms_id`` (the learner's user id in Canvas); other columns are ignored.

**Import** (``python -m autograder import``): each LMS names the files of a bulk download its own way;
the name is mapped to a learner of the roster, and everything that cannot be mapped is reported, one
line each.

- Canvas ("Download Submissions"): ``{lastfirst}_{late_}{user_id}_{submission_id}_{filename}``,
  matched by ``user_id`` = the roster's ``lms_id``; ``late_`` is Canvas's mark of a late submission.
- Moodle ("Download all submissions"): a folder ``{Full Name}_{participant id}_assignsubmission_file``
  (``..._file_`` before Moodle 4) per learner, or the flat names
  ``{Full Name}_{participant id}_assignsubmission_file_{filename}``, matched by the full name (Moodle's
  participant id is per assignment); a name that two learners of the roster share is reported.
- Gradescope ("Export Submissions"): ``submission_metadata.yml`` and one ``submission_{id}/`` folder
  per submission; its ``:submitters:`` matched by ``:sid:`` (the roster's ``id`` or ``lms_id``) or
  ``:email:``; a group submission is copied to each member.

A download is a folder or a zip file (read in place: nothing of it is extracted, links are not
followed). An existing submission is never replaced unless asked (``--replace``), and then each one
is named. The LMS's own time of each submission, where its format has one (Canvas's ``late_`` mark,
Gradescope's ``:created_at:``), goes into ``SUBMISSIONS_DIR/.lms.csv`` for late-work handling.

**Export** (``python -m autograder export``): scores per learner and per question from nbgrader's
gradebook (:mod:`autograder.results`), every learner of the roster listed (one without a
submission has an empty score):

- ``canvas``: Canvas's gradebook CSV (``Student, ID, SIS User ID, SIS Login ID, Section``, one column
  per assignment titled ``Name (assignment id)``, a ``Points Possible`` row); the assignment's column
  then one column per question, which Canvas's import offers to add as new assignments or ignore.
- ``moodle``: for Moodle's "Import grades: CSV file": ``ID number``, ``Email address`` and
  ``Full name`` (map from "Email address" to "Email address"), the assignment's total and one column
  per question (each mapped to a grade item, a new grade item, or ignored), and ``Status``.
- ``csv``: one row per learner and question (``question`` ``total`` for the whole assignment).
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import os
import re
import unicodedata
import zipfile
import zlib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Callable, Iterator

if TYPE_CHECKING:
    from autograder.results import Results

ROSTER_FIELDS = ("id", "name", "email", "lms_id")
SIDECAR = ".lms.csv"  # in the submissions folder: what the LMS said of each submission
SIDECAR_FIELDS = ("student", "lms", "submitted_at", "late", "source")
FORMATS = ("canvas", "moodle", "csv")
MAX_FILE_BYTES = 100 * 1024 * 1024  # a file of a download read at most (the grader refuses above 20 MiB)
MAX_METADATA_BYTES = 20 * 1024 * 1024
CANVAS_NAME = re.compile(
    r"(?P<who>[^_]*)_(?:(?P<late>late)_)?(?P<user>\d+)_(?P<submission>\d+)_(?P<file>.+)", re.IGNORECASE
)
MOODLE_FOLDER = re.compile(r"(?P<who>.+)_(?P<participant>\d+)_assignsubmission_(?P<plugin>[a-z]+)_?")
MOODLE_FLAT = re.compile(r"(?P<who>.+)_(?P<participant>\d+)_assignsubmission_(?P<plugin>[a-z]+)_(?P<file>.+)")
GRADESCOPE_METADATA = "submission_metadata.yml"


class LMSError(RuntimeError):
    """A roster, download or output folder that cannot be used; one line (per bad row) saying what to do."""


# --- the roster ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Person:
    id: str
    name: str
    email: str = ""
    lms_id: str = ""


@dataclass
class Roster:
    people: list[Person]

    def find(self, key: str, value: str) -> list[Person]:
        """The people whose ``key`` (a field, or ``name``/``email`` compared loosely) is ``value``."""
        loose = key in ("name", "email")
        wanted = normal(value) if loose else value.strip()
        return [
            p
            for p in self.people
            if value.strip() and (normal(getattr(p, key)) if loose else getattr(p, key)) == wanted
        ]


def normal(text: str) -> str:
    """A name or email as compared: Unicode NFC, case folded, ``_`` as a space, spaces collapsed."""
    return " ".join(unicodedata.normalize("NFC", text).replace("_", " ").casefold().split())


def read_roster(path: Path) -> Roster:
    """The roster at ``path``; every bad row is told, one line each, in one :class:`LMSError`."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise LMSError(f"no roster at {path}: write a CSV file with the columns {', '.join(ROSTER_FIELDS)}") from None
    except UnicodeDecodeError:
        raise LMSError(f"{path} is not UTF-8 text: save the roster as 'CSV UTF-8'") from None
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip().lower() for h in reader.fieldnames or []]
    absent = [f for f in ROSTER_FIELDS if f not in header]
    if absent:
        raise LMSError(
            f"{path}: the first line must name the columns {', '.join(ROSTER_FIELDS)} (missing: {', '.join(absent)})"
        )
    reader.fieldnames = header
    from autograder.grade import learner_id  # the ids the grader takes: file names ID.ipynb

    people, problems = [], []
    seen: dict[tuple[str, str], int] = {}
    for row in reader:
        where = f"{path} line {reader.line_num}"
        if None in row:
            problems.append(f"{where}: more fields than columns (a comma in a name? put the name in double quotes)")
            continue
        person = Person(*(unicodedata.normalize("NFC", str(row.get(f) or "").strip()) for f in ROSTER_FIELDS))
        if not any(vars(person).values()):
            continue  # a blank line
        bad = []
        if learner_id(f"{person.id}.ipynb") != person.id:
            bad.append(
                f"id {person.id!r} is not a usable learner id (letters, digits, ._@+-; not starting with . or -)"
            )
        if not person.name:
            bad.append("no name")
        if person.email and not re.fullmatch(r"[^@\s]+@[^@\s]+", person.email):
            bad.append(f"email {person.email!r} is not an email address")
        for key, value in (("id", person.id.casefold()), ("email", person.email.casefold()), ("lms_id", person.lms_id)):
            if value and (key, value) in seen:
                bad.append(f"{key} {getattr(person, key)!r} is also on line {seen[key, value]}")
            elif value:
                seen[key, value] = reader.line_num
        if bad:
            problems.append(f"{where}: {'; '.join(bad)}")
        else:
            people.append(person)
    if problems:
        raise LMSError("\n".join(problems))
    if not people:
        raise LMSError(f"{path} lists nobody: one line per learner under the header {','.join(ROSTER_FIELDS)}")
    return Roster(people)


# --- a download: a folder or a zip, read in place -----------------------------------------------
@dataclass
class Entry:
    """A file of a download: its path inside it (``/``-separated), and its content on demand."""

    path: str
    size: int
    read: Callable[[], bytes]
    problem: str = ""  # why it cannot be read (a link, too large)

    @property
    def name(self) -> str:
        return PurePosixPath(self.path).name


@contextlib.contextmanager
def opened(download: Path) -> Iterator[list[Entry]]:
    """The files of a download folder or zip file, in name order (readable within the ``with``)."""
    if download.is_file() and zipfile.is_zipfile(download):
        try:
            archive = zipfile.ZipFile(download)
        except zipfile.BadZipFile as err:
            raise LMSError(f"{download} is a damaged zip file ({err}): download it again") from None
        with archive:
            found = []
            for info in sorted(archive.infolist(), key=lambda i: i.filename):
                if info.is_dir():
                    continue
                kind = (info.external_attr >> 16) & 0o170000
                problem = "a symbolic link: not followed" if kind == 0o120000 else ""
                if info.file_size > MAX_FILE_BYTES:
                    problem = f"larger than {MAX_FILE_BYTES // 2**20} MiB"
                found.append(
                    Entry(info.filename.lstrip("/"), info.file_size, functools.partial(archive.read, info), problem)
                )
            yield found
        return
    if not download.is_dir():
        raise LMSError(
            f"{download} is neither a folder nor a zip file: give the LMS's download (the zip or the "
            "folder it unzips to)"
        )
    found = []
    for folder, dirs, files in os.walk(download):  # never follows links to folders
        dirs.sort()
        base = Path(folder)
        for name in sorted(files) + sorted(d for d in dirs if (base / d).is_symlink()):
            path = base / name
            relative = path.relative_to(download).as_posix()
            if path.is_symlink():
                found.append(Entry(relative, 0, bytes, "a symbolic link: not followed"))
                continue
            size = path.stat().st_size
            found.append(
                Entry(
                    relative,
                    size,
                    functools.partial(_read_file, path),
                    f"larger than {MAX_FILE_BYTES // 2**20} MiB" if size > MAX_FILE_BYTES else "",
                )
            )
    yield found


def _read_file(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as handle:
        return handle.read(MAX_FILE_BYTES + 1)


# --- mapping each LMS's names to learners -------------------------------------------------------
@dataclass
class Found:
    """A notebook of the download and the learner it belongs to."""

    student: str
    entry: Entry
    submitted_at: str = ""  # ISO 8601, as the LMS gave it
    late: str = ""  # "true" / "false" where the LMS says, else ""


@dataclass
class Mapping:
    found: list[Found] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # one line per file not mapped

    def one(self, people: list[Person], entry: Entry, who: str, **when: str) -> None:
        """``entry`` for the single learner in ``people``, or a line saying why not (``who``: the LMS's words)."""
        if len(people) == 1:
            self.found.append(Found(people[0].id, entry, **when))
        elif not people:
            self.problems.append(f"{entry.path}: {who} is not on the roster")
        else:
            self.problems.append(
                f"{entry.path}: {who} matches {len(people)} learners of the roster "
                f"({', '.join(p.id for p in people)}): copy it by hand as ID.ipynb"
            )


def map_canvas(files: list[Entry], roster: Roster) -> Mapping:
    mapping = Mapping()
    for entry in files:
        match = CANVAS_NAME.fullmatch(entry.name)
        if not match:
            mapping.problems.append(f"{entry.path}: not a Canvas submission name (lastfirst_userid_submissionid_file)")
            continue
        mapping.one(
            roster.find("lms_id", match["user"]),
            entry,
            f"Canvas user {match['user']} ({match['who']})",
            late="true" if match["late"] else "false",
        )
    return mapping


def map_moodle(files: list[Entry], roster: Roster) -> Mapping:
    mapping = Mapping()
    for entry in files:
        parts = PurePosixPath(entry.path).parts
        folder = next((m for m in map(MOODLE_FOLDER.fullmatch, parts[:-1]) if m), None)
        match = folder or MOODLE_FLAT.fullmatch(parts[-1])
        if not match:
            mapping.problems.append(
                f"{entry.path}: not a Moodle submission name (Full Name_participant_assignsubmission_file_...)"
            )
        elif match["plugin"] != "file":
            mapping.problems.append(f"{entry.path}: Moodle's {match['plugin']} submission, not a submitted file")
        elif match["who"] == "Participant" and not roster.find("name", "Participant"):
            mapping.problems.append(
                f"{entry.path}: Moodle's blind marking hides the learner's name: reveal student "
                "identities in the assignment, then download again"
            )
        else:
            mapping.one(
                roster.find("name", match["who"]), entry, f"Moodle participant {match['participant']} ({match['who']})"
            )
    return mapping


def map_gradescope(files: list[Entry], roster: Roster) -> Mapping:
    import yaml

    mapping = Mapping()
    metadata = [e for e in files if e.name == GRADESCOPE_METADATA]
    if len(metadata) != 1:
        raise LMSError(
            f"a Gradescope export holds one {GRADESCOPE_METADATA}, this download {len(metadata)}: "
            "give the zip of Gradescope's 'Export Submissions'"
        )
    base = PurePosixPath(metadata[0].path).parent
    if metadata[0].size > MAX_METADATA_BYTES:
        raise LMSError(f"{metadata[0].path} is larger than {MAX_METADATA_BYTES // 2**20} MiB: not a Gradescope export")
    try:
        data = yaml.safe_load(metadata[0].read())
    except yaml.YAMLError as err:
        raise LMSError(f"{metadata[0].path} is not readable YAML ({type(err).__name__})") from None
    if not isinstance(data, dict):
        raise LMSError(f"{metadata[0].path} does not list submissions")
    for entry in files:
        if entry is metadata[0]:
            continue
        path = PurePosixPath(entry.path)
        parts = (
            path.parts
            if base == PurePosixPath(".")
            else path.relative_to(base).parts
            if path.is_relative_to(base)
            else ()
        )
        record = data.get(parts[0]) if len(parts) > 1 else None
        if not isinstance(record, dict):
            mapping.problems.append(f"{entry.path}: not in a submission folder that {GRADESCOPE_METADATA} lists")
            continue
        submitters = record.get(":submitters")
        created = record.get(":created_at")
        when = created.isoformat() if isinstance(created, datetime) else str(created or "")
        if not isinstance(submitters, list) or not submitters:
            mapping.problems.append(f"{entry.path}: {parts[0]} has no submitters in {GRADESCOPE_METADATA}")
        for submitter in submitters if isinstance(submitters, list) else []:
            if not isinstance(submitter, dict):
                continue
            sid, email = str(submitter.get(":sid") or ""), str(submitter.get(":email") or "")
            people = {
                p.id: p
                for key, value in (("id", sid), ("lms_id", sid), ("email", email))
                for p in roster.find(key, value)
            }
            who = f"Gradescope submitter {submitter.get(':name', '')} (sid {sid or '-'}, {email or 'no email'})"
            mapping.one(list(people.values()), entry, who, submitted_at=when)
    return mapping


MAPPERS = {"canvas": map_canvas, "moodle": map_moodle, "gradescope": map_gradescope}
LMSS = tuple(MAPPERS)


# --- import -------------------------------------------------------------------------------------
@dataclass
class Imported:
    lines: list[str] = field(default_factory=list)  # what happened to each learner's notebook
    problems: list[str] = field(default_factory=list)  # what was not imported, one line each
    written: int = 0


def import_download(download: Path, lms: str, roster: Roster, into: Path, replace: bool = False) -> Imported:
    """Copy the notebooks of an LMS download into ``into/LEARNER_ID.ipynb``; see the module's docstring."""
    if lms not in MAPPERS:
        raise LMSError(f"unknown LMS {lms!r}: choose from {', '.join(LMSS)}")
    download, into = Path(download), Path(into)
    if into.resolve() == download.resolve() or download.resolve() in into.resolve().parents:
        raise LMSError("the submissions folder must lie outside the download")
    if into.is_symlink() or (into.exists() and not into.is_dir()):
        raise LMSError(f"{into} is not a folder: choose a folder for the submissions")
    into.mkdir(parents=True, exist_ok=True)
    sidecar = read_sidecar(into)
    report = Imported()
    with opened(download) as files:
        for entry in files:
            if entry.problem:
                report.problems.append(f"{entry.path}: {entry.problem}")
        mapping = MAPPERS[lms]([e for e in files if not e.problem], roster)
        _copy(mapping, into, replace, sidecar, report, lms)
    write_sidecar(into, sidecar)
    return report


def _copy(
    mapping: Mapping, into: Path, replace: bool, sidecar: dict[str, dict[str, str]], report: Imported, lms: str
) -> None:
    """Each learner's one notebook into ``into``; the sidecar rows of those written or unchanged."""
    report.problems += mapping.problems
    by_student: dict[str, list[Found]] = {}
    for found in mapping.found:
        if found.entry.name.lower().endswith(".ipynb"):
            by_student.setdefault(found.student, []).append(found)
        else:
            report.problems.append(f"{found.entry.path}: not a notebook (.ipynb) ({found.student})")
    for student, founds in sorted(by_student.items()):
        if len(founds) > 1:
            report.problems.append(
                f"{student}: {len(founds)} notebooks ({', '.join(f.entry.path for f in founds)}): "
                f"none imported; copy the right one as {student}.ipynb"
            )
            continue
        found = founds[0]
        try:
            data = found.entry.read()
        except (OSError, zipfile.BadZipFile, zlib.error) as err:  # a damaged member, a file gone meanwhile
            report.problems.append(f"{found.entry.path}: could not be read ({err})")
            continue
        target = into / f"{student}.ipynb"
        if target.is_symlink() or (target.exists() and not target.is_file()):
            report.problems.append(f"{target} is not a plain file: left as it is, {found.entry.path} not imported")
            continue
        if target.exists():
            if target.read_bytes() == data:
                report.lines.append(f"{student}: unchanged ({found.entry.path})")
            elif not replace:
                report.problems.append(
                    f"{target.name} exists and differs from {found.entry.path}: kept (import again "
                    "with --replace to take the download's)"
                )
                continue
            else:
                _write_bytes(target, data)
                report.written += 1
                report.lines.append(f"{student}: replaced by {found.entry.path}")
        else:
            _write_bytes(target, data)
            report.written += 1
            report.lines.append(f"{student}: {found.entry.path}")
        sidecar[student] = {
            "student": student,
            "lms": lms,
            "submitted_at": found.submitted_at,
            "late": found.late,
            "source": found.entry.path,
        }


def read_sidecar(into: Path) -> dict[str, dict[str, str]]:
    """``into/.lms.csv`` by learner ({} if there is none)."""
    path = into / SIDECAR
    if not path.exists():
        return {}
    try:
        rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))
    except (UnicodeDecodeError, csv.Error):
        rows = [{"?": ""}]
    if rows and list(rows[0]) != list(SIDECAR_FIELDS):
        raise LMSError(f"{path} is not the file import writes: move it away and import again")
    return {r["student"]: r for r in rows}


def submitted_times(into: Path) -> dict[str, datetime]:
    """When the LMS says each learner of ``into/.lms.csv`` handed in (for the late rule); learners
    without a time, or with one that is not ISO 8601 with its UTC offset, are left out."""
    times = {}
    for student, row in read_sidecar(into).items():
        try:
            when = datetime.fromisoformat(row.get("submitted_at") or "")
        except ValueError:
            continue
        if when.tzinfo is not None:
            times[student] = when
    return times


def write_sidecar(into: Path, rows: dict[str, dict[str, str]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=SIDECAR_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows[s] for s in sorted(rows))
    _write_bytes(into / SIDECAR, buffer.getvalue().encode("utf-8"))


def _write_bytes(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all (a temporary file beside it, then renamed)."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# --- export -------------------------------------------------------------------------------------
@dataclass
class Export:
    text: str
    notes: list[str]  # one line per learner the file cannot carry as it should


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def export(results: Results, fmt: str, roster: Roster | None = None, canvas_assignment_id: str = "") -> Export:
    """The ``fmt`` file (canvas, moodle, csv) of ``results``: the roster's learners in its order (those
    without a submission: empty scores, status missing), then the graded learners it does not list
    (only in the plain CSV, or without a roster: an LMS could not match them)."""
    if fmt not in FORMATS:
        raise LMSError(f"unknown format {fmt!r}: choose from {', '.join(FORMATS)}")
    if fmt == "canvas" and roster is None:
        raise LMSError("a Canvas file needs each learner's Canvas user id: give --roster (its lms_id column)")
    people = list(roster.people) if roster else []
    listed = {p.id for p in people}
    notes = []
    for student in results.learners:
        if student not in listed:
            if fmt == "csv" or roster is None:
                people.append(Person(student, ""))
            else:
                notes.append(f"{student}: graded but not on the roster: left out (add them to the roster)")
    for person in people:
        if person.id not in results.learners:
            notes.append(f"{person.id}: no submission: listed as missing")
        learner = results.learners.get(person.id)
        if learner and learner.status == "needs_manual_grade":
            notes.append(f"{person.id}: awaiting manual grading: its total lacks those points")
        if fmt == "canvas" and not person.lms_id:
            notes.append(f"{person.id}: no lms_id on the roster: Canvas cannot match this row")
        if fmt == "moodle" and roster and not person.email:
            notes.append(f"{person.id}: no email on the roster: map Moodle's users from 'ID number' instead")
    questions = results.questions
    name = results.assignment
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if fmt == "canvas":
        total = f"{name} ({canvas_assignment_id})" if canvas_assignment_id else name
        writer.writerow(
            [
                "Student",
                "ID",
                "SIS User ID",
                "SIS Login ID",
                "Section",
                total,
                *(f"{name}: {q.name}" for q in questions),
            ]
        )
        writer.writerow(
            ["Points Possible", "", "", "", "", _fmt(results.max_score), *(_fmt(q.max_score) for q in questions)]
        )
        for p in people:
            learner = results.learners.get(p.id)
            writer.writerow(
                [
                    p.name,
                    p.lms_id,
                    "",
                    "",
                    "",
                    _fmt(learner.score if learner else None),
                    *(_fmt(learner.scores.get(q.name) if learner else None) for q in questions),
                ]
            )
    elif fmt == "moodle":
        writer.writerow(
            ["ID number", "Email address", "Full name", name, *(f"{name}: {q.name}" for q in questions), "Status"]
        )
        for p in people:
            learner = results.learners.get(p.id)
            writer.writerow(
                [
                    p.id,
                    p.email,
                    p.name,
                    _fmt(learner.score if learner else None),
                    *(_fmt(learner.scores.get(q.name) if learner else None) for q in questions),
                    learner.status if learner else "missing",
                ]
            )
    else:
        writer.writerow(["student", "name", "email", "lms_id", "status", "question", "score", "max_score"])
        for p in people:
            learner = results.learners.get(p.id)
            who = [p.id, p.name, p.email, p.lms_id, learner.status if learner else "missing"]
            writer.writerow([*who, "total", _fmt(learner.score if learner else None), _fmt(results.max_score)])
            for q in questions:
                writer.writerow(
                    [*who, q.name, _fmt(learner.scores.get(q.name) if learner else None), _fmt(q.max_score)]
                )
    return Export(buffer.getvalue(), notes)


def write_export(path: Path, text: str) -> None:
    _write_bytes(Path(path), text.encode("utf-8"))
