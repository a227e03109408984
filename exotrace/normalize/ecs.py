"""Turn one raw message-trace record into an ECS document, field for field as Elastic's integration does.

The steps follow Elastic's ingest pipeline (see docs/normalize.md): Graph keys are renamed to legacy
names and kept under ``microsoft.online_message_trace``; sender and recipient fill ``email.*``,
``source.*``/``destination.*`` (with public-suffix parts and GeoIP/ASN), ``related.user`` and ``user.*``;
``email.direction`` comes from the local domains; empty values are dropped; a record that cannot be
normalized becomes an ``event.kind: pipeline_error`` document that keeps the original.

Documents may share nested objects (constants, per-address templates, GeoIP results) for speed:
treat a document as read-only, or deep-copy it before changing it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from exotrace.model import GRAPH_TO_LEGACY, Document, RawRecord, canonical_status, legacy_fields, row_key
from exotrace.normalize.dates import (
    format_iso,
    format_millis,
    is_iso,
    is_iso_cached,
    iso_text,
    parse_timestamp,
    utc_iso_millis,
)
from exotrace.normalize.domains import domain_parts
from exotrace.normalize.fingerprint import fingerprint_values
from exotrace.normalize.geo import GeoEnricher

ECS_VERSION = "8.11.0"
# Constant sub-objects shared by every document (documents are never mutated; see the module docstring).
_ECS = {"version": ECS_VERSION}
_CATEGORY = ["email"]
_TYPE = ["info"]
_RENAME = GRAPH_TO_LEGACY
_FAILURE_STATUSES = frozenset({"failed", "quarantined", "filteredasspam"})
_WINDOW_FIELDS = ("StartDate", "EndDate")
_DIRECTIONS = {
    (True, True): "internal", (False, False): "external", (True, False): "outbound", (False, True): "inbound"
}
#: Extra fields exotrace adds beyond Elastic's document (documented in the README).
EXTRA_FIELDS = ("event.action", "organization.name", "related.ip")


class NormalizeError(ValueError):
    """A record that cannot become an ECS document; ``processor`` names the failing step."""

    def __init__(self, processor: str, message: str) -> None:
        super().__init__(f"Processor '{processor}' failed with message '{message}'")
        self.processor = processor


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
    address_cache_size: addresses whose ECS parts are kept between records (the cache empties when full);
        a long-running collector may want it smaller.
    """

    local_domains: tuple[str, ...] = ()
    geoip_dir: str | os.PathLike[str] | None = None
    geoip: bool = True
    preserve_original: bool = False
    tenant: str | None = None
    extras: bool = True
    tags: tuple[str, ...] = field(default=())
    address_cache_size: int = 200_000


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
        self._address_cache: dict[str, tuple[str, dict[str, Any], bool]] = {}
        self._status_cache: dict[Any, tuple[str, str, str]] = {}
        self._extras = self.options.extras

    # -- public -----------------------------------------------------------------------------------
    def normalize(self, record: RawRecord) -> Document:
        """Build the document for ``record``; never raises for bad data."""
        try:
            return self._build(record)
        except NormalizeError as exc:
            return self._error_document(record, str(exc))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
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
        status, outcome, action = self._status(status_raw)
        event: dict[str, Any] = {"category": _CATEGORY, "outcome": outcome, "type": _TYPE}
        if action:
            event["action"] = action

        # Dates: keep ISO text verbatim (as Elastic does); rewrite other shapes (/Date(ms)/, US culture) as ISO.
        received = get("Received")
        if received is None:
            raise NormalizeError("date", "field [email.delivery_timestamp] not present as part of path")
        timestamp = utc_iso_millis(received) if received.__class__ is str else None
        if timestamp is None:
            timestamp = self._slow_received(m, received)
        for name in _WINDOW_FIELDS:
            value = get(name)
            if value is not None and not (value.__class__ is str and is_iso_cached(value)):
                try:
                    m[name] = iso_text(value) if value.__class__ is str else format_iso(parse_timestamp(value))
                except ValueError:
                    pass  # informational query bounds: kept as they are

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
                str, (sender, recipient, trace_id, subject, message_id, from_ip, to_ip))
        if sender == "<>":
            sender = ""
        size = get("Size")
        if size is not None and size.__class__ is not int:
            size = _int(size)

        email: dict[str, Any] = {
            "attachments": {"file": {"size": size}},
            "delivery_timestamp": m["Received"],
            "from": {"address": [sender]},
            "local_id": trace_id,
            "message_id": message_id,
            "subject": subject,
            "to": {"address": [recipient]},
        }
        if size is None:
            del email["attachments"]
        if not sender:
            del email["from"]
        if not trace_id:
            del email["local_id"]
        if not message_id:
            del email["message_id"]
        if not subject:
            del email["subject"]
        if not recipient:
            del email["to"]
        doc: dict[str, Any] = {"@timestamp": timestamp, "ecs": _ECS, "event": event, "email": email}

        src = self._address(sender) if sender else None
        dst = self._address(recipient) if recipient else None
        if src is not None or from_ip:
            source = dict(src[1]) if src is not None else {}
            if from_ip:
                self._ip(source, from_ip)
            doc["source"] = source
        if dst is not None or to_ip:
            destination = dict(dst[1]) if dst is not None else {}
            if to_ip:
                self._ip(destination, to_ip)
            doc["destination"] = destination

        direction = None
        if self._local:
            direction = _DIRECTIONS[(src is not None and src[2], dst is not None and dst[2])]
            email["direction"] = direction

        users = [recipient, sender, dst[0] if dst else "", src[0] if src else ""]
        if not (users[0] and users[1] and users[2] and users[3]) or len(set(users)) < 4:
            users = _unique(users)
        related: dict[str, Any] = {"user": users} if users else {}
        if self._extras and (from_ip or to_ip):
            related["ip"] = [from_ip] if not to_ip or to_ip == from_ip else [from_ip, to_ip] if from_ip else [to_ip]
        if related:
            doc["related"] = related
        if direction is not None and direction != "external":
            if direction == "inbound":
                people = [dst[1]["user"]] if dst else []
            elif direction == "outbound":
                people = [src[1]["user"]] if src else []
            else:
                people = [p[1]["user"] for p in (dst, src) if p is not None]
            if len(people) == 1:
                person = people[0]
                doc["user"] = {"email": person["email"], "id": person["id"], "name": person["name"]}
            elif people:
                doc["user"] = {k: [p[k] for p in people] for k in ("email", "id", "name")}

        trace = m if _CONTAINERS.isdisjoint(map(type, m.values())) else _clean(m)
        if trace:
            doc["microsoft"] = {"online_message_trace": trace}
        tenant = self.options.tenant or record.tenant
        if tenant:
            doc["organization"] = {"name": tenant}
        if self.options.preserve_original:
            event["original"] = record.original
        if self._tags:
            doc["tags"] = list(self._tags)
        fp = fingerprint_values(size, sender, trace_id, message_id, subject, recipient,
                                status_raw if status_raw.__class__ is str else _text(trace.get("Status")))
        return Document(
            doc=doc,
            key=row_key(trace_id, recipient) if trace_id and recipient else "",
            fingerprint=fp,
            status=status,
            origin=record.origin,
            line=record.line,
            observed_at=record.observed_at or _observed_from_window(m),
        )

    def _status(self, raw: Any) -> tuple[str, str, str]:
        """(canonical status, event.outcome, event.action or "") for a raw status value; cached."""
        cached = self._status_cache.get(raw) if raw.__class__ is str or raw is None else None
        if cached is None:
            status = canonical_status(raw) if raw is not None else ""
            lower = status.lower()
            outcome = "success" if lower == "delivered" else "failure" if lower in _FAILURE_STATUSES else "unknown"
            cached = (status, outcome, _action(status) if self._extras and status else "")
            if raw.__class__ is str or raw is None:
                self._status_cache[raw] = cached
        return cached

    def _slow_received(self, m: dict[str, Any], received: Any) -> str:
        """@timestamp for a Received value off the fast path; rewrites non-ISO shapes as ISO in ``m``."""
        try:
            parsed = parse_timestamp(received)
        except ValueError as exc:
            raise NormalizeError("date", f"unable to parse date [{received}]: {exc}") from None
        if not (received.__class__ is str and is_iso(received)):
            m["Received"] = format_iso(parsed)
        return format_millis(parsed)

    def _address(self, address: str) -> tuple[str, dict[str, Any], bool]:
        """(local part, ECS side template, is local) for an address; cached. Templates are shared: never mutate."""
        cached = self._address_cache.get(address)
        if cached is None:
            name, at, domain = address.partition("@")
            if not at or not domain:
                raise NormalizeError("grok", f"Provided Grok expressions do not match field value: [{address}]")
            template: dict[str, Any] = {"domain": domain, **domain_parts(domain),
                                        "user": {"domain": domain, "email": address, "id": address, "name": name}}
            cached = (name, template, domain.lower() in self._local)
            if len(self._address_cache) >= self.options.address_cache_size:
                self._address_cache.clear()
            self._address_cache[address] = cached
        return cached

    def _ip(self, side: dict[str, Any], ip: str) -> None:
        if not ip:
            return
        side["ip"] = ip
        if self.geo is None:
            return
        try:
            geo, asn = self.geo.lookup(ip)
        except ValueError:
            raise NormalizeError("geoip", f"'{ip}' is not an IP string literal.") from None
        if geo:
            side["geo"] = geo
        if asn:
            side["as"] = asn

    def _error_document(self, record: RawRecord, message: str) -> Document:
        doc: dict[str, Any] = {
            "ecs": {"version": ECS_VERSION},
            "event": {"kind": "pipeline_error", "original": record.original},
            "error": {"message": [message]},
            "tags": _unique([*self._tags, "preserve_original_event"]),
        }
        if isinstance(record.fields, dict):
            trace = _clean(legacy_fields(record.fields))
            if trace:
                doc["microsoft"] = {"online_message_trace": trace}
        if self.options.tenant or record.tenant:
            doc["organization"] = {"name": self.options.tenant or record.tenant}
        return Document(
            doc=doc, key="", fingerprint="", status="", origin=record.origin, line=record.line,
            observed_at=record.observed_at,
        )


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


def _int(value: Any) -> int:
    if isinstance(value, bool):
        raise NormalizeError("convert", f"field [Size] is not a number: {value!r}")
    if isinstance(value, int):
        return value
    try:
        return int(str(value).strip())
    except ValueError:
        raise NormalizeError("convert", f"field [Size] is not a number: {value!r}") from None


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


def _observed_from_window(m: dict[str, Any]) -> str | None:
    """For exports, the query window's end is the best available observation time."""
    end = m.get("EndDate")
    if isinstance(end, str) and end:
        try:
            return iso_text(end)
        except ValueError:
            return None
    return None
