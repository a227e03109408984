"""Turn one raw message-trace record into an ECS document, field for field as Elastic's integration does.

The steps follow Elastic's ingest pipeline (see docs/normalize.md): Graph keys are renamed to legacy
names and kept under ``microsoft.online_message_trace``; sender and recipient fill ``email.*``,
``source.*``/``destination.*`` (with public-suffix parts and GeoIP/ASN), ``related.user`` and ``user.*``;
``email.direction`` comes from the local domains; empty values are dropped; a record that cannot be
normalized becomes an ``event.kind: pipeline_error`` document that keeps the original.

The document is written directly as compact JSON, in the key order Elastic's documents have, from
cached fragments for what repeats (addresses, domains, IPs, statuses: :mod:`.fragments`). Nothing
builds it as nested dicts first: that was most of the time spent per row. ``Document.doc`` decodes it
when a caller wants a dict.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import orjson

from exotrace.model import (
    GRAPH_TO_LEGACY,
    VOLATILE_TRACE_FIELDS,
    Document,
    RawRecord,
    Summary,
    canonical_status,
    legacy_fields,
)
from exotrace.normalize.dates import (
    format_iso,
    format_millis,
    is_iso,
    iso_text,
    parse_timestamp,
    utc_iso_millis,
)
from exotrace.normalize.fragments import AddressParts, FragmentCache, IpParts, NormalizeError, quote
from exotrace.normalize.geo import GeoEnricher
from exotrace.normalize.safe import safe_json_text, safe_json_value

ECS_VERSION = "8.11.0"
_ECS = f'{{"version":"{ECS_VERSION}"}}'
_RENAME = GRAPH_TO_LEGACY
_FAILURE_STATUSES = frozenset({"failed", "quarantined", "filteredasspam"})
#: (sender local, recipient local) -> (email.direction, its JSON member).
_DIRECTIONS = {
    (s, r): (d, f',"direction":"{d}"')
    for (s, r), d in {(True, True): "internal", (False, False): "external", (True, False): "outbound",
                      (False, True): "inbound"}.items()
}
_NO_DIRECTION: tuple[str | None, str] = (None, "")
_VOLATILE_TRACE = VOLATILE_TRACE_FIELDS
_TRACE_OPEN = b',"microsoft":{"online_message_trace":'
_new_summary = tuple.__new__  # a NamedTuple built without the Python-level __new__ (the hot path)
#: Elasticsearch ``long`` bounds: a Size outside them is refused as Elastic's convert processor would.
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
#: Extra fields exotrace adds beyond Elastic's document (documented in the README).
EXTRA_FIELDS = ("event.action", "organization.name", "related.ip")


@dataclass(frozen=True, kw_only=True)
class NormalizeOptions:
    """How documents are built.

    local_domains: domains whose mail counts as local for ``email.direction`` (compared
        case-insensitively, exact match, subdomains are not local). Empty means no direction.
    geoip_dir: folder with City/ASN mmdb files (None: the usual system folders).
    geoip: False disables GeoIP entirely.
    preserve_original: keep ``event.original`` and add the ``preserve_original_event`` tag.
    tenant: label written to ``organization.name``.
    extras: add exotrace's extra fields (``event.action``, ``related.ip``); off gives Elastic's exact shape.
    address_cache_size: addresses (and IPs, domains) whose JSON parts are kept between records (each
        cache empties when full); a long-running collector may want it smaller.
    """

    local_domains: tuple[str, ...] = ()
    geoip_dir: str | os.PathLike[str] | None = None
    geoip: bool = True
    preserve_original: bool = False
    tenant: str | None = None
    extras: bool = True
    tags: tuple[str, ...] = field(default=())
    address_cache_size: int = 100_000


class Normalizer:
    """Reusable, cached normalizer: build one per run and call :meth:`normalize` per record."""

    def __init__(self, options: NormalizeOptions | None = None, *, geo: GeoEnricher | None = None) -> None:
        self.options = options or NormalizeOptions()
        self._local = frozenset(d.lower() for d in self.options.local_domains)
        if geo is None and self.options.geoip:
            geo = GeoEnricher.from_dir(self.options.geoip_dir)
        self.geo = geo if geo is not None and geo.enabled else None
        tags = list(self.options.tags)
        if self.options.preserve_original and "preserve_original_event" not in tags:
            tags.append("preserve_original_event")
        self._tags = tags
        self._tags_field = f',"tags":{orjson.dumps(tags).decode()}' if tags else ""
        self._parts = FragmentCache(self._local, self.geo, self.options.address_cache_size)
        self._status_cache: dict[Any, tuple[str, str]] = {}
        self._ends: dict[str | None, bytes] = {}
        self._windows: dict[str, tuple[Any, str | None]] = {}
        self._extras = self.options.extras

    # -- public -----------------------------------------------------------------------------------
    def normalize(self, record: RawRecord) -> Document:
        """Build the document for ``record``; never raises for bad data."""
        try:
            return self._build(record)
        except NormalizeError as exc:
            return self._error_document(record, str(exc), exc.field)
        except UnicodeEncodeError:
            return self._error_document(
                record, "Processor 'json' failed with message 'str is not valid UTF-8: surrogates not allowed'",
                _unencodable_field(record.fields))
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
            return self._error_document(record, f"Processor 'script' failed with message '{exc}'")

    # -- building ---------------------------------------------------------------------------------
    def _build(self, record: RawRecord) -> Document:
        fields = record.fields
        if not isinstance(fields, dict):
            raise NormalizeError("json", "record is not a JSON object")
        # One pass: Graph keys renamed to legacy names, null and empty values dropped (Elastic's clean-up).
        if _RENAME.keys().isdisjoint(fields):  # legacy keys (PowerShell, RWS): nothing to rename
            m = {k: v for k, v in fields.items() if v is not None and v != ""}
        else:
            m = {_RENAME.get(k, k): v for k, v in fields.items() if v is not None and v != ""}
        get = m.get
        status_raw = get("Status")
        status, event_open = self._status(status_raw)

        # Dates: keep ISO text verbatim (as Elastic does); rewrite other shapes (/Date(ms)/, US culture) as ISO.
        received = get("Received")
        if received is None:
            raise NormalizeError("date", "field [email.delivery_timestamp] not present as part of path", "Received")
        timestamp = utc_iso_millis(received) if received.__class__ is str else None
        if timestamp is None:
            timestamp = self._slow_received(m, received)
        start, end = get("StartDate"), get("EndDate")
        end_observed = None
        if start is not None:
            m["StartDate"] = self._window_bound(start)[0]
        if end is not None:
            m["EndDate"], end_observed = self._window_bound(end)

        sender = get("SenderAddress", "")
        recipient = get("RecipientAddress", "")
        trace_id = get("MessageTraceId", "")
        subject = get("Subject", "")
        message_id = get("MessageId", "")
        from_ip = get("FromIP", "")
        to_ip = get("ToIP", "")
        if not (sender.__class__ is recipient.__class__ is trace_id.__class__ is subject.__class__
                is message_id.__class__ is from_ip.__class__ is to_ip.__class__ is str):
            sender, recipient, trace_id, subject, message_id, from_ip, to_ip = map(
                _scalar_text, _TEXT_FIELDS, (sender, recipient, trace_id, subject, message_id, from_ip, to_ip))
        if sender == "<>":
            sender = ""
        size = get("Size")
        if size is not None and (size.__class__ is not int or not _INT64_MIN <= size <= _INT64_MAX):
            size = _int(size)
        parts = self._parts
        try:  # free in CPython 3.11+ unless raised
            src = parts.address(sender) if sender else None
            dst = parts.address(recipient) if recipient else None
            src_ip = parts.ip(from_ip) if from_ip else None
            dst_ip = parts.ip(to_ip) if to_ip else None
        except NormalizeError as exc:
            exc.field = _failing_field(parts, sender, recipient, from_ip, to_ip)
            raise

        # email.*, in Elastic's key order
        direction, direction_field = _DIRECTIONS[(src is not None and src.local, dst is not None and dst.local)] \
            if self._local else _NO_DIRECTION
        attachments = f'"attachments":{{"file":{{"size":{size}}}}},' if size is not None else ""
        local_id = ',"local_id":' + quote(trace_id) if trace_id else ""
        q_message_id = ',"message_id":' + quote(message_id) if message_id else ""
        q_subject = ',"subject":' + quote(subject) if subject else ""
        email = (f'{{{attachments}"delivery_timestamp":{quote(m["Received"])}{src.from_field if src else ""}'
                 f'{local_id}{q_message_id}{q_subject}{dst.to_field if dst else ""}{direction_field}}}')
        source = _side("source", src, src_ip)
        destination = _side("destination", dst, dst_ip)
        related = self._related(recipient, sender, dst, src, src_ip, dst_ip, from_ip == to_ip)
        user = _user(direction, src, dst)
        tenant = self.options.tenant or record.tenant
        trace = m if record.flat or _CONTAINERS.isdisjoint(map(type, m.values())) else _clean(m)
        preserve = self.options.preserve_original
        event = f"{event_open},\"original\":{quote(record.original)}}}" if preserve else event_open + "}"
        head = (f'{{"@timestamp":"{timestamp}","ecs":{_ECS},"event":{event},"email":{email}{source}{destination}'
                f'{related}{user}').encode()
        # microsoft.online_message_trace stays in orjson's bytes; the end is cached per tenant
        end_part = self._end(tenant)
        json = b"".join((head, _TRACE_OPEN, _json(trace), b"}", end_part)) if trace else head + end_part
        # the fields of VOLATILE_TRACE_FIELDS (StartDate, EndDate, Index; tested), checked the cheap way
        volatile = preserve or start is not None or end is not None or "Index" in m
        summary = _new_summary(Summary, (
            size, sender, trace_id, message_id, subject, recipient,
            status_raw if status_raw.__class__ is str else _text(trace.get("Status")),
            timestamp, from_ip, to_ip, direction, tenant, volatile))
        observed = record.observed_at
        if not observed and end is not None:
            observed = end_observed
        stable = partial(_stable_json, timestamp, event_open, email, source, destination, related, user, trace,
                         end_part) if volatile else None
        return Document(None, None, None, status, record.origin, record.line, observed, json, summary, False,
                        stable)

    def _window_bound(self, value: Any) -> tuple[Any, str | None]:
        """(StartDate/EndDate as ISO text when it comes in another shape, the observation time it gives as
        a window end); cached (they repeat)."""
        if value.__class__ is str:
            found = self._windows.get(value)
            if found is None:
                bound = value if is_iso(value) else _iso_or_same(value)
                found = (bound, _observed_from_window(bound))
                if len(self._windows) >= 4096:
                    self._windows.clear()
                self._windows[value] = found
            return found
        bound = _iso_or_same(value)
        return bound, _observed_from_window(bound)

    def _status(self, raw: Any) -> tuple[str, str]:
        """(canonical status, ``event`` object without its closing brace) for a raw status value; cached."""
        cached = self._status_cache.get(raw) if raw.__class__ is str or raw is None else None
        if cached is None:
            status = canonical_status(raw) if raw is not None else ""
            lower = status.lower()
            outcome = "success" if lower == "delivered" else "failure" if lower in _FAILURE_STATUSES else "unknown"
            event: dict[str, Any] = {"category": ["email"], "outcome": outcome, "type": ["info"]}
            if self._extras and status:
                event["action"] = _action(status)
            cached = (status, orjson.dumps(event).decode()[:-1])
            if raw.__class__ is str or raw is None:
                self._status_cache[raw] = cached
        return cached

    def _slow_received(self, m: dict[str, Any], received: Any) -> str:
        """@timestamp for a Received value off the fast path; rewrites non-ISO shapes as ISO in ``m``."""
        try:
            parsed = parse_timestamp(received)
        except (ValueError, OverflowError) as exc:
            raise NormalizeError("date", f"unable to parse date [{received}]: {exc}", "Received") from None
        if not (received.__class__ is str and is_iso(received)):
            m["Received"] = format_iso(parsed)
        return format_millis(parsed)

    def _related(self, recipient: str, sender: str, dst: AddressParts | None, src: AddressParts | None,
                 src_ip: IpParts | None, dst_ip: IpParts | None, same_ip: bool) -> str:
        """``related.user`` (recipient, sender, their local parts; no duplicates) and ``related.ip``."""
        # an address holds an "@" and a local part none: only these two pairs can repeat
        if dst is not None and src is not None and dst.name and src.name and recipient != sender \
                and dst.name != src.name:
            users = f"[{dst.q_address},{src.q_address},{dst.q_name},{src.q_name}]"
        else:
            unique = _unique([recipient, sender, dst.name if dst else "", src.name if src else ""])
            users = f"[{','.join(map(quote, unique))}]" if unique else ""
        ips = ""
        if self._extras:
            if src_ip is not None:
                ips = f"[{src_ip.q_ip}]" if dst_ip is None or same_ip else f"[{src_ip.q_ip},{dst_ip.q_ip}]"
            elif dst_ip is not None:
                ips = f"[{dst_ip.q_ip}]"
        if users and ips:
            return f',"related":{{"user":{users},"ip":{ips}}}'
        if users:
            return f',"related":{{"user":{users}}}'
        return f',"related":{{"ip":{ips}}}' if ips else ""

    def _end(self, tenant: str | None) -> bytes:
        """The document's last members, ``organization`` and ``tags``, and its closing brace; cached."""
        found = self._ends.get(tenant)
        if found is None:
            organization = f',"organization":{{"name":{quote(tenant)}}}' if tenant else ""
            found = self._ends[tenant] = f"{organization}{self._tags_field}}}".encode()
        return found

    def _error_document(self, record: RawRecord, message: str, field: str | None = None) -> Document:
        doc: dict[str, Any] = {
            "ecs": {"version": ECS_VERSION},
            "event": {"kind": "pipeline_error", "original": safe_json_text(record.original)},
            "error": {"message": [safe_json_text(message)]},  # it may quote the bad value
            "tags": _unique([*self._tags, "preserve_original_event"]),
        }
        if isinstance(record.fields, dict):
            trace = _clean(safe_json_value(legacy_fields(record.fields)))
            if trace:
                doc["microsoft"] = {"online_message_trace": trace}
        if self.options.tenant or record.tenant:
            doc["organization"] = {"name": self.options.tenant or record.tenant}
        return Document(
            doc=doc, key="", fingerprint="", status="", origin=record.origin, line=record.line,
            observed_at=record.observed_at, is_error=True, error_field=field,
        )


