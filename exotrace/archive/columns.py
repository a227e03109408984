"""Pull the archive's search columns out of an ECS document, and hash its content.

Pure functions, no I/O. The column order here is the order of :data:`SEARCH_COLUMNS` in the
``messages`` table.
"""

from __future__ import annotations

import ipaddress
from datetime import date
from functools import lru_cache
from hashlib import blake2b, sha1
from typing import Any

import orjson

from exotrace.model import VOLATILE_EVENT_FIELDS, VOLATILE_TRACE_FIELDS, Document, canonical_status, row_key
from exotrace.timeparse import normalize_ts

__all__ = [
    "DERIVED_PREFIX", "SEARCH_COLUMNS", "day_number", "derived_key", "encode", "extract",
    "ip_variants", "normalize_ip", "observation_digest", "reverse_domain", "split_address",
]

SEARCH_COLUMNS: tuple[str, ...] = (
    "trace_id",
    "recipient",
    "recipient_rdomain",
    "sender",
    "sender_rdomain",
    "received",
    "day",
    "status",
    "subject",
    "message_id",
    "from_ip",
    "to_ip",
    "direction",
    "tenant",
    "size",
    "fingerprint",
)

#: SQLite integers are signed 64-bit.
_INT64 = range(-(2**63), 2**63)
#: Trace-id part of the key of a row that has no MessageTraceId (see :func:`derived_key`).
DERIVED_PREFIX = "derived-"


_EPOCH = date(1970, 1, 1).toordinal()
_DAYS: dict[str, int] = {}


def day_number(received: str | None) -> int:
    """Days since 1970-01-01 of an archive time (``YYYY-MM-DD...``); 0 when unknown.

    The leading column of the search indexes: new mail lands in the newest day's part of each index.
    """
    if not received:
        return 0
    prefix = received[:10]
    day = _DAYS.get(prefix)
    if day is None:
        try:
            day = date.fromisoformat(prefix).toordinal() - _EPOCH
        except ValueError:
            day = 0
        if len(_DAYS) < 100_000:
            _DAYS[prefix] = day
    return day


def reverse_domain(domain: str | None) -> str | None:
    """``Mail.Contoso.com`` -> ``com.contoso.mail`` (lower-cased, labels reversed), for suffix ranges."""
    if not domain:
        return None
    return ".".join(reversed(domain.strip().strip(".").lower().split(".")))


_ADDRESSES: dict[str, tuple[str | None, str | None]] = {}


def split_address(address: str | None) -> tuple[str | None, str | None]:
    """Lower-cased address and its label-reversed domain; ``(None, None)`` for empty or ``<>``."""
    if not address or not isinstance(address, str):
        return None, None
    found = _ADDRESSES.get(address)
    if found is not None:
        return found
    text = address.strip().lower()
    if not text or text == "<>":
        found = (None, None)
    else:
        _, at, domain = text.rpartition("@")
        found = (text, reverse_domain(domain) if at else None)
    if len(_ADDRESSES) >= 200_000:  # the same addresses repeat; keep the cache bounded
        _ADDRESSES.clear()
    _ADDRESSES[address] = found
    return found


def normalize_ip(value: Any) -> str | None:
    """An IP as stored: stripped; IPv6 in its compressed form, so every spelling of it is found (the search
    also tries the usual spellings, for rows stored before)."""
    if not value or not isinstance(value, str):
        return None
    text = value.strip().lower()
    return _ipv6_stored(text) if ":" in text else text or None


@lru_cache(maxsize=65536)
def _ipv6_stored(text: str) -> str:
    """An IPv6 address compressed (cached: the same addresses come again and again, and parsing is the
    costly part of a row's columns); an IPv4-mapped one keeps its dotted tail (Python writes
    ::ffff:cb00:7107); what does not parse, as it is."""
    try:
        ip = ipaddress.IPv6Address(text)
    except ValueError:
        return text
    return f"::ffff:{ip.ipv4_mapped}" if ip.ipv4_mapped else ip.compressed


def ip_variants(value: str) -> list[str]:
    """Spellings an IP may be stored under: as stored now (:func:`normalize_ip`), and as typed, compressed
    and exploded (IPv6), for rows stored before. Raises ValueError."""
    ip = ipaddress.ip_address(value.strip())
    return sorted({value.strip().lower(), ip.compressed, ip.exploded, normalize_ip(value) or ""} - {""})


def _first(values: Any) -> str | None:
    if isinstance(values, list):
        return values[0] if values else None
    return values if isinstance(values, str) else None


