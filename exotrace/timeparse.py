"""Parse the times users type (``--since 7d``, ``--until 2024-05-01T12:00``) and the archive's time format.

Accepted forms (case-insensitive, surrounding spaces ignored):

* relative, counted back from now: ``45s``, ``30m`` (minutes), ``2h``, ``7d``, ``2w``; decimals work (``1.5h``);
* ``now``, ``today`` (00:00 UTC today), ``yesterday`` (00:00 UTC yesterday);
* an ISO date ``2024-05-01`` (00:00 UTC; as an *end* bound it means the end of that day);
* an ISO date-time ``2024-05-01T12:00``, ``2024-05-01 12:00:00.1234567Z``, ``...+02:00``; no zone means UTC.

The archive stores times as ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (Elastic's ``@timestamp`` form), so plain string
comparison orders them; :func:`format_ts` and :func:`normalize_ts` produce that form.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache

__all__ = ["format_ts", "normalize_ts", "parse_time", "utcnow_ts"]

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
#: 7 fractional digits (PowerShell) are more than datetime keeps; cut to 6.
_LONG_FRACTION = re.compile(r"(\.\d{6})\d+")


def parse_time(value: str | datetime, *, now: datetime | None = None, end: bool = False) -> datetime:
    """Parse ``value`` into an aware UTC datetime.

    ``end=True`` marks an upper bound: a bare date then means the *next* midnight, so
    ``--until 2024-05-01`` covers all of May 1st. Raises :class:`ValueError` with a readable message.
    """
    if isinstance(value, datetime):
        return _as_utc(value)
    text = str(value).strip().lower()
    if not text:
        raise ValueError("empty time")
    current = _as_utc(now) if now is not None else datetime.now(UTC)
    midnight = current.replace(hour=0, minute=0, second=0, microsecond=0)
    if text == "now":
        return current
    if text == "today":
        return midnight + timedelta(days=1) if end else midnight
    if text == "yesterday":
        return midnight if end else midnight - timedelta(days=1)
    match = _RELATIVE.match(text)
    if match:
        try:
            return current - timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2)])
        except OverflowError:
            raise ValueError(f"time {value!r} reaches back before the year 1") from None
    if _DATE_ONLY.match(text):
        try:
            day = date.fromisoformat(text)
        except ValueError as exc:
            raise ValueError(f"invalid date {value!r}: {exc}") from None
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        if end and day == date.max:
            return start.replace(hour=23, minute=59, second=59, microsecond=999999)
        return start + timedelta(days=1) if end else start
    try:
        parsed = datetime.fromisoformat(_LONG_FRACTION.sub(r"\1", text.upper()))
    except ValueError:
        raise ValueError(
            f"cannot read time {value!r}: use an ISO date/time (2024-05-01, 2024-05-01T12:00Z) "
            "or a relative time (30m, 2h, 7d, 2w)"
        ) from None
    try:
        return _as_utc(parsed)
    except OverflowError:
        raise ValueError(f"time {value!r} is out of range in UTC") from None


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def format_ts(value: datetime) -> str:
    """``2024-05-01T12:00:00.000Z``: the archive's sortable time form (UTC, milliseconds)."""
    value = _as_utc(value)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def utcnow_ts() -> str:
    """The current time in the archive's form."""
    return format_ts(datetime.now(UTC))


def normalize_ts(value: str | None) -> str | None:
    """Bring a stored ISO time into the archive's form; ``None`` or unreadable input gives ``None``.

    Values already in the form (every ``@timestamp`` the normalizer writes) pass through untouched.
    """
    if not value or not isinstance(value, str):
        return None
    if len(value) == 24 and value[10] == "T" and value[19] == "." and value[23] == "Z":
        return value
    return _normalize_slow(value)


@lru_cache(maxsize=4096)
def _normalize_slow(value: str) -> str | None:
    try:
        return format_ts(parse_time(value))
    except ValueError:
        return None
