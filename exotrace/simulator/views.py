"""How a row looks through each API at a given moment: status spelling, IP blanks, dates, field order."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from exotrace.simulator.data import Row, iso7, iso_short
from exotrace.simulator.odata import Clause

#: Statuses Graph returns only with ``Prefer: include-unknown-enum-members`` (else ``unknownFutureValue``).
GRAPH_EVOLVABLE = {"Recalled", "Resolved"}


def graph_status(status: str, prefer_unknown: bool) -> str:
    """Canonical status -> Graph's lower-camel enum member as served."""
    if status == "None":  # V2/Graph never report "None" (removed Oct 2025): the row shows as failed
        status = "Failed"
    if status in GRAPH_EVOLVABLE and not prefer_unknown:
        return "unknownFutureValue"
    return status[:1].lower() + status[1:]


def rws_status(status: str) -> str:
    """Canonical status as the legacy service spells it (it predates message recall)."""
    return "Delivered" if status == "Recalled" else status


def graph_item(row: Row, t_us: int, prefer_unknown: bool, beta: bool) -> dict[str, Any]:
    item: dict[str, Any] = {"@odata.type": "#microsoft.graph.exchangeMessageTrace"} if beta else {}
    item.update({
        "id": row.trace_id,
        "senderAddress": row.sender,
        "recipientAddress": row.recipient,
        "messageId": row.message_id,
        "receivedDateTime": row.received_text,
        "subject": row.subject,
        "size": row.size,
        "fromIP": row.from_ip or "",
        "toIP": row.to_ip or "",
        "status": graph_status(row.status_at(t_us), prefer_unknown),
    })
    return item


def rws_item(row: Row, t_us: int, start_us: int, end_us: int, index: int) -> dict[str, Any]:
    """The 14 legacy fields in the service's order; dates as JSON light writes them."""
    return {
        "Organization": row.organization,
        "MessageId": row.message_id,
        "Received": iso7(row.received_us, z=False),
        "SenderAddress": row.sender,
        "RecipientAddress": row.recipient,
        "Subject": row.subject,
        "Status": rws_status(row.status_at(t_us)),
        "ToIP": row.to_ip,
        "FromIP": row.from_ip,
        "Size": row.size,
        "MessageTraceId": row.trace_id,
        "StartDate": iso_short(start_us),
        "EndDate": iso_short(end_us),
        "Index": index,
    }


def matcher(clauses: list[tuple[str, Clause]], api: str, t_us: int, prefer_unknown: bool
            ) -> Callable[[Row], bool] | None:
    """A row predicate for (canonical property, clause) pairs; properties: id, messageId, status,
    senderAddress, recipientAddress, fromIP, toIP, subject."""
    tests: list[Callable[[Row], bool]] = []
    for prop, c in clauses:
        v = c.value
        vl = v.lower()
        if prop == "id":
            tests.append(lambda r, vl=vl: r.trace_id == vl)
        elif prop == "messageId":
            tests.append(lambda r, v=v: (r.message_id or "") == v)
        elif prop == "status":
            if api == "graph":
                tests.append(lambda r, vl=vl: graph_status(r.status_at(t_us), prefer_unknown).lower() == vl)
            else:
                tests.append(lambda r, vl=vl: rws_status(r.status_at(t_us)).lower() == vl)
        elif prop in ("senderAddress", "recipientAddress"):
            attr = "sender" if prop == "senderAddress" else "recipient"
            if vl.startswith("*@"):
                tests.append(lambda r, attr=attr, s=vl[1:]: getattr(r, attr).lower().endswith(s))
            else:
                tests.append(lambda r, attr=attr, vl=vl: getattr(r, attr).lower() == vl)
        elif prop in ("fromIP", "toIP"):
            attr = "from_ip" if prop == "fromIP" else "to_ip"
            tests.append(lambda r, attr=attr, vl=vl: (getattr(r, attr) or "").lower() == vl)
        elif prop == "subject":
            if c.op == "contains":
                tests.append(lambda r, vl=vl: vl in r.subject.lower())
            elif c.op == "startswith":
                tests.append(lambda r, vl=vl: r.subject.lower().startswith(vl))
            elif c.op == "endswith":
                tests.append(lambda r, vl=vl: r.subject.lower().endswith(vl))
            else:
                tests.append(lambda r, vl=vl: r.subject.lower() == vl)
    if not tests:
        return None
    return lambda r: all(t(r) for t in tests)


def ground_truth_row(row: Row, t_us: int, api: str, prefer_unknown: bool = True) -> dict[str, Any]:
    """The row as the API returns it, with legacy field names and canonical Status."""
    from exotrace.model import canonical_status

    if api == "graph":
        item = graph_item(row, t_us, prefer_unknown, beta=False)
        return {
            "MessageTraceId": item["id"],
            "MessageId": item["messageId"],
            "Received": item["receivedDateTime"],
            "SenderAddress": item["senderAddress"],
            "RecipientAddress": item["recipientAddress"],
            "Subject": item["subject"],
            "Status": canonical_status(item["status"]),
            "ToIP": item["toIP"],
            "FromIP": item["fromIP"],
            "Size": item["size"],
        }
    item = rws_item(row, t_us, 0, 0, 0)
    for k in ("StartDate", "EndDate", "Index"):
        item.pop(k)
    item["Status"] = canonical_status(item["Status"])
    return item
