"""Exchange admin center downloadable reports: enhanced summary and extended (event) CSVs.

Both describe messages by their events, not by a status, so a status is derived per recipient with
:func:`status_from_events` (the mapping is documented in ``docs/sources-file.md``):

* enhanced summary: one row per message; ``recipient_status`` lists ``addr##Receive, Deliver`` per
  recipient, ``;``-separated. One record per recipient.
* extended: one row per event (``event_id``), ``recipient_address`` ``;``-separated. Rows are grouped
  by message (``network_message_id``, else ``message_id``, else ``internal_message_id``) and then
  by recipient; one record per (message, recipient), in order of first appearance. The whole file
  is held in memory (the admin center caps these reports at a few thousand rows).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from exotrace.model import RawRecord, Reject
from exotrace.sources.file.csv_dates import to_iso
from exotrace.sources.file.csv_shapes import CsvRow, date_offsets, header_key, map_header, row_fields

__all__ = ["EVENT_STATUS", "read_enhanced", "read_extended", "status_from_events"]

Item = RawRecord | Reject

#: event (upper case) -> status. Events not listed (RECEIVE, SUBMIT, AGENTINFO, TRANSFER, DSN, ...)
#: say nothing about the outcome.
EVENT_STATUS: dict[str, str] = {
    "DELIVER": "Delivered",
    "SEND": "Delivered",
    "FAIL": "Failed",
    "DROP": "Failed",
    "BADMAIL": "Failed",
    "POISONMESSAGE": "Failed",
    "EXPAND": "Expanded",
    "QUARANTINE": "Quarantined",
    "QUARANTINED": "Quarantined",
    "SPAM": "FilteredAsSpam",
    "FILTEREDASSPAM": "FilteredAsSpam",
    "RESOLVE": "Resolved",
    "REDIRECT": "Resolved",
    "DEFER": "Pending",
}
_FINAL = frozenset({"Delivered", "Failed", "Expanded", "Quarantined", "FilteredAsSpam"})


def status_from_events(events: Iterable[str]) -> str:
    """The last final event's status wins; else Resolved, else Pending (received or deferred only)."""
    final: str | None = None
    resolved = False
    for event in events:
        status = EVENT_STATUS.get(event.strip().upper().replace(" ", ""))
        if status in _FINAL:
            final = status
        elif status == "Resolved":
            resolved = True
    if final:
        return final
    return "Resolved" if resolved else "Pending"


def _split_recipient_status(value: str) -> list[tuple[str, str]]:
    """``a@x##Receive, Deliver;b@y##Receive, Fail`` -> ``[("a@x", "Receive, Deliver"), ...]``."""
    out: list[tuple[str, str]] = []
    for part in value.split(";"):
        if not part.strip():
            continue
        address, _, events = part.partition("##")
        out.append((address.strip(), events.strip()))
    return out


def read_enhanced(names: list[str], rows: Iterable[Any], origin: str,
                  day_first: bool | None = None) -> Iterator[Item]:
    """One record per recipient of each enhanced-summary row."""
    mapped = map_header(names)
    offsets = date_offsets(names, mapped)
    try:
        status_col = [header_key(n) for n in names].index("recipientstatus")
    except ValueError:
        yield Reject(origin, 1, "enhanced summary without a recipient_status column", raw=",".join(names))
        return
    status_name = mapped[status_col]
    for row in rows:
        if isinstance(row, Reject):
            yield row
            continue
        if not isinstance(row, CsvRow):
            continue
        fields, reject = row_fields(mapped, row, offsets, day_first)
        if reject is not None:
            yield Reject(origin, reject.line, reject.reason, raw=reject.raw, field=reject.field)
            continue
        recipients = _split_recipient_status(str(fields.get(status_name) or ""))
        if not recipients:
            yield Reject(origin, row.line, "no recipient in recipient_status", raw=row.text, field=status_name)
            continue
        for address, events in recipients:
            rec = dict(fields)
            rec["RecipientAddress"] = address
            rec["Status"] = status_from_events(events.split(","))
            rec.setdefault("ToIP", None)
            rec[status_name] = events
            yield RawRecord(fields=rec, original=row.text, origin=origin, line=row.line, shape="eac-enhanced",
                            flat=True)