def _stable_json(timestamp: str, event_open: str, email: str, source: str, destination: str, related: str,
                 user: str, trace: dict[str, Any], end: bytes) -> bytes:
    """A document's JSON without its volatile fields (``event.original``, the query window), exactly as
    ``orjson.dumps`` writes the document with those keys removed: the archive's content digest."""
    head = (f'{{"@timestamp":"{timestamp}","ecs":{_ECS},"event":{event_open}}},"email":{email}{source}'
            f'{destination}{related}{user}').encode()
    stable = {k: v for k, v in trace.items() if k not in _VOLATILE_TRACE}
    return b"".join((head, _TRACE_OPEN, orjson.dumps(stable), b"}", end)) if trace else head + end


def _json(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError as exc:  # an integer beyond 64 bits, a lone surrogate
        raise NormalizeError("json", str(exc), _unencodable_field(value)) from None


def _failing_field(parts: FragmentCache, sender: str, recipient: str, from_ip: str, to_ip: str) -> str | None:
    """Which address or IP the fragment cache refused (the error path only: the first that fails again)."""
    for name, value, lookup in (("SenderAddress", sender, parts.address), ("RecipientAddress", recipient,
                                parts.address), ("FromIP", from_ip, parts.ip), ("ToIP", to_ip, parts.ip)):
        try:
            if value:
                lookup(value)
        except NormalizeError:
            return name
    return None


def _unencodable_field(fields: Any) -> str | None:
    """The first field (by its legacy name) that JSON cannot encode: an integer beyond 64 bits, a lone
    surrogate (the error path only)."""
    if isinstance(fields, dict):
        for name, value in fields.items():
            try:
                orjson.dumps(value)
            except orjson.JSONEncodeError:
                return _RENAME.get(name, name)
    return None


def _side(name: str, address: AddressParts | None, ip: IpParts | None) -> str:
    """``,"source":{...}`` / ``,"destination":{...}``: the address parts, then the IP and its GeoIP data."""
    if address is None:
        return f',"{name}":{{{ip.side}}}' if ip is not None else ""
    return f',"{name}":{address.side},{ip.side}}}' if ip is not None else f',"{name}":{address.side}}}'


def _user(direction: str | None, src: AddressParts | None, dst: AddressParts | None) -> str:
    """Top-level ``user``: the recipient for inbound mail, the sender for outbound, both for internal."""
    if direction == "inbound":
        return f',"user":{dst.user}' if dst else ""
    if direction == "outbound":
        return f',"user":{src.user}' if src else ""
    if direction != "internal" or (dst is None and src is None):
        return ""
    if dst is None or src is None:
        return f',"user":{(dst or src).user}'  # type: ignore[union-attr]
    emails = _distinct(dst.q_address, src.q_address)
    return f',"user":{{"email":{emails},"id":{emails},"name":{_distinct(dst.q_name, src.q_name)}}}'


def _distinct(first: str, second: str) -> str:
    """Two JSON values as Elastic's appends leave them (``allow_duplicates: false``, then one value unlisted)."""
    return first if first == second else f"[{first},{second}]"


_ACTIONS: dict[str, str] = {}


def _action(status: str) -> str:
    """``FilteredAsSpam`` -> ``filtered-as-spam``: a stable, case-free ``event.action``."""
    action = _ACTIONS.get(status)
    if action is None:
        action = "".join("-" + c.lower() if c.isupper() and i else c.lower() for i, c in enumerate(status))
        _ACTIONS[status] = action
    return action


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


_TEXT_FIELDS = ("SenderAddress", "RecipientAddress", "MessageTraceId", "Subject", "MessageId", "FromIP", "ToIP")


def _scalar_text(name: str, value: Any) -> str:
    """A text field's value as text; a list or object there is no value a row can hold."""
    if isinstance(value, list | dict):
        raise NormalizeError("json", f"field [{name}] is not a single value: {orjson.dumps(value).decode()[:200]}",
                             name)
    return str(value)


def _int(value: Any) -> int:
    """Size as an Elasticsearch ``long``, or NormalizeError as Elastic's convert processor would fail."""
    if isinstance(value, bool):
        raise NormalizeError("convert", f"field [Size] is not a number: {value!r}", "Size")
    if isinstance(value, int):
        number = value
    elif isinstance(value, float) and abs(value) > _INT64_MAX:  # a JSON integer beyond 64 bits reads as float
        raise NormalizeError("convert", f"field [Size] is out of range for a long: {value!r}", "Size")
    else:
        try:
            number = int(str(value).strip())
        except ValueError:
            raise NormalizeError("convert", f"field [Size] is not a number: {value!r}", "Size") from None
    if not _INT64_MIN <= number <= _INT64_MAX:
        raise NormalizeError("convert", f"field [Size] is out of range for a long: {value!r}", "Size")
    return number


def _unique(values: list[Any]) -> list[Any]:
    out: list[Any] = []
    for v in values:
        if v not in (None, "") and v not in out:
            out.append(v)
    return out


_CONTAINERS = frozenset({dict, list})


def _clean(value: Any) -> Any:
    """Drop None, "" and containers that end up empty (Elastic's final clean-up script)."""
    if isinstance(value, dict):
        flat = {k: v for k, v in value.items() if v is not None and v != ""}
        if _CONTAINERS.isdisjoint(map(type, flat.values())):
            return flat
        out = {}
        for k, v in value.items():
            if v is None or v == "":
                continue
            if isinstance(v, (dict, list)):
                v = _clean(v)
                if not v:
                    continue
            out[k] = v
        return out
    if isinstance(value, list):
        cleaned = [_clean(v) if isinstance(v, (dict, list)) else v for v in value]
        return [v for v in cleaned if v is not None and v != "" and v != {} and v != []]
    return value


def _iso_or_same(value: Any) -> Any:
    """A query bound rewritten as ISO 8601 UTC, or as it was when it is no timestamp (it is informational)."""
    try:
        return iso_text(value) if value.__class__ is str else format_iso(parse_timestamp(value))
    except (ValueError, OverflowError):
        return value


def _observed_from_window(end: Any) -> str | None:
    """For exports, the query window's end is the best available observation time."""
    if isinstance(end, str) and end:
        try:
            return iso_text(end)
        except (ValueError, OverflowError):
            return None
    return None
