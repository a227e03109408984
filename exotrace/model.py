"""The record model shared by every stage: raw input records, rejects, statuses and row identity.

A message-trace row is one (message, recipient) pair. Every input shape (Graph JSON, Reporting Web
Service pages, PowerShell exports, admin-center CSV) is read into a :class:`RawRecord` whose
``fields`` use the keys the input had; :func:`legacy_fields` maps Graph's camelCase keys onto the
14 legacy names, which is what the normalizer and the archive work with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: The 14 legacy fields, in the order the Reporting Web Service and Get-MessageTrace emit them.
LEGACY_FIELDS: tuple[str, ...] = (
    "Organization",
    "MessageId",
    "Received",
    "SenderAddress",
    "RecipientAddress",
    "Subject",
    "Status",
    "ToIP",
    "FromIP",
    "Size",
    "MessageTraceId",
    "StartDate",
    "EndDate",
    "Index",
)

#: Graph ``exchangeMessageTrace`` property -> legacy field name.
GRAPH_TO_LEGACY: dict[str, str] = {
    "fromIP": "FromIP",
    "messageId": "MessageId",
    "id": "MessageTraceId",
    "receivedDateTime": "Received",
    "recipientAddress": "RecipientAddress",
    "senderAddress": "SenderAddress",
    "size": "Size",
    "status": "Status",
    "subject": "Subject",
    "toIP": "ToIP",
}

#: Canonical status names (the legacy spelling). Graph's lower-camel values map onto these.
STATUSES: tuple[str, ...] = (
    "GettingStatus",
    "Pending",
    "Delivered",
    "Expanded",
    "Failed",
    "FilteredAsSpam",
    "Quarantined",
    "Resolved",
    "Recalled",
    "None",
)
_STATUS_BY_LOWER = {s.lower(): s for s in STATUSES}
#: Statuses that Microsoft replaces later; every other status is final (but may still change).
PROVISIONAL_STATUSES = frozenset({"GettingStatus", "Pending"})


def canonical_status(value: object) -> str:
    """Map any spelling (``delivered``, ``Delivered``, ``filteredAsSpam``) to the canonical name.

    Unknown values are returned unchanged (stripped) so nothing is lost.
    """
    text = str(value or "").strip()
    return _STATUS_BY_LOWER.get(text.lower(), text)


def status_rank(status: str) -> int:
    """0 for provisional statuses, 1 for final ones: a final status is never replaced by a provisional one."""
    return 0 if canonical_status(status) in PROVISIONAL_STATUSES else 1


def graph_status(status: str) -> str:
    """Canonical status -> Graph's lower-camel enum value (``FilteredAsSpam`` -> ``filteredAsSpam``)."""
    s = canonical_status(status)
    return s[:1].lower() + s[1:] if s else s


def legacy_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """Rename Graph keys to legacy names, keeping every other key (and the key order) as given."""
    return {GRAPH_TO_LEGACY.get(k, k): v for k, v in fields.items()}


def row_key(trace_id: str, recipient: str) -> str:
    """Stable identity of a row: message trace id and recipient, compared case-insensitively."""
    return f"{trace_id.strip().lower()}|{recipient.strip().lower()}"


@dataclass(slots=True)
class RawRecord:
    """One input record before normalization.

    ``fields`` holds the decoded object with the input's own keys (Graph camelCase or legacy
    PascalCase). ``original`` is the exact text kept as ``event.original``. ``origin`` and ``line``
    locate the record (file path and 1-based line, or URL and row position) for error messages.
    """

    fields: dict[str, Any]
    original: str
    origin: str = ""
    line: int = 0
    #: Where the record came from: "graph", "rws", "powershell", "csv", ...
    shape: str = ""
    #: Tenant label carried into the document (``organization.name``), when known.
    tenant: str | None = None
    #: When the record was observed (fetch time, or the export's query end); ISO 8601 UTC, optional.
    observed_at: str | None = None


@dataclass(slots=True)
class Reject:
    """An input record that could not be read; kept so nothing is lost."""

    origin: str
    line: int
    reason: str
    raw: str = ""
    field: str | None = None

    def describe(self) -> str:
        """``FILE:LINE: reason`` as printed to the user."""
        where = f"{self.origin}:{self.line}" if self.line else self.origin
        fld = f" (field {self.field})" if self.field else ""
        return f"{where}: {self.reason}{fld}"


@dataclass(slots=True)
class Document:
    """A normalized ECS document plus the identity the archive and sinks need."""

    doc: dict[str, Any]
    #: ``row_key(trace_id, recipient)``; empty for pipeline_error documents without identity.
    key: str
    #: Elastic's fingerprint (SHA-1, base64), usable as Elasticsearch ``_id``.
    fingerprint: str
    #: Canonical status.
    status: str
    origin: str = ""
    line: int = 0
    observed_at: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_error(self) -> bool:
        return self.doc.get("event", {}).get("kind") == "pipeline_error"
