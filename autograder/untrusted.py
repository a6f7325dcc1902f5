"""What crosses the sandbox boundary, handled as hostile data.

Everything a sandboxed run leaves in its scratch folder was written by code the learner controls:
any name there may be a symbolic link, a pipe, a folder where a file is expected, a tree too deep to
walk recursively, a folder without permissions. This module is the grader's only way in:

- :func:`read_beneath` reads one file below a folder the grader made, opening every component
  relative to the folder before it with ``O_NOFOLLOW`` (``O_DIRECTORY`` for the folders on the way),
  refusing anything that is not a regular file, and reading no more than a cap;
- :func:`parse_notebook`, :func:`parse_results` and :func:`clean_outputs` turn those bytes into the
  few shapes the grader uses (a strict schema: anything else is refused with one line, never raised
  as an unexpected exception), outputs reduced to text and checked images;
- :func:`remove_tree` removes whatever tree was built there (any depth, any permissions, any names),
  walking by descriptors without recursion, and never raises.
"""

from __future__ import annotations

import base64
import binascii
import errno
import json
import math
import os
import re
import stat
from pathlib import Path
from typing import Any, Iterable

import nbformat

O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
O_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
MAX_RECORDS = 10_000
MAX_TEXT = 100_000  # one string of a record (an error message, a repr)
MAX_NUMBERS = 50_000_000  # values of one record
IMAGES = ("image/png", "image/jpeg")  # the only rich outputs shown to the instructor (as <img src="data:...">)
_BASE64 = re.compile(r"[A-Za-z0-9+/\s]*={0,2}\s*")
_REASONS: dict[int | None, str] = {
    errno.ELOOP: "a symbolic link",
    errno.ENOTDIR: "a folder on its path is not a folder (a link?)",
    errno.ENOENT: "missing",
    errno.EACCES: "not readable",
}


class Refused(ValueError):
    """What came back is not used; the message (one line) says why."""


def read_beneath(root: Path, relative: str, max_bytes: int) -> bytes:
    """The bytes of the regular file ``root/relative`` (``/``-separated, no ``..``), no link followed at
    any component, at most ``max_bytes``; raises :class:`Refused` otherwise. ``root`` is the grader's own."""
    parts = relative.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise Refused(f"{relative!r} is not a plain relative path")
    fd = os.open(root, O_DIR)
    try:
        for part in parts[:-1]:
            try:
                child = os.open(part, O_DIR, dir_fd=fd)
            except OSError as err:
                raise Refused(f"{relative}: {_REASONS.get(err.errno, err.strerror)}") from None
            os.close(fd)
            fd = child
        try:  # checked before it is opened: opening a device or a pipe may act or block
            before = os.stat(parts[-1], dir_fd=fd, follow_symlinks=False)
        except OSError as err:
            raise Refused(f"{relative}: {_REASONS.get(err.errno, err.strerror)}") from None
        if not stat.S_ISREG(before.st_mode):
            raise Refused(f"{relative}: not a regular file")
        if before.st_size > max_bytes:
            raise Refused(f"{relative}: larger than {max_bytes // 2**20} MiB")
        try:
            file = os.open(parts[-1], O_FILE, dir_fd=fd)
        except OSError as err:
            raise Refused(f"{relative}: {_REASONS.get(err.errno, err.strerror)}") from None
        with os.fdopen(file, "rb") as handle:
            after = os.fstat(handle.fileno())
            if not stat.S_ISREG(after.st_mode) or (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino):
                raise Refused(f"{relative}: replaced while it was read")
            data = handle.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise Refused(f"{relative}: larger than {max_bytes // 2**20} MiB")
        return data
    finally:
        os.close(fd)


def load_json(data: bytes, what: str) -> Any:
    """``data`` as JSON (UTF-8), or :class:`Refused` (nesting too deep included)."""
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError, MemoryError) as err:
        raise Refused(f"{what} is not readable JSON ({type(err).__name__})") from None