class _Message:
    __slots__ = ("key", "rows", "recipients")

    def __init__(self, key: str) -> None:
        self.key = key
        self.rows: list[tuple[CsvRow, dict[str, str], list[str]]] = []
        self.recipients: list[str] = []


def read_extended(names: list[str], rows: Iterable[Any], origin: str,
                  day_first: bool | None = None) -> Iterator[Item]:
    """One record per (message, recipient), built from the message's event rows."""
    keys = [header_key(n) for n in names]
    messages: dict[str, _Message] = {}
    for row in rows:
        if isinstance(row, Reject):
            yield row
            continue
        if not isinstance(row, CsvRow):
            continue
        if len(row.values) != len(names):
            yield Reject(origin, row.line, f"expected {len(names)} columns, found {len(row.values)}",
                         raw=row.text)
            continue
        values = dict(zip(keys, row.values, strict=True))
        key = (values.get("networkmessageid") or values.get("messageid")
               or values.get("internalmessageid") or f"line {row.line}")
        msg = messages.setdefault(key, _Message(key))
        recipients = [r.strip() for r in values.get("recipientaddress", "").split(";") if r.strip()]
        msg.rows.append((row, values, recipients))
        for r in recipients:
            if r.lower() not in (x.lower() for x in msg.recipients):
                msg.recipients.append(r)
    for msg in messages.values():
        yield from _message_records(msg, origin, day_first)


def _message_records(msg: _Message, origin: str, day_first: bool | None) -> Iterator[Item]:
    rows = sorted(msg.rows, key=lambda r: to_iso(r[1].get("datetime", ""), day_first))
    if not msg.recipients:
        text = "\n".join(r[0].text for r in rows)
        yield Reject(origin, rows[0][0].line, f"message {msg.key}: no recipient in any event row", raw=text)
        return
    first = rows[0][1]

    def pick(name: str) -> str:
        return next((v[name] for _, v, _ in rows if v.get(name)), "")

    receive = next((v for _, v, _ in rows if v.get("eventid", "").upper() == "RECEIVE"), first)
    size_text = receive.get("totalbytes") or pick("totalbytes")
    try:
        size: int | None = int(size_text) if size_text.strip() else None
    except ValueError:
        yield Reject(origin, rows[0][0].line, f"total_bytes is not a whole number: {size_text!r}",
                     raw="\n".join(r[0].text for r in rows), field="total_bytes")
        return
    from_ip = pick("originalclientip") or receive.get("clientip", "")
    shared = [(row, values) for row, values, rcpts in rows if not rcpts]
    for recipient in msg.recipients:
        low = recipient.lower()
        own = [(row, values) for row, values, rcpts in rows if low in (r.lower() for r in rcpts)]
        events = [values.get("eventid", "") for _, values in own]
        sends = [values for _, values in own if values.get("eventid", "").upper() == "SEND"]
        contributing = sorted(own + shared, key=lambda rv: rv[0].line)
        fields: dict[str, Any] = {
            "MessageId": pick("messageid") or None,
            "Received": to_iso(receive.get("datetime", "") or first.get("datetime", ""), day_first),
            "SenderAddress": pick("senderaddress"),
            "RecipientAddress": recipient,
            "Subject": pick("messagesubject"),
            "Status": status_from_events(events),
            "ToIP": (sends[-1].get("serverip") or None) if sends else None,
            "FromIP": from_ip or None,
            "Size": size,
            "MessageTraceId": pick("networkmessageid"),
            "directionality": pick("directionality"),
            "tenant_id": pick("tenantid"),
            "return_path": pick("returnpath"),
            "events": ", ".join(e for e in events if e),
        }
        yield RawRecord(fields=fields, original="\n".join(row.text for row, _ in contributing),
                        origin=origin, line=contributing[0][0].line, shape="eac-extended", flat=True)
