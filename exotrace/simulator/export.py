"""PowerShell-style exports of the simulated tenant (msapi.md sections 4.4 and 6.11), to test file parsers.

``Get-MessageTrace | ConvertTo-Json`` output, one object per line (NDJSON, ``-Compress``) or one JSON
array, in every date form section 4.4 says a reader must accept:

* ``elastic``: Elastic's reference script, dates pre-converted with ``XmlConvert`` (``...36.969376Z``,
  trailing zeros trimmed) and ``<``, ``>``, ``&``, ``'`` escaped as ``\\u003c``... by Windows PowerShell 5.1;
* ``ps51``: raw Windows PowerShell 5.1, dates as ``"\\/Date(ms)\\/"``, same escapes;
* ``ps51-offset``: the same with the offset 5.1 writes for local ``DateTime`` values, ``"\\/Date(ms+0100)\\/"``
  (the milliseconds are still UTC);
* ``ps51-wrapped``: dates carrying ETS note properties, ``{"value":"\\/Date(ms)\\/","DisplayHint":2,
  "DateTime":"Friday, May 1, 2026 1:00:00 PM"}``;
* ``ps7``: PowerShell 7, ISO dates with 7 fractional digits and ``Z`` (``DateTime.Kind`` Utc), no escapes;
* ``ps7-local``: ``Kind`` Local, ``2026-05-01T13:00:00.0000000+01:00``;
* ``ps7-unspecified``: ``Kind`` Unspecified, no zone (readers must take it as UTC).

``fields="v2"`` leaves out StartDate, EndDate and Index (their presence on ``Get-MessageTraceV2`` objects is
unconfirmed); ``remoting`` adds the implicit-remoting properties (``PSComputerName``, ``RunspaceId``,
``PSShowComputerName``); ``encoding="utf-16"`` writes UTF-16LE with a BOM, as 5.1's ``Out-File`` does.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import timedelta, timezone
from pathlib import Path
from typing import Any

from exotrace.model import LEGACY_FIELDS
from exotrace.simulator.config import stable_uuid
from exotrace.simulator.data import from_us, iso7, iso_short
from exotrace.simulator.odata import parse_datetime

STYLES = ("elastic", "ps51", "ps51-offset", "ps51-wrapped", "ps7", "ps7-local", "ps7-unspecified")
FIELD_SETS = {"v1": LEGACY_FIELDS, "v2": LEGACY_FIELDS[:11]}
ENCODINGS = ("utf-8", "utf-16")
_PS51_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "'": "\\u0027"}


def _offset_text(minutes: int, colon: bool) -> str:
    sign = "-" if minutes < 0 else "+"
    hh, mm = divmod(abs(minutes), 60)
    return f"{sign}{hh:02d}{':' if colon else ''}{mm:02d}"


def _date(us: int, style: str, utc_offset: int) -> Any:
    if style == "ps7":
        return iso7(us)
    if style == "ps7-unspecified":
        return iso7(us, z=False)
    if style == "ps7-local":
        local = from_us(us).astimezone(timezone(timedelta(minutes=utc_offset)))
        return local.strftime("%Y-%m-%dT%H:%M:%S.") + f"{local.microsecond:06d}0" + _offset_text(utc_offset, True)
    if style == "ps51":
        return f"/Date({us // 1000})/"
    if style == "ps51-offset":
        return f"/Date({us // 1000}{_offset_text(utc_offset, False)})/"
    if style == "ps51-wrapped":
        local = from_us(us).astimezone(timezone(timedelta(minutes=utc_offset)))
        hour = local.hour % 12 or 12
        shown = (f"{local:%A}, {local:%B} {local.day}, {local.year} {hour}:{local:%M:%S} "
                 f"{'AM' if local.hour < 12 else 'PM'}")
        return {"value": f"/Date({us // 1000})/", "DisplayHint": 2, "DateTime": shown}
    return iso_short(us)


def _encode(obj: Any, style: str, indent: int | None = None) -> str:
    text = json.dumps(obj, ensure_ascii=False, indent=indent, separators=None if indent else (",", ":"))
    if style == "elastic" or style.startswith("ps51"):
        for ch, esc in _PS51_ESCAPES.items():
            text = text.replace(ch, esc)
        text = text.replace('"/Date(', '"\\/Date(').replace(')/"', ')\\/"')
    return text


def powershell_objects(rows: Iterable[dict[str, Any]], start_us: int, end_us: int,
                       style: str = "elastic", *, fields: str = "v1", remoting: bool = False,
                       utc_offset: int = 60) -> list[dict[str, Any]]:
    """Ground-truth rows (``api="rws"``) -> cmdlet objects: the legacy fields in order."""
    if style not in STYLES:
        raise ValueError(f"unknown export style {style!r} (one of {', '.join(STYLES)})")
    if fields not in FIELD_SETS:
        raise ValueError(f"unknown field set {fields!r} (v1 or v2)")
    names = FIELD_SETS[fields]
    runspace = stable_uuid("runspace", start_us, end_us)
    out = []
    for index, row in enumerate(rows):
        obj = {name: row.get(name) for name in names}
        obj["Received"] = _date(parse_datetime(str(row["Received"])), style, utc_offset)
        if "StartDate" in obj:
            obj["StartDate"], obj["EndDate"] = _date(start_us, style, utc_offset), _date(end_us, style, utc_offset)
            obj["Index"] = index
        if remoting:
            obj.update({"PSComputerName": "outlook.office365.com", "RunspaceId": runspace,
                        "PSShowComputerName": False})
        out.append(obj)
    return out


def write_powershell_export(path: str | Path, rows: Iterable[dict[str, Any]], start_us: int, end_us: int,
                            style: str = "elastic", array: bool = False, bom: bool = False, *,
                            fields: str = "v1", remoting: bool = False, encoding: str = "utf-8",
                            utc_offset: int = 60) -> int:
    """Write an export file; returns the number of objects. ``array``: one pretty JSON array (as
    ``ConvertTo-Json`` without ``-Compress``) instead of NDJSON; ``bom``: UTF-8 with a BOM (5.1's
    ``Add-Content -Encoding UTF8``); ``encoding="utf-16"``: UTF-16LE, always with a BOM (5.1's ``Out-File``)."""
    if encoding not in ENCODINGS:
        raise ValueError(f"unknown encoding {encoding!r} (utf-8 or utf-16)")
    if not -14 * 60 <= utc_offset <= 14 * 60:
        raise ValueError("utc_offset must be between -840 and 840 minutes")
    objs = powershell_objects(rows, start_us, end_us, style, fields=fields, remoting=remoting,
                              utc_offset=utc_offset)
    if array:
        text = _encode(objs, style, indent=4) + "\r\n"
    else:
        text = "".join(_encode(o, style) + "\r\n" for o in objs)
    if encoding == "utf-16":
        data = "\ufeff".encode("utf-16-le") + text.encode("utf-16-le")
    else:
        data = ("\ufeff" if bom else "").encode() + text.encode("utf-8")
    Path(path).write_bytes(data)
    return len(objs)

