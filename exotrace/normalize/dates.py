"""Parse every timestamp shape message-trace exports carry.

Accepted: ISO 8601 with 0-7 fractional digits and ``Z``, an offset, or no zone (no zone means UTC);
Windows PowerShell 5.1 ``/Date(ms)/`` and ``/Date(ms+hhmm)/`` (milliseconds since the epoch, UTC; the
offset only says how the value was displayed); US-culture ``M/d/yyyy h:mm:ss AM`` from ``Export-Csv``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from functools import lru_cache

_ISO = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?)?\s*(Z|z|[+-]\d{2}(?::?\d{2})?)?"
)
_MS_DATE = re.compile(r"/?\\?/?Date\((-?\d+)([+-]\d{4})?\)\\?/?")
_US_DATE = re.compile(
    r"(\d{1,2})/(\d{1,2})/(\d{4})(?:\s+(\d{1,2}):(\d{2})(?::(\d{2}))?\s*([AaPp][Mm])?)?"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_fromisoformat = datetime.fromisoformat


def parse_timestamp(value: object) -> datetime:
    """Return an aware UTC datetime, or raise ValueError naming the value."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, dict) and "value" in value:
        return parse_timestamp(value["value"])
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"not a timestamp: {value!r}")
    text = value.strip()
    m = _ISO.fullmatch(text)
    if m:
        return _in_range(lambda: _from_iso(m), text)
    m = _MS_DATE.fullmatch(text)
    if m:
        return _in_range(lambda: _EPOCH + timedelta(milliseconds=int(m.group(1))), text)
    m = _US_DATE.fullmatch(text)
    if m:
        return _in_range(lambda: _from_us(m), text)
    raise ValueError(f"unrecognised timestamp {text!r}")


def _in_range(build: Callable[[], datetime], text: str) -> datetime:
    """``build()``, with a date beyond datetime's range (year 1-9999) reported as ValueError."""
    try:
        return build()
    except OverflowError:
        raise ValueError(f"timestamp out of range {text!r}") from None


@lru_cache(maxsize=4096)
def iso_text(value: str) -> str:
    """Any accepted timestamp text rewritten as full-precision ISO 8601 UTC (cached: window bounds repeat)."""
    return format_iso(parse_timestamp(value))


def utc_iso_millis(value: str) -> str | None:
    """``@timestamp`` text for ISO text in UTC (``Z`` or no zone), the common case; None for anything else."""
    # Fast path for the shape every API and PowerShell 7 writes: YYYY-MM-DDTHH:MM:SS[.fraction]Z.
    n = len(value)
    if n >= 20 and value[-1] == "Z" and value[10] == "T" and (value[19] == "." or n == 20):
        try:
            _fromisoformat(value)  # validates the fields, in C
        except ValueError:
            return None
        if n == 20:
            return value[:19] + ".000Z"
        if n <= 30 and value[20:-1].isdigit():
            return value[:23] + "Z" if n >= 24 else value[:-1] + "0" * (24 - n) + "Z"
    m = _ISO.fullmatch(value)
    if m is None:
        return None
    year, month, day, hh, mm, ss, frac, zone = m.groups()
    if hh is None or (zone is not None and zone not in ("Z", "z")):
        return None
    try:
        datetime(int(year), int(month), int(day), int(hh), int(mm), int(ss or 0))  # validates the fields
    except ValueError:
        return None
    return f"{year}-{month}-{day}T{hh}:{mm}:{ss or '00'}.{(frac or '')[:3].ljust(3, '0')}Z"


def is_iso(value: object) -> bool:
    """True for ISO 8601 text (the form Elastic's pipeline keeps verbatim)."""
    return isinstance(value, str) and _ISO.fullmatch(value.strip()) is not None


def _from_iso(m: re.Match[str]) -> datetime:
    year, month, day, hh, mm, ss, frac, zone = m.groups()
    micro = int((frac or "0")[:6].ljust(6, "0"))
    tz = UTC
    if zone and zone not in ("Z", "z"):
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        minutes = int(digits[:2]) * 60 + int(digits[2:4] or 0)
        tz = timezone(sign * timedelta(minutes=minutes))
    dt = datetime(int(year), int(month), int(day), int(hh or 0), int(mm or 0), int(ss or 0), micro, tz)
    return dt.astimezone(UTC)


def _from_us(m: re.Match[str]) -> datetime:
    a, b, year, hh, mm, ss, ampm = m.groups()
    month, day = int(a), int(b)
    if month > 12 >= day:  # day-first culture
        month, day = day, month
    hour = int(hh or 0)
    if ampm:
        hour = hour % 12 + (12 if ampm.lower() == "pm" else 0)
    return datetime(int(year), month, day, hour, int(mm or 0), int(ss or 0), tzinfo=UTC)


def format_millis(dt: datetime) -> str:
    """``2022-09-05T18:10:13.490Z``: UTC, millisecond precision (truncated, as Elasticsearch renders)."""
    dt = dt.astimezone(UTC)
    return f"{dt.year:04d}-" + dt.strftime("%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def format_iso(dt: datetime) -> str:
    """Full-precision ISO 8601 UTC with ``Z`` (trailing zeros of the fraction trimmed)."""
    dt = dt.astimezone(UTC)
    base = f"{dt.year:04d}-" + dt.strftime("%m-%dT%H:%M:%S")  # %Y does not pad years before 1000
    if dt.microsecond:
        base += "." + f"{dt.microsecond:06d}".rstrip("0")
    return base + "Z"
