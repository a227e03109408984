"""CSV inputs: ``Export-Csv`` of Get-MessageTrace(V2) and the admin center's message-trace reports.

Columns are mapped onto the legacy field names by a forgiving alias table (case, spaces, underscores
and a ``(UTC...)`` suffix are ignored), so ``RecipientAddress``, ``recipient_address`` and
``Recipient address`` all become ``RecipientAddress``. Unmapped columns keep their own names.
Each record's ``original`` is its exact CSV text (several physical lines when a quoted field holds
line breaks).
"""

from __future__ import annotations

import csv
import itertools
import logging
import re
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from exotrace.model import STATUSES, RawRecord, Reject
from exotrace.sources.file.csv_dates import SLASH_DATE, slash_order, to_iso
from exotrace.sources.file.encoding import TextSource, as_cp1252, safe_text, strip_eol, undecodable

log = logging.getLogger("exotrace.sources.file")

__all__ = [
    "CsvRow", "csv_rows", "date_offsets", "detect_csv_shape", "header_key", "header_offset", "map_header", "read_csv",
    "split_header",
]

Item = RawRecord | Reject

#: compact header name -> legacy field (for Export-Csv, EAC summary and snake_case exports).
ALIASES: dict[str, str] = {
    "organization": "Organization",
    "messageid": "MessageId",
    "received": "Received",
    "receiveddatetime": "Received",
    "date": "Received",
    "datetime": "Received",
    "origintimestamp": "Received",
    "senderaddress": "SenderAddress",
    "sender": "SenderAddress",
    "from": "SenderAddress",
    "recipientaddress": "RecipientAddress",
    "recipient": "RecipientAddress",
    "to": "RecipientAddress",
    "subject": "Subject",
    "messagesubject": "Subject",
    "status": "Status",
    "deliverystatus": "Status",
    "toip": "ToIP",
    "fromip": "FromIP",
    "originalclientip": "FromIP",
    "size": "Size",
    "sizebytes": "Size",
    "messagesize": "Size",
    "totalbytes": "Size",
    "messagetraceid": "MessageTraceId",
    "networkmessageid": "MessageTraceId",
    "id": "MessageTraceId",
    "startdate": "StartDate",
    "enddate": "EndDate",
    "index": "Index",
}
_DATE_FIELDS = ("Received", "StartDate", "EndDate")
_INT_FIELDS = ("Size", "Index")
_NULLABLE = ("ToIP", "FromIP", "MessageId")
#: PowerShell property names: their presence marks an Export-Csv of the cmdlets.
_PS_NAMES = frozenset({"Received", "SenderAddress", "RecipientAddress", "MessageTraceId"})
_STATUS_BY_COMPACT = {s.lower(): s for s in STATUSES}


_HEADER_OFFSET = re.compile(r"\((?:UTC|GMT)\s*([+-])\s*(\d{1,2})(?::?(\d{2}))?\)", re.IGNORECASE)
#: A date the CSV converters produce without a zone: ``YYYY-MM-DDTHH:MM[:SS[.f]]``.
_NAIVE_ISO = re.compile(r"\d{4}-\d{2}-\d{2}T\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?")


def header_offset(name: str) -> str | None:
    """The UTC offset a column name announces: ``"Date (UTC+01:00)"`` -> ``+01:00``; None for none or UTC."""
    m = _HEADER_OFFSET.search(name)
    if m is None:
        return None
    sign, hours, minutes = m.group(1), int(m.group(2)), int(m.group(3) or 0)
    if hours > 14 or minutes > 59 or hours == minutes == 0:
        return None
    return f"{sign}{hours:02d}:{minutes:02d}"


def date_offsets(names: list[str], mapped: list[str]) -> dict[str, str]:
    """Legacy date field -> the offset its column header announces (the admin center's local-time exports)."""
    out: dict[str, str] = {}
    for name, target in zip(names, mapped, strict=True):
        if target in _DATE_FIELDS and (offset := header_offset(name)):
            out[target] = offset
    return out


def with_offset(value: Any, offset: str) -> Any:
    """A zone-less converted date with ``offset`` appended; other values unchanged."""
    if isinstance(value, str) and _NAIVE_ISO.fullmatch(value):
        return value + offset
    return value


