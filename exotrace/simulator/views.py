"""How a row looks through each API at a given moment: status spelling, IP blanks, dates, field order."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from exotrace.simulator.data import Row, iso7, iso_short
from exotrace.simulator.odata import Clause

#: Statuses Graph returns only with ``Prefer: include-unknown-enum-members`` (else ``unknownFutureValue``).
#: Graph's evolvable enum members (after ``unknownFutureValue``): served only with ``Prefer:
#: include-unknown-enum-members``.
GRAPH_EVOLVABLE = {"Recalled"}
#: Statuses Get-MessageTraceV2 shows that no Graph enum member names: Graph serves ``unknownFutureValue``.
GRAPH_UNNAMED = {"Resolved"}


def graph_status(status: str, prefer_unknown: bool) -> str:
    """Canonical status -> Graph's lower-camel enum member as served."""
    if status == "None":  # V2/Graph never report "None" (removed Oct 2025): the row shows as failed
        status = "Failed"
    if status in GRAPH_UNNAMED or (status in GRAPH_EVOLVABLE and not prefer_unknown):
        return "unknownFutureValue"
    return status[:1].lower() + status[1:]


def rws_status(status: str) -> str:
    """Canonical status as the legacy service spells it: it predates message recall, and its list has no
    ``Resolved`` (a redirected recipient): ``None``, "no delivery status (rejected or redirected)"."""
    return "Delivered" if status == "Recalled" else "None" if status == "Resolved" else status


def graph_item(row: Row, t_us: int, prefer_unknown: bool, beta: bool, pascal: bool = False) -> dict[str, Any]:
    """The row as Graph serves it; ``pascal`` writes the status as the beta doc sample does (``Delivered``)."""
    item: dict[str, Any] = {"@odata.type": "#microsoft.graph.exchangeMessageTrace"} if beta else {}
    status = graph_status(row.status_at(t_us), prefer_unknown)
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
        "status": status[:1].upper() + status[1:] if pascal else status,
    })
    return item


def rws_item(row: Row, t_us: int, start_us: int, end_us: int, index: int, received_z: bool = False
             ) -> dict[str, Any]:
    """The 14 legacy fields in the service's order; dates as JSON light writes them (``Received`` without
    a zone unless ``received_z``)."""
    return {
        "Organization": row.organization,
        "MessageId": row.message_id,
        "Received": iso7(row.received_us, z=received_z, tick=row.tick),
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
    senderAddress, recipientAddress, fromIP, toIP, subject, and for RWS organization, received (epoch
    microseconds as text) and size."""
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
        elif prop == "organization":
            tests.append(lambda r, vl=vl: r.organization.lower() == vl)
        elif prop == "received":
            tests.append(lambda r, us=int(v): r.received_us == us)
        elif prop == "size":
            tests.append(lambda r, n=int(v): r.size == n)
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


def ground_truth_row(row: Row, t_us: int, api: str, prefer_unknown: bool = True, received_z: bool = False
                     ) -> dict[str, Any]:
    """The row as the API returns it, with legacy field names and canonical Status (``received_z``: the
    RWS ``Received`` with a ``Z``, as ``SimulatorConfig.rws_received_z`` serves it)."""
    from exotrace.model import canonical_status

    if api == "v2":  # Get-MessageTraceV2: Graph's rows, statuses as the cmdlet spells them (Resolved; no None)
        item = ground_truth_row(row, t_us, "graph")
        status = row.status_at(t_us)
        item["Status"] = "Failed" if status == "None" else status
        return item
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
    item = rws_item(row, t_us, 0, 0, 0, received_z)
    for k in ("StartDate", "EndDate", "Index"):
        item.pop(k)
    item["Status"] = canonical_status(item["Status"])
    return item
