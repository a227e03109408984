"""Build ECS-shaped :class:`Document` objects by hand, for tests and benchmarks of the archive and sinks.

The documents have the shape Elastic's pipeline produces (``email.*``, ``source``/``destination``,
``microsoft.online_message_trace``) without going through the normalizer.
"""

from __future__ import annotations

import base64
import hashlib
import os
import sqlite3
from typing import Any

from exotrace.model import Document, canonical_status, row_key

__all__ = ["make_document", "make_error_document"]

_OUTCOME = {"Delivered": "success", "Expanded": "success", "Resolved": "success", "Failed": "failure",
            "Quarantined": "failure", "FilteredAsSpam": "failure"}


def _user(address: str) -> dict[str, Any]:
    name, _, domain = address.partition("@")
    return {"domain": domain, "email": address, "id": address, "name": name}


def make_document(
    trace_id: str = "00000000-0000-0000-0000-000000000001",
    recipient: str = "linus@contoso.com",
    *,
    status: str = "Delivered",
    sender: str | None = "alice@example.com",
    received: str = "2024-05-01T10:00:00.000Z",
    subject: str | None = "Quarterly report",
    message_id: str | None = "<m1@example.com>",
    from_ip: str | None = "81.2.69.144",
    to_ip: str | None = None,
    direction: str | None = "inbound",
    tenant: str | None = None,
    size: int = 1234,
    observed_at: str | None = None,
    origin: str = "test.json",
    line: int = 1,
    window: tuple[str, str, int] | None = None,
) -> Document:
    """One document; ``sender=None`` means the null sender ``<>``; ``window`` = (StartDate, EndDate, Index)."""
    status = canonical_status(status)
    trace: dict[str, Any] = {
        "MessageTraceId": trace_id,
        "Received": received.rstrip("Z"),
        "RecipientAddress": recipient,
        "SenderAddress": sender or "<>",
        "Size": size,
        "Status": status,
    }
    if message_id:
        trace["MessageId"] = message_id
    if subject is not None:
        trace["Subject"] = subject
    if from_ip:
        trace["FromIP"] = from_ip
    if to_ip:
        trace["ToIP"] = to_ip
    if window:
        trace["StartDate"], trace["EndDate"], trace["Index"] = window
    email: dict[str, Any] = {
        "attachments": {"file": {"size": size}},
        "delivery_timestamp": received.rstrip("Z"),
        "local_id": trace_id,
        "to": {"address": [recipient]},
    }
    if sender:
        email["from"] = {"address": [sender]}
    if subject is not None:
        email["subject"] = subject
    if message_id:
        email["message_id"] = message_id
    if direction:
        email["direction"] = direction
    doc: dict[str, Any] = {
        "@timestamp": received,
        "destination": {"user": _user(recipient), "domain": recipient.partition("@")[2]},
        "ecs": {"version": "8.11.0"},
        "email": email,
        "event": {"category": ["email"], "outcome": _OUTCOME.get(status, "unknown"), "type": ["info"]},
        "microsoft": {"online_message_trace": trace},
    }
    if window:
        doc["event"]["original"] = repr(sorted(trace.items()))
    if sender:
        doc["source"] = {"user": _user(sender), "domain": sender.partition("@")[2]}
    if from_ip:
        doc.setdefault("source", {})["ip"] = from_ip
    if to_ip:
        doc["destination"]["ip"] = to_ip
    if tenant:
        doc["organization"] = {"name": tenant}
    fingerprint = base64.b64encode(
        hashlib.sha1(f"{trace_id}|{recipient}|{status}|{subject}|{size}".encode()).digest()
    ).decode()
    return Document(doc=doc, key=row_key(trace_id, recipient), fingerprint=fingerprint, status=status,
                    origin=origin, line=line, observed_at=observed_at)


def make_error_document(message: str = "field [Received] not present", *, original: str = "{}",
                        origin: str = "bad.json", line: int = 3) -> Document:
    """A ``pipeline_error`` document as the normalizer emits for a record it cannot read."""
    doc = {"event": {"kind": "pipeline_error", "original": original}, "error": {"message": message},
           "tags": ["preserve_original_event"]}
    return Document(doc=doc, key="", fingerprint="", status="", origin=origin, line=line)


def query_read_only(path: str | os.PathLike[str], sql: str) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` read through a read-only connection (a test's look at an archive another process
    writes)."""
    conn = sqlite3.connect(f"file:{os.fspath(path)}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()