def header_key(name: str) -> str:
    """Compact form of a column name: ``"Date (UTC+01:00)"`` -> ``date``, ``sender_address`` -> ``senderaddress``."""
    name = re.sub(r"\(.*?\)", "", name.strip().lstrip("\ufeff"))
    name = re.sub(r"_utc$", "", name.strip().lower())
    return re.sub(r"[^0-9a-z]", "", name)


def map_header(names: list[str]) -> list[str]:
    """Legacy names for mapped columns, the original name for the others (first mapping wins)."""
    out: list[str] = []
    used: set[str] = set()
    for name in names:
        target = ALIASES.get(header_key(name))
        if target is None or target in used:
            out.append(name.strip().lstrip("\ufeff"))
        else:
            used.add(target)
            out.append(target)
    return out


def detect_csv_shape(names: list[str]) -> str | None:
    """``csv`` | ``eac-summary`` | ``eac-enhanced`` | ``eac-extended``, or None (not a trace CSV)."""
    keys = {header_key(n) for n in names}
    if "eventid" in keys and ("datetime" in keys or "date" in keys) and "recipientaddress" in keys:
        return "eac-extended"
    if "recipientstatus" in keys and ("origintimestamp" in keys or "senderaddress" in keys):
        return "eac-enhanced"
    stripped = {n.strip().strip("\ufeff") for n in names}
    if len(_PS_NAMES & stripped) >= 2:
        return "csv"
    mapped = {ALIASES[k] for k in keys if k in ALIASES}
    if "RecipientAddress" in mapped and len(mapped) >= 3:
        return "eac-summary"
    return None


_SEP_HINT = re.compile(r"^\ufeff?sep=(.)\r?\n?$")


def is_sep_hint(line: str) -> bool:
    """True for Excel's ``sep=;`` first line, which names the delimiter."""
    return _SEP_HINT.match(line) is not None


def _delimiter(text: str) -> str:
    """The likeliest delimiter of a header line (``,`` ``;`` or tab)."""
    counts = {d: text.count(d) for d in (",", ";", "\t")}
    return max(counts, key=lambda d: counts[d]) if any(counts.values()) else ","


def split_header(line: str) -> tuple[list[str], str]:
    """Parse a header line; returns the column names and the delimiter (``,`` ``;`` or tab)."""
    text = strip_eol(line).lstrip("\ufeff")
    delimiter = _delimiter(text)
    try:
        names = next(csv.reader([text], delimiter=delimiter), [])
    except csv.Error:  # a quote that opens no field (``Subject (max 5")``): the names as they are
        names = text.split(delimiter)
    return names, delimiter


@dataclass(slots=True)
class CsvRow:
    """One CSV record: its first line number, exact text (no final terminator) and values."""

    line: int
    text: str
    values: list[str]


#: A quoted field open for more lines than this is taken as an unmatched quote (subjects are at most 256
#: characters): its first line is rejected and the lines after it are read again.
MAX_RECORD_LINES = 100


