"""Ctrl-C during a grading run, remembered so that no library can swallow it.

nbgrader's API runs each of its commands under ``nbgrader.utils.capture_log``, which catches every
exception, ``KeyboardInterrupt`` included, and returns it as a failed result: a Ctrl-C that lands
inside ``generate_feedback`` would otherwise be lost and the run would go on to commit. Within
:func:`remembered`, Ctrl-C is recorded as well as raised, and :func:`check` raises it again wherever
the grader has control back (after each nbgrader command, and before anything is committed);
within :func:`deferred` (the commit) it is recorded only, so that the commit runs to its end.

It is raised as :class:`Interrupted`, a ``KeyboardInterrupt`` of its own class: CPython marks a
plain ``KeyboardInterrupt`` raised inside ``exec`` of a string (which dataclasses and namedtuples
run as they are defined, e.g. while torch is imported) as unhandled, and then ends the process by
SIGINT after it has exited normally, even when the interrupt was caught.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from types import FrameType
from typing import Iterator

_requested = threading.Event()
_deferring = threading.Event()


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, within :func:`remembered`."""


def _handle(signum: int, frame: FrameType | None) -> None:
    _requested.set()
    if not _deferring.is_set():
        raise Interrupted


@contextmanager
def remembered() -> Iterator[None]:
    """Within: Ctrl-C is recorded for :func:`check` and raised as :class:`Interrupted`. Signal
    handlers belong to the main thread: elsewhere (a grading run started from another thread) the
    handler in place is kept, and :func:`check` sees no Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _requested.clear()
    previous = signal.signal(signal.SIGINT, _handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _requested.clear()


def check() -> None:
    """Raise :class:`Interrupted` if Ctrl-C came (within :func:`remembered`), even if it was caught."""
    if _requested.is_set():
        raise Interrupted


@contextmanager
def deferred() -> Iterator[None]:
    """Raise a Ctrl-C that came before; within, one that comes is recorded but not raised: what runs
    here (the commit of a finished run) runs to its end, and the run ends as if it had not come."""
    check()
    _deferring.set()
    try:
        yield
    finally:
        _deferring.clear()