def extract(document: Document) -> tuple[Any, ...]:
    """The :data:`SEARCH_COLUMNS` values of ``document``, in order."""
    s = document.summary
    if s is not None:  # the normalizer's values: no need to decode the JSON
        recipient, recipient_rdomain = split_address(s.recipient)
        sender, sender_rdomain = split_address(s.sender)
        received = normalize_ts(s.timestamp)
        return (
            s.trace_id.strip().lower(), recipient, recipient_rdomain, sender, sender_rdomain, received,
            day_number(received), canonical_status(document.status), s.subject or None, s.message_id or None,
            normalize_ip(s.from_ip), normalize_ip(s.to_ip), s.direction, s.tenant, s.size, document.fingerprint or None,
        )
    doc = document.doc
    email = doc.get("email") or {}
    trace_id = email.get("local_id") or document.key.partition("|")[0]
    recipient, recipient_rdomain = split_address(_first((email.get("to") or {}).get("address")))
    if recipient is None:
        recipient = document.key.partition("|")[2]
        recipient_rdomain = reverse_domain(recipient.rpartition("@")[2]) if "@" in recipient else None
    sender, sender_rdomain = split_address(_first((email.get("from") or {}).get("address")))
    size = ((email.get("attachments") or {}).get("file") or {}).get("size")
    received = normalize_ts(doc.get("@timestamp"))
    return (
        str(trace_id).strip().lower(),
        recipient,
        recipient_rdomain,
        sender,
        sender_rdomain,
        received,
        day_number(received),
        canonical_status(document.status),
        email.get("subject"),
        email.get("message_id"),
        normalize_ip((doc.get("source") or {}).get("ip")),
        normalize_ip((doc.get("destination") or {}).get("ip")),
        email.get("direction"),
        (doc.get("organization") or {}).get("name"),
        size if isinstance(size, int) and size in _INT64 else None,
        document.fingerprint or None,
    )


def derived_key(document: Document, occurrence: int = 1) -> str:
    """A stable row key for a document without MessageTraceId (the admin center's summary report has none).

    ``derived-<hash>|<recipient>``, the hash taken over the Message-ID and ``@timestamp`` (the received time),
    or, without a Message-ID, over the sender, subject and ``@timestamp``: the same row read again gets the
    same key, so its status can change in place. Empty when the document has no recipient. A report lists
    each message once per recipient, so a second row of one file with the same values is another message
    (an alert sent twice in one second): ``occurrence`` 2, 3, ... keys it ``derived-<hash>.2|...``.
    """
    s = document.summary
    if s is not None:  # the normalizer's values, as the document holds them
        recipient, message_id, sender, subject, timestamp = s.recipient, s.message_id, s.sender, s.subject, s.timestamp
    else:
        doc = document.doc
        email = doc.get("email") or {}
        recipient = _first((email.get("to") or {}).get("address"))
        message_id, subject, timestamp = email.get("message_id"), email.get("subject"), doc.get("@timestamp")
        sender = _first((email.get("from") or {}).get("address")) or ""
    if not isinstance(recipient, str) or not recipient.strip():
        return ""
    if message_id:
        basis: tuple[Any, ...] = ("m", message_id, timestamp)
    else:
        basis = ("s", sender.lower(), subject or "", timestamp)
    text = "\x00".join(str(part or "") for part in basis)
    digest = blake2b(text.encode("utf-8", "backslashreplace"), digest_size=10).hexdigest()
    return row_key(DERIVED_PREFIX + digest + (f".{occurrence}" if occurrence > 1 else ""), recipient)


def encode(document: Document) -> tuple[bytes, bytes]:
    """The document's JSON (UTF-8 bytes) and a 16-byte digest of its content without the volatile fields.

    The digest only detects changes (it is no security boundary); SHA-1 is the fastest hashlib digest.

    Content is compared by the JSON encoding (the normalizer writes keys in a fixed order), minus
    :data:`~exotrace.model.VOLATILE_EVENT_FIELDS` and :data:`~exotrace.model.VOLATILE_TRACE_FIELDS`. A
    normalizer document says whether it holds any (``Summary.volatile``); when not, the JSON is the content.
    """
    raw = document.json
    summary = document.summary
    if summary is not None and not summary.volatile:
        return raw, sha1(raw).digest()[:16]
    if document.stable_json is not None:
        return raw, sha1(document.stable_json()).digest()[:16]
    doc = document.doc
    stable = _without_volatile(doc)
    digest = sha1(raw if stable is doc else orjson.dumps(stable)).digest()[:16]  # fastest hashlib digest here
    return raw, digest


def observation_digest(doc: dict[str, Any]) -> bytes:
    """Digest of what Microsoft reported: ``microsoft.online_message_trace`` without the query window, keys sorted.

    Two documents of a row with the same digest are the same observation rendered differently (other
    ``--local-domain``, GeoIP or tenant options); a different digest means Microsoft said something else.
    """
    microsoft = doc.get("microsoft")
    trace = microsoft.get("online_message_trace") if isinstance(microsoft, dict) else None
    if not isinstance(trace, dict):
        return b""
    stable = {k: v for k, v in trace.items() if k not in VOLATILE_TRACE_FIELDS}
    return sha1(orjson.dumps(stable, option=orjson.OPT_SORT_KEYS)).digest()[:16]


def _without_volatile(doc: dict[str, Any]) -> dict[str, Any]:
    event = doc.get("event")
    microsoft = doc.get("microsoft")
    trace = microsoft.get("online_message_trace") if isinstance(microsoft, dict) else None
    stable = doc
    if isinstance(event, dict) and not VOLATILE_EVENT_FIELDS.isdisjoint(event):
        stable = dict(stable)
        stable["event"] = {k: v for k, v in event.items() if k not in VOLATILE_EVENT_FIELDS}
    if isinstance(trace, dict) and not VOLATILE_TRACE_FIELDS.isdisjoint(trace):
        stable = dict(stable)
        stable["microsoft"] = {
            **microsoft,  # type: ignore[dict-item]
            "online_message_trace": {k: v for k, v in trace.items() if k not in VOLATILE_TRACE_FIELDS},
        }
    return stable