def csv_rows(src: TextSource, origin: str) -> Iterator[tuple[list[str], str] | CsvRow | Reject]:
    """Yield the header ``(names, delimiter)`` once, then each record (or a reject).

    A record goes on over the next line while the strict parser says a quoted field is still open (only a
    quote at a field's start opens one, so ``Re: 24" monitor`` in an unquoted field is a literal quote).
    """
    header: tuple[list[str], str] | None = None
    pending: list[tuple[int, str]] = []
    lines = src.raw_lines()
    backlog: deque[tuple[int, str]] = deque()
    while True:
        if backlog:
            n, raw = backlog.popleft()
        else:
            item = next(lines, None)
            if item is None:
                break
            n, raw = item
        if not pending:
            if not raw.strip():
                continue
            if header is None and (raw.lstrip("\ufeff").startswith("#") or is_sep_hint(raw)):
                continue  # "#TYPE Deserialized.…" (Windows PowerShell 5.1), other comments, Excel's "sep=;"
        pending.append((n, raw))
        start = pending[0][0]
        text = strip_eol("".join(r for _, r in pending) if len(pending) > 1 else raw)
        if src.ansi_fallback and undecodable(text):
            text = as_cp1252(text)  # an ANSI line among UTF-8 ones
        delimiter = header[1] if header is not None else _delimiter(text)
        try:
            values = next(csv.reader([text], delimiter=delimiter, strict=True), [])
            problem = None
        except csv.Error as exc:
            if "unexpected end of data" in str(exc):  # a quoted field goes on over the next line
                if len(pending) <= MAX_RECORD_LINES:
                    continue
                yield Reject(origin, start, f"unterminated quoted field (no closing quote within "
                             f"{MAX_RECORD_LINES} lines)", raw=safe_text(strip_eol(pending[0][1])))
                backlog.extendleft(reversed(pending[1:]))  # the lines after it are read again
                pending = []
                continue
            values, problem = [], exc
        pending = []
        if header is None:
            header = split_header(text)
            yield header
            continue
        if undecodable(text):
            yield Reject(origin, start, f"bytes that are not valid {src.described} text", raw=safe_text(text))
        elif problem is not None:
            yield Reject(origin, start, f"malformed CSV record: {problem}", raw=text)
        else:
            yield CsvRow(start, text, values)
    if pending:
        yield Reject(origin, pending[0][0], "unterminated quoted field at end of file",
                     raw=safe_text("".join(r for _, r in pending)))


_INT64 = range(-(2**63), 2**63)


def _to_int(value: str) -> tuple[Any, str | None]:
    text = value.strip()
    if not text:
        return None, None
    try:
        number = int(text.replace(",", "").replace(" ", ""))
    except ValueError:
        return value, "is not a whole number"
    if number not in _INT64:
        return value, "is out of range (more than 64 bits)"
    return number, None


def _to_nullable(value: str) -> tuple[Any, str | None]:
    return (value if value.strip() else None), None


def _to_status(value: str) -> tuple[Any, str | None]:
    return canonical_csv_status(value), None


_CONVERTERS: dict[str, Callable[[str], tuple[Any, str | None]]] = {
    **{name: _to_int for name in _INT_FIELDS},
    **{name: _to_nullable for name in _NULLABLE},
    "Status": _to_status,
}


def convert_value(name: str, value: str) -> tuple[Any, str | None]:
    """Typed value for a mapped legacy field; second item is an error reason or None."""
    convert = _CONVERTERS.get(name)
    if convert is None:
        return value, None
    converted, error = convert(value)
    return converted, (f"{name} {error}: {value!r}" if error else None)


def canonical_csv_status(value: str) -> str:
    """``Filtered as spam`` / ``Getting status`` (admin-center display names) -> canonical names."""
    compact = re.sub(r"[\s_-]", "", value).lower()
    return _STATUS_BY_COMPACT.get(compact, value)


def row_fields(names: list[str], row: CsvRow, offsets: dict[str, str] | None = None,
               day_first: bool | None = None) -> tuple[dict[str, Any], Reject | None]:
    """Map one row to fields; a reject when the column count or a typed value is wrong.

    Dates become ISO 8601 (slash dates in the file's ``day_first`` order, see :func:`to_iso`); ``offsets``
    (from :func:`date_offsets`) are applied to the date fields whose header announced one.
    """
    if len(row.values) != len(names):
        return {}, Reject("", row.line, f"expected {len(names)} columns, found {len(row.values)}",
                          raw=row.text)
    fields = dict(zip(names, row.values, strict=True))
    for name in _CONVERTERS.keys() & fields.keys():
        converted, error = convert_value(name, fields[name])
        if error:
            return {}, Reject("", row.line, error, raw=row.text, field=name)
        fields[name] = converted
    for name in _DATE_FIELDS:
        if name in fields:
            fields[name] = to_iso(fields[name], day_first)
    if offsets:
        for name, offset in offsets.items():
            fields[name] = with_offset(fields[name], offset)
    return fields, None


#: Columns of which a message-trace CSV has at least one (legacy names, after :func:`map_header`).
_TRACE_COLUMNS = frozenset({"MessageTraceId", "RecipientAddress", "SenderAddress", "Received", "MessageId"})


#: Rows read ahead, at most, for a date that proves the file's day/month order.
DATE_ORDER_LOOKAHEAD = 100_000


