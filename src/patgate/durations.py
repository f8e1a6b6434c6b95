"""Durations and dates as people type them: ``90s``, ``20d``, ``2027-01-31``.

A bare number is seconds (``3600``), as the file-server CLI that users come
from takes ``-a``.

Pure; ``now`` is always a parameter (epoch seconds, UTC).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime

from patgate.errors import UsageError

UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"^\s*(\d{1,9})\s*([smhdw]?)\s*$")
MAX_SECONDS = 100 * 365 * 86400


def parse_duration(text: str) -> int:
    """Seconds in ``text`` (``3600``, ``90s``, ``15m``, ``1h``, ``20d``, ``2w``)."""
    match = _DURATION.match(text)
    if not match:
        raise UsageError(
            f"invalid duration {text!r}: expected seconds or a number and a unit"
            " s, m, h, d or w (e.g. 3600, 90s, 20d)"
        )
    seconds = int(match.group(1)) * UNIT_SECONDS[match.group(2) or "s"]
    if seconds <= 0:
        raise UsageError(f"invalid duration {text!r}: must be greater than zero")
    if seconds > MAX_SECONDS:
        raise UsageError(f"invalid duration {text!r}: longer than 100 years")
    return seconds


def parse_expiry_time(text: str, now: float) -> float:
    """An absolute expiry time from a duration (``20d``) or ISO date/time.

    A bare date means the end of that day, UTC.
    """
    if _DURATION.match(text):
        return now + parse_duration(text)
    when = _parse_iso(text.strip())
    if when <= now:
        raise UsageError(f"expiry {text!r} is in the past")
    return when


def parse_moment(text: str, now: float) -> float:
    """A moment: an ISO date (its start, UTC), an ISO date-time (UTC unless
    it names a zone) or ``now``. Never in the future."""
    text = text.strip()
    if text == "now":
        return now
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            when = datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()
        else:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            when = moment.timestamp()
    except ValueError:
        raise UsageError(
            f"invalid time {text!r}: expected an ISO date or date-time"
            " (2026-11-20 or 2026-11-20T12:00Z) or now"
        ) from None
    return min(when, now)


def _parse_iso(text: str) -> float:
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            end = datetime(day.year, day.month, day.day, 23, 59, 59, tzinfo=UTC)
            return end.timestamp()
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"invalid expiry {text!r}: expected a duration (20d) or an ISO date"
            " (2027-01-31 or 2027-01-31T12:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def format_duration(seconds: int) -> str:
    """The shortest exact spelling: 3600 → ``1h``, 90 → ``90s``."""
    for unit in ("w", "d", "h", "m"):
        size = UNIT_SECONDS[unit]
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def format_time(epoch: float | None) -> str | None:
    """ISO 8601 UTC with a ``Z``, second precision; None stays None."""
    if epoch is None:
        return None
    moment = datetime.fromtimestamp(epoch, tz=UTC).replace(microsecond=0)
    return moment.isoformat().replace("+00:00", "Z")
