"""Dates in CSV exports: culture-formatted strings -> ISO 8601 the normalizer understands.

``Export-Csv`` writes a DateTime with the machine culture's ``ToString()``: ``10/21/2022 5:25:30 PM``
(en-US), ``21/10/2022 17:25:30`` (en-GB, fr-FR), ``21.10.2022 17:25:30`` (de-DE), ``2022/10/21
17:25:30`` (ja-JP). Message-trace times are UTC, so the result carries no zone (the normalizer reads
"no zone" as UTC). ISO strings and ``/Date(..)/`` are returned unchanged; anything unrecognised is
returned unchanged too, so the normalizer reports it instead of this reader guessing.

Slash dates are day-first or month-first by culture, and a 12-hour clock does not tell (en-AU writes
``28/11/2026 3:04:05 PM``). A file holds one culture, so :func:`slash_order` finds the order a file's
dates prove (a first number over 12: day-first; a second one: month-first), and the reader passes it to
:func:`to_iso`; only a file that proves nothing falls back to the clock (12-hour: month-first).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from functools import lru_cache

__all__ = ["SLASH_DATE", "slash_order", "to_iso"]

SLASH_DATE = re.compile(r"(?<![\d/])(\d{1,2})/(\d{1,2})/\d{4}\b")


def slash_order(texts: Iterable[str]) -> bool | None:
    """True when these texts' slash dates prove day-first, False month-first, None when none proves either
    (or they contradict each other)."""
    found: set[bool] = set()
    for text in texts:
        for a, b in SLASH_DATE.findall(text):
            if int(a) > 12:
                found.add(True)
            elif int(b) > 12:
                found.add(False)
    return found.pop() if len(found) == 1 else None


_TIME = r"(?P<H>\d{1,2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?P<F>\.\d{1,7})?)?"
_ISO_SPACE = re.compile(r"^(\d{4}-\d{2}-\d{2}) (\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)$")
_US = re.compile(r"^(?P<a>\d{1,2})/(?P<b>\d{1,2})/(?P<y>\d{4}) " + _TIME + r"\s*(?P<ampm>[AaPp][Mm])$")
_SLASH = re.compile(r"^(?P<a>\d{1,2})/(?P<b>\d{1,2})/(?P<y>\d{4}) " + _TIME + r"$")
_YMD = re.compile(r"^(?P<y>\d{4})/(?P<a>\d{1,2})/(?P<b>\d{1,2}) " + _TIME + r"$")
_DOTTED = re.compile(r"^(?P<a>\d{1,2})[.-](?P<b>\d{1,2})[.-](?P<y>\d{4}) " + _TIME + r"$")


@lru_cache(maxsize=4096)
def to_iso(value: str, day_first: bool | None = None) -> str:
    """``value`` as ``YYYY-MM-DDTHH:MM:SS[.f]`` when it is a recognised culture format, else unchanged.
    Slash dates follow ``day_first`` (the order the file proves: True day/month, False month/day) where
    the numbers leave it open; None: the clock decides."""
    s = value.strip()
    if not s or s[0] == "/" or "T" in s:
        return value
    m = _ISO_SPACE.match(s)
    if m:
        clock = m.group(2)
        return f"{m.group(1)}T{'0' if clock[1] == ':' else ''}{clock}"  # 9:04:05 -> 09:04:05
    if m := _US.match(s):
        a, b = int(m["a"]), int(m["b"])
        month, day = (b, a) if a > 12 or (day_first and b <= 12) else (a, b)
        hour = int(m["H"]) % 12 + (12 if m["ampm"].lower() == "pm" else 0)
        return _build(value, int(m["y"]), month, day, hour, m)
    if m := _YMD.match(s):
        return _build(value, int(m["y"]), int(m["a"]), int(m["b"]), int(m["H"]), m)
    if m := _SLASH.match(s):
        a, b = int(m["a"]), int(m["b"])
        # a number over 12 settles it; else the file's proven order; else 24-hour clocks are day-first cultures
        day, month = (b, a) if b > 12 or (day_first is False and a <= 12) else (a, b)
        return _build(value, int(m["y"]), month, day, int(m["H"]), m)
    if m := _DOTTED.match(s):
        return _build(value, int(m["y"]), int(m["b"]), int(m["a"]), int(m["H"]), m)
    return value


def _build(value: str, year: int, month: int, day: int, hour: int, m: re.Match[str]) -> str:
    minute, second = int(m["M"]), int(m["S"] or 0)
    try:
        datetime(year, month, day, hour, minute, second)
    except ValueError:
        return value
    return f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}{m['F'] or ''}"
