"""PowerShell-style exports of the simulated tenant (msapi.md sections 4.4 and 6.11), to test file parsers.

Three styles of ``Get-MessageTrace | ConvertTo-Json`` output, one object per line (NDJSON, ``-Compress``)
or one JSON array:

* ``elastic``: Elastic's reference script, dates pre-converted with ``XmlConvert`` (``...36.969376Z``,
  trailing zeros trimmed) and ``<``, ``>``, ``&``, ``'`` escaped as ``\\u003c``... by Windows PowerShell 5.1;
* ``ps51``: raw Windows PowerShell 5.1, dates as ``"\\/Date(ms)\\/"``, same escapes;
* ``ps7``: PowerShell 7, ISO dates with 7 fractional digits and ``Z``, no escapes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from exotrace.model import LEGACY_FIELDS
from exotrace.simulator.data import iso7, iso_short
from exotrace.simulator.odata import parse_datetime

STYLES = ("elastic", "ps51", "ps7")
_PS51_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "'": "\\u0027"}
_DATES = ("Received", "StartDate", "EndDate")


def _date(us: int, style: str) -> str:
    if style == "ps7":
        return iso7(us)
    if style == "ps51":
        return f"/Date({us // 1000})/"
    return iso_short(us)


def _encode(obj: Any, style: str, indent: int | None = None) -> str:
    text = json.dumps(obj, ensure_ascii=False, indent=indent, separators=None if indent else (",", ":"))
    if style in ("elastic", "ps51"):
        for ch, esc in _PS51_ESCAPES.items():
            text = text.replace(ch, esc)
    if style == "ps51":
        text = text.replace('"/Date(', '"\\/Date(').replace(')/"', ')\\/"')
    return text


def powershell_objects(rows: Iterable[dict[str, Any]], start_us: int, end_us: int,
                       style: str = "elastic") -> list[dict[str, Any]]:
    """Ground-truth rows (``api="rws"``) -> cmdlet objects: the 14 legacy fields in order."""
    if style not in STYLES:
        raise ValueError(f"unknown export style {style!r} (one of {', '.join(STYLES)})")
    out = []
    for index, row in enumerate(rows):
        obj = {name: row.get(name) for name in LEGACY_FIELDS}
        obj["Received"] = _date(parse_datetime(str(row["Received"])), style)
        obj["StartDate"], obj["EndDate"] = _date(start_us, style), _date(end_us, style)
        obj["Index"] = index
        out.append(obj)
    return out


def write_powershell_export(path: str | Path, rows: Iterable[dict[str, Any]], start_us: int, end_us: int,
                            style: str = "elastic", array: bool = False, bom: bool = False) -> int:
    """Write an export file; returns the number of objects. ``array``: one pretty JSON array (as
    ``ConvertTo-Json`` without ``-Compress``) instead of NDJSON; ``bom``: UTF-8 with a BOM (5.1's
    ``Add-Content -Encoding UTF8``)."""
    objs = powershell_objects(rows, start_us, end_us, style)
    if array:
        text = _encode(objs, style, indent=4) + "\r\n"
    else:
        text = "".join(_encode(o, style) + "\r\n" for o in objs)
    Path(path).write_bytes(("\ufeff" if bom else "").encode() + text.encode("utf-8"))
    return len(objs)
