"""Late work: a deadline, a penalty rule, and what they make of a submission's time.

The rule (stated in the instructors' guide): a submission is late when it was handed in after the
deadline; each day or part of a day late costs ``percent_per_day`` percent of the assignment's
maximum score, at most ``max_percent`` percent in all, and a score never goes below 0. The time of
a submission is its file's modification time, or a time the caller gives (an LMS's column).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone

DAY = 86400.0


class LateRuleError(ValueError):
    """A deadline or penalty rule that cannot be read; the message says what to write."""


def parse_deadline(text: str) -> datetime:
    """An ISO 8601 date and time; without a UTC offset, the grading machine's local time."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise LateRuleError(
            f"--deadline {text!r} is not an ISO 8601 time: write e.g. 2026-12-01T23:59 or 2026-12-01T23:59+01:00"
        ) from None
    return when.astimezone() if when.tzinfo is None else when


def parse_percent(text: str, per_day: bool) -> float:
    """``10%/day`` (``per_day``) or ``50%``: the percentage, 0 to 100."""
    unit = r"\s*/\s*day" if per_day else ""
    match = re.fullmatch(rf"\s*(\d+(?:\.\d+)?)\s*%{unit}\s*", text)
    if not match or not 0 <= float(match.group(1)) <= 100:
        example = "10%/day" if per_day else "50%"
        raise LateRuleError(
            f"{text!r} is not a percentage from 0 to 100{' per day' if per_day else ''}: write e.g. {example}"
        )
    return float(match.group(1))


@dataclass(frozen=True)
class LatePolicy:
    deadline: datetime
    percent_per_day: float = 0.0
    max_percent: float = 100.0

    def days_late(self, submitted: datetime) -> float:
        """Days after the deadline (0 when on time)."""
        return max(0.0, (submitted - self.deadline).total_seconds() / DAY)

    def penalty(self, submitted: datetime, max_score: float) -> float:
        """Points taken off: each started day late costs ``percent_per_day`` % of ``max_score``, capped."""
        days = math.ceil(self.days_late(submitted) - 1e-9)
        return min(self.max_percent, self.percent_per_day * days) / 100 * max_score

    def record(self) -> dict[str, object]:
        """For ``run.json`` (:meth:`from_record` reads it back)."""
        return {
            "deadline": self.deadline.isoformat(),
            "percent_per_day": self.percent_per_day,
            "max_percent": self.max_percent,
        }

    @classmethod
    def from_record(cls, record: dict) -> LatePolicy:
        return cls(
            datetime.fromisoformat(record["deadline"]), float(record["percent_per_day"]), float(record["max_percent"])
        )


def combine(deadline: str | None, per_day: str | None, most: str | None, saved: dict | None) -> LatePolicy | None:
    """The rule of a run: the options given (``--deadline``, ``--late-penalty``, ``--late-penalty-max``),
    the rest from the rule an earlier run into the same folder recorded (``saved``); None without a
    deadline."""
    earlier = LatePolicy.from_record(saved) if saved else None
    if deadline is None and earlier is None:
        if per_day or most:
            raise LateRuleError("--late-penalty counts from a deadline: give --deadline too")
        return None
    return LatePolicy(
        earlier.deadline if earlier is not None and not deadline else parse_deadline(deadline or ""),
        parse_percent(per_day, True) if per_day else earlier.percent_per_day if earlier else 0.0,
        parse_percent(most, False) if most else earlier.max_percent if earlier else 100.0,
    )


def timestamp(seconds: float) -> str:
    """A file time as the ``submitted`` column writes it (UTC, ISO 8601)."""
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="seconds")