def parse_notebook(data: bytes, max_cells: int, what: str = "the notebook") -> nbformat.NotebookNode:
    """A notebook of at most ``max_cells`` cells, counted before nbformat reads it (nbformat's cost
    grows with the cells), or :class:`Refused`."""
    raw = load_json(data, what)
    cells = raw.get("cells") if isinstance(raw, dict) else None
    if not isinstance(cells, list) or not all(isinstance(c, dict) for c in cells):
        raise Refused(f"{what} is not a notebook (no list of cells)")
    if len(cells) > max_cells:
        raise Refused(f"{what} has {len(cells)} cells, more than the limit of {max_cells}")
    try:
        nb = nbformat.reads(data.decode("utf-8"), as_version=4, capture_validation_error={})
        if not isinstance(nb.get("cells"), list):
            raise ValueError("no cells")
        for cell in nb.cells:
            if cell.get("cell_type") not in ("code", "markdown", "raw") or not isinstance(cell.get("source"), str):
                raise ValueError("a cell of no known type")
            if not isinstance(cell.get("metadata", {}), dict):
                raise ValueError("a cell's metadata is not a mapping")
    except Exception as err:  # nbformat raises many kinds on hostile input
        raise Refused(f"{what} is not a readable notebook ({type(err).__name__})") from None
    return nb


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _text(value: Any, name: str, limit: int = MAX_TEXT) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise Refused(f"{name} is not a text of at most {limit} characters")
    return value


def _record(record: Any, extra_fields: Iterable[str]) -> dict[str, Any]:
    """One record as harvest writes it (:func:`autograder.checks._inputs.encode`), or :class:`Refused`;
    ``extra_fields`` (a figure) are those its check adds to a tensor's."""
    if not isinstance(record, dict):
        raise Refused("a record is not a mapping")
    allowed = {"case", "error", "type", "dtype", "shape", "values", "repr", "cache_mutated", *extra_fields}
    if set(record) - allowed:
        raise Refused(f"a record has unknown fields {sorted(set(record) - allowed)[:5]}")
    case = record.get("case", {})
    if not isinstance(case, dict) or not all(
        isinstance(k, str) and (isinstance(v, str) or _is_number(v)) for k, v in case.items()
    ):
        raise Refused("a record's case is not a mapping of names to numbers and texts")
    for name in ("error", "type", "dtype", "repr"):
        if name in record:
            _text(record[name], f"a record's {name}")
    if "cache_mutated" in record and not isinstance(record["cache_mutated"], bool):
        raise Refused("a record's cache_mutated is not true or false")
    if "figure" in record and not isinstance(record["figure"], dict):
        raise Refused("a record's figure is not a mapping")
    if ("values" in record) != ("shape" in record):
        raise Refused("a record has values without a shape, or a shape without values")
    if "values" in record:
        shape, values = record["shape"], record["values"]
        if (
            not isinstance(shape, list)
            or len(shape) > 8
            or not all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= MAX_NUMBERS for n in shape)
        ):
            raise Refused("a record's shape is not a list of sizes")
        if not isinstance(values, list) or len(values) != math.prod(shape) or not all(map(_is_number, values)):
            raise Refused("a record's values are not as many numbers as its shape holds")
    return record


def parse_results(data: bytes, check: str, extra_fields: Iterable[str] = ()) -> list[dict[str, Any]]:
    """The records of a test's result file ``{"check": CHECK, "records": [...]}``, or :class:`Refused`;
    ``extra_fields``: the fields a record of that check may hold beyond a tensor's (the check's
    ``record_fields``)."""
    raw = load_json(data, "the result file")
    if not isinstance(raw, dict) or set(raw) != {"check", "records"}:
        raise Refused("the result file is not {check, records}")
    if raw["check"] != check:
        raise Refused("the result file is another test's")
    records = raw["records"]
    if not isinstance(records, list) or not 1 <= len(records) <= MAX_RECORDS:
        raise Refused("the result file's records are not a list")
    return [_record(r, extra_fields) for r in records]


def _joined(value: Any, name: str) -> str:
    """A notebook text: a string, or a list of strings (nbformat's multiline form)."""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        value = "".join(value)
    return _text(value, name, limit=10 * MAX_TEXT)


