"""The record model shared by every stage: raw input records, rejects, statuses and row identity.

A message-trace row is one (message, recipient) pair. Every input shape (Graph JSON, Reporting Web
Service pages, PowerShell exports, admin-center CSV) is read into a :class:`RawRecord` whose
``fields`` use the keys the input had; :func:`legacy_fields` maps Graph's camelCase keys onto the
14 legacy names, which is what the normalizer and the archive work with.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, NamedTuple

import orjson

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
    """0 for provisional statuses (and a missing one), 1 for final ones: a final status is never replaced by
    a provisional one, and a row that says no status never outranks one that does."""
    status = canonical_status(status)
    return 0 if not status or status in PROVISIONAL_STATUSES else 1


def observation_version(status: str, observed_at: str | None) -> int:
    """A number that grows with the archive's order of observations of a row: a final status over a
    provisional one, then the later observation (``observed_at``, milliseconds; unknown counts as oldest).
    Always at least 1.

    Sinks that keep one document per row (Elasticsearch ``index`` mode) send it as an external version, so
    an older state retried or replayed after a newer one cannot overwrite it.
    """
    millis = _observed_millis(observed_at) if observed_at else 0
    return ((status_rank(status) << 42) | min(millis, (1 << 42) - 2)) + 1


@lru_cache(maxsize=4096)
def _observed_millis(observed_at: str) -> int:
    """Epoch milliseconds of an observation time (0 when unreadable); cached: a page's rows share one."""
    try:
        stamp = datetime.fromisoformat(observed_at.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return 0
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    try:
        return max(0, int(stamp.timestamp() * 1000))
    except (ValueError, OverflowError):
        return 0


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
    #: True when the reader knows that no value of ``fields`` is a dict or a list (a CSV row, an NDJSON
    #: line without nested braces): the normalizer then skips looking for nested values to clean.
    flat: bool = False


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


class Summary(NamedTuple):
    """The values a document was built from that the archive and the sinks need, kept beside its JSON
    so they need not decode it. Addresses, ids and IPs as in the document; "" when absent."""

    size: int | None
    sender: str
    trace_id: str
    message_id: str
    subject: str
    recipient: str
    #: The status as written in ``microsoft.online_message_trace.Status`` (what Elastic fingerprints).
    raw_status: str
    timestamp: str
    from_ip: str
    to_ip: str
    direction: str | None
    tenant: str | None
    #: True when the document holds fields that change between fetches of the same row (the query
    #: window, ``event.original``): see :data:`VOLATILE_EVENT_FIELDS`, :data:`VOLATILE_TRACE_FIELDS`.
    volatile: bool


#: Fields that differ between two fetches of the same row without the row changing: the query window
#: (StartDate, EndDate, Index) and anything derived from it or from the fetch time.
VOLATILE_EVENT_FIELDS = frozenset({"original", "ingested", "created"})
VOLATILE_TRACE_FIELDS = frozenset({"StartDate", "EndDate", "Index"})


class Document:
    """A normalized ECS document plus the identity the archive and sinks need.

    The document exists as a dict (``doc``) and as compact JSON (``json``); either may be given and the
    other is derived on first use. The normalizer hands out JSON, which is what the archive, the NDJSON
    output and the sinks write, so most documents are never decoded. Treat both as read-only.

    ``key`` and ``fingerprint`` may be given as values or, by the normalizer, left as None and derived on
    first use from ``summary``, so a path that needs neither (file to NDJSON) does not pay for them.
    """

    __slots__ = ("_doc", "_json", "_key", "_fingerprint", "summary", "status", "origin", "line",
                 "observed_at", "is_error", "stable_json", "error_field")

    def __init__(self, doc: dict[str, Any] | None = None, key: str | None = "", fingerprint: str | None = "",
                 status: str = "", origin: str = "", line: int = 0, observed_at: str | None = None,
                 json: bytes | None = None, summary: Summary | None = None, is_error: bool | None = None,
                 stable_json: Callable[[], bytes] | None = None, error_field: str | None = None) -> None:
        if doc is None and json is None:
            raise TypeError("Document needs doc or json")
        self._doc = doc
        self._json = json
        self._key = key
        self._fingerprint = fingerprint
        #: What the normalizer built the document from (None for documents made from a dict).
        self.summary = summary
        self.status = status
        self.origin = origin
        self.line = line
        self.observed_at = observed_at
        #: True for ``event.kind: pipeline_error`` documents (records that could not be normalized).
        self.is_error = _is_error_doc(doc) if is_error is None else is_error
        #: For a normalizer document with volatile fields: makes the JSON without them (what the archive's
        #: content digest covers) without decoding the document.
        self.stable_json = stable_json
        #: For a pipeline error: the input field (legacy name) the normalizer could not use, when one was.
        self.error_field = error_field

    @property
    def doc(self) -> dict[str, Any]:
        """The ECS document as a dict (decoded from ``json`` on first use)."""
        if self._doc is None:
            self._doc = orjson.loads(self._json)  # type: ignore[arg-type]
        return self._doc

    @property
    def json(self) -> bytes:
        """The ECS document as compact UTF-8 JSON (encoded from ``doc`` on first use)."""
        if self._json is None:
            self._json = orjson.dumps(self._doc)
        return self._json

    @property
    def key(self) -> str:
        """``row_key(trace_id, recipient)``; empty for documents without identity (pipeline errors)."""
        if self._key is None:
            s = self.summary
            trace_id, recipient = s.trace_id, s.recipient  # type: ignore[union-attr]
            # a blank trace id is none: such a row gets a derived key (a shared "|recipient" would merge mails)
            self._key = row_key(trace_id, recipient) if trace_id.strip() and recipient.strip() else ""
        return self._key

    @key.setter
    def key(self, value: str) -> None:
        self._key = value

    @property
    def fingerprint(self) -> str:
        """Elastic's fingerprint (SHA-1, base64), usable as Elasticsearch ``_id``."""
        if self._fingerprint is None:
            from exotrace.normalize.fingerprint import fingerprint_values

            self._fingerprint = fingerprint_values(*self.summary[:7])  # type: ignore[index]
        return self._fingerprint

    def __repr__(self) -> str:
        return f"Document(key={self.key!r}, status={self.status!r}, origin={self.origin!r}, line={self.line})"


def _is_error_doc(doc: dict[str, Any] | None) -> bool:
    event = doc.get("event") if doc else None
    return isinstance(event, dict) and event.get("kind") == "pipeline_error"