def _date_columns(names: list[str]) -> list[int]:
    """Positions of the columns that hold dates (Received, StartDate, EndDate; the reports' date/time ones)."""
    mapped = map_header(names)
    return [i for i, (name, legacy) in enumerate(zip(names, mapped, strict=True))
            if legacy in _DATE_FIELDS or "date" in header_key(name) or "time" in header_key(name)]


def _date_order(rows: Iterator[Any], origin: str, columns: list[int]) -> tuple[list[Any], bool | None]:
    """(the rows read ahead, the slash-date order their date columns prove). Rows are read until one
    proves the order (a day over 12), at most :data:`DATE_ORDER_LOOKAHEAD`; a file whose first dated row
    holds no slash date is not read ahead at all. Only the date columns count: a subject such as
    ``Rechnung vom 15/03/2026`` proves nothing. A file whose slash dates prove nothing is read by its clock,
    with a warning."""
    ahead: list[Any] = []
    ambiguous = False
    for item in rows:
        ahead.append(item)
        if isinstance(item, CsvRow):
            dates = [item.values[i] for i in columns if i < len(item.values) and item.values[i].strip()]
            slashed = [d for d in dates if SLASH_DATE.search(d)]
            if dates and not slashed and not ambiguous:
                return ahead, None  # ISO or dotted dates: nothing to decide
            order = slash_order(slashed)
            if order is not None:
                return ahead, order
            ambiguous = ambiguous or bool(slashed)
        if len(ahead) >= DATE_ORDER_LOOKAHEAD:
            break
    if ambiguous:
        log.warning("%s: no date in the first %d rows shows whether 5/11/2026 is day/month or month/day; read as "
                    "month/day with a 12-hour clock (en-US), else day/month", origin, len(ahead))
    return ahead, None


def read_csv(src: TextSource, origin: str, shape: str | None = None) -> Iterator[Item]:
    """Records from a CSV export; ``shape`` forces the variant (else detected from the header)."""
    rows = csv_rows(src, origin)
    header: tuple[list[str], str] | None = None
    for item in rows:
        if isinstance(item, tuple):
            header = item
            break
        if isinstance(item, Reject):
            yield item
    if header is None:
        return
    names, _ = header
    variant = shape or detect_csv_shape(names)
    if variant is None:
        yield Reject(origin, src.lineno, "CSV header has no message-trace columns "
                     f"({', '.join(names[:6])})", raw=",".join(names))
        for item in rows:
            if isinstance(item, CsvRow):
                yield Reject(origin, item.line, "row of an unrecognised CSV file", raw=item.text)
        return
    ahead, day_first = _date_order(rows, origin, _date_columns(names))
    items = _variant_items(variant, names, itertools.chain(ahead, rows), origin, day_first)
    first = next(items, None)
    if first is not None:
        yield first
        yield from items
    if first is None and shape and not _TRACE_COLUMNS.intersection(map_header(names)):
        # a forced --format on a file that is no CSV at all: the whole text became one "header"
        yield Reject(origin, src.lineno, f"not a {variant} file: no message-trace column in what was read as its "
                     "header and no rows (check --format)", raw=safe_text(",".join(names))[:2000])


def _variant_items(variant: str, names: list[str], rows: Iterator[Any], origin: str,
                   day_first: bool | None) -> Iterator[Item]:
    """Records of a CSV file of a known variant, from its header and the rows after it."""
    if variant in ("eac-enhanced", "eac-extended"):
        from exotrace.sources.file import eac

        reader = eac.read_enhanced if variant == "eac-enhanced" else eac.read_extended
        yield from reader(names, rows, origin, day_first)
        return
    mapped = map_header(names)
    offsets = date_offsets(names, mapped)
    for item in rows:
        if isinstance(item, Reject):
            yield item
            continue
        if not isinstance(item, CsvRow):
            continue
        fields, reject = row_fields(mapped, item, offsets, day_first)
        if reject is not None:
            yield Reject(origin, reject.line, reject.reason, raw=reject.raw, field=reject.field)
            continue
        yield RawRecord(fields=fields, original=item.text, origin=origin, line=item.line, shape=variant,
                        flat=True)  # CSV cells and their converted values are never dicts or lists