def clean_output(output: Any) -> nbformat.NotebookNode:
    """One output rebuilt from what it may hold: a stream's or an error's text; of a rich output its
    plain text and PNG/JPEG images (valid base64), nothing active (HTML, SVG, JavaScript, widgets)."""
    if not isinstance(output, dict):
        raise Refused("an output is not a mapping")
    kind = output.get("output_type")
    if kind == "stream":
        name = output.get("name") if output.get("name") in ("stdout", "stderr") else "stdout"
        return nbformat.v4.new_output("stream", name=name, text=_joined(output.get("text", ""), "a stream"))
    if kind == "error":
        traceback = output.get("traceback", [])
        if not isinstance(traceback, list):
            raise Refused("a traceback is not a list")
        return nbformat.v4.new_output(
            "error",
            ename=_text(output.get("ename", ""), "an error's name", 1000),
            evalue=_joined(output.get("evalue", ""), "an error's message"),
            traceback=[_joined(line, "a traceback line") for line in traceback[-50:]],
        )
    if kind in ("display_data", "execute_result"):
        data = output.get("data", {})
        if not isinstance(data, dict):
            raise Refused("an output's data is not a mapping")
        kept: dict[str, str] = {}
        if "text/plain" in data:
            kept["text/plain"] = _joined(data["text/plain"], "a text output")
        for mime in IMAGES:
            if mime in data:
                image = _joined(data[mime], "an image")
                try:
                    if _BASE64.fullmatch(image) and base64.b64decode(image, validate=False):
                        kept[mime] = image
                except (binascii.Error, ValueError):
                    pass
        dropped = sorted(m for m in data if m not in kept)
        if dropped and "text/plain" not in kept:
            kept["text/plain"] = f"[an output shown as {', '.join(str(m)[:60] for m in dropped[:3])}: not shown here]"
        if kind == "execute_result":
            count = output.get("execution_count")
            return nbformat.v4.new_output(kind, data=kept, execution_count=count if isinstance(count, int) else None)
        return nbformat.v4.new_output(kind, data=kept)
    raise Refused(f"an output of unknown type {str(kind)[:40]!r}")


def clean_outputs(outputs: Any) -> list[nbformat.NotebookNode]:
    """:func:`clean_output` of each of a cell's outputs (those it refuses left out)."""
    if not isinstance(outputs, list):
        return []
    kept = []
    for output in outputs[:1000]:
        try:
            kept.append(clean_output(output))
        except Refused:
            pass
    return kept


def _open_dir(name: str, parent: int) -> int:
    """``name`` in ``parent`` opened as a folder (not followed if a link), its permissions opened up if needed."""
    try:
        return os.open(name, O_DIR, dir_fd=parent)
    except PermissionError:
        path_fd = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
        try:
            os.chmod(f"/proc/self/fd/{path_fd}", 0o700)
        finally:
            os.close(path_fd)
        return os.open(name, O_DIR, dir_fd=parent)


def _empty(fd: int) -> list[str]:
    """Unlink everything but folders in the folder ``fd``; the names of its folders."""
    folders = []
    try:
        os.fchmod(fd, 0o700)  # a folder without write permission cannot be emptied
    except OSError:
        pass
    with os.scandir(fd) as entries:
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    folders.append(entry.name)
                else:
                    os.unlink(entry.name, dir_fd=fd)
            except FileNotFoundError:
                pass
    return folders


def remove_tree(path: Path) -> bool:
    """Remove ``path`` and everything below it, whatever a learner built there; True when it is gone.
    Walks by descriptors (one held at a time, going up by ``..`` checked against the folder it came
    from), so depth, long paths and odd names do not matter; links are removed, never followed.
    Never raises (an error leaves the rest in place and returns False)."""
    path = Path(path)
    try:
        parent = os.open(path.parent, O_DIR)
    except OSError:
        return not os.path.lexists(path)
    fd = -1
    try:
        try:
            if not stat.S_ISDIR(os.stat(path.name, dir_fd=parent, follow_symlinks=False).st_mode):
                os.unlink(path.name, dir_fd=parent)
                return True
        except FileNotFoundError:
            return True
        fd = _open_dir(path.name, parent)
        # one frame per level below the top: (its name, its parent's (dev, ino), its sibling folders still to remove)
        stack: list[tuple[str, tuple[int, int], list[str]]] = []
        pending = _empty(fd)
        while True:
            if pending:
                name = pending.pop()
                here = os.fstat(fd)
                child = _open_dir(name, fd)
                stack.append((name, (here.st_dev, here.st_ino), pending))
                os.close(fd)
                fd = child
                pending = _empty(fd)
                continue
            if not stack:
                break
            name, origin, pending = stack.pop()
            up = os.open("..", O_DIR, dir_fd=fd)
            os.close(fd)
            fd = up
            above = os.fstat(fd)
            if (above.st_dev, above.st_ino) != origin:  # moved meanwhile: stop rather than walk elsewhere
                return False
            os.rmdir(name, dir_fd=fd)
        os.close(fd)
        fd = -1
        os.rmdir(path.name, dir_fd=parent)
        return True
    except Exception:  # noqa: BLE001 (never raises: the caller sets what is left aside)
        return False
    finally:
        if fd >= 0:
            os.close(fd)
        os.close(parent)
