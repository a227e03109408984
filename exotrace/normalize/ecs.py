"""Turn one raw message-trace record into an ECS document, field for field as Elastic's integration does.

The steps follow Elastic's ingest pipeline (see docs/normalize.md): Graph keys are renamed to legacy
names and kept under ``microsoft.online_message_trace``; sender and recipient fill ``email.*``,
``source.*``/``destination.*`` (with public-suffix parts and GeoIP/ASN), ``related.user`` and ``user.*``;
``email.direction`` comes from the local domains; empty values are dropped; a record that cannot be
normalized becomes an ``event.kind: pipeline_error`` document that keeps the original.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from exotrace.model import Document, RawRecord, canonical_status, legacy_fields, row_key
from exotrace.normalize.dates import format_iso, format_millis, is_iso, parse_timestamp
from exotrace.normalize.domains import domain_parts
from exotrace.normalize.fingerprint import fingerprint
from exotrace.normalize.geo import GeoEnricher

ECS_VERSION = "8.11.0"
_FAILURE_STATUSES = frozenset({"failed", "quarantined", "filteredasspam"})
_DATE_FIELDS = ("Received", "StartDate", "EndDate")
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
    """

    local_domains: tuple[str, ...] = ()
    geoip_dir: str | os.PathLike[str] | None = None
    geoip: bool = True
    preserve_original: bool = False
    tenant: str | None = None
    extras: bool = True
    tags: tuple[str, ...] = field(default=())


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
        self._address_cache: dict[str, tuple[str, str, dict[str, str]] | None] = {}

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
        if not isinstance(record.fields, dict):
            raise NormalizeError("json", "record is not a JSON object")
        m = legacy_fields(record.fields)
        status_raw = m.get("Status")
        status = canonical_status(status_raw) if status_raw not in (None, "") else ""
        status_lower = status.lower()
        outcome = (
            "success" if status_lower == "delivered" else "failure" if status_lower in _FAILURE_STATUSES else "unknown"
        )
        event: dict[str, Any] = {"category": ["email"], "outcome": outcome, "type": ["info"]}
        if self.options.extras and status:
            event["action"] = _action(status)
        email: dict[str, Any] = {}
        doc: dict[str, Any] = {"ecs": {"version": ECS_VERSION}, "event": event, "email": email}

        # Dates: keep ISO text verbatim (as Elastic does); rewrite other shapes (/Date(ms)/, US culture) as ISO.
        received = m.get("Received")
        if received in (None, ""):
            raise NormalizeError("date", "field [email.delivery_timestamp] not present as part of path")
        try:
            received_at = parse_timestamp(received)
        except ValueError as exc:
            raise NormalizeError("date", f"unable to parse date [{received}]: {exc}") from None
        for name in _DATE_FIELDS:
            value = m.get(name)
            if value not in (None, "") and not is_iso(value):
                try:
                    m[name] = format_iso(parse_timestamp(value))
                except ValueError:
                    if name == "Received":
                        raise
        doc["@timestamp"] = format_millis(received_at)
        email["delivery_timestamp"] = m["Received"]

        sender = _text(m.get("SenderAddress"))
        if sender == "<>":
            sender = ""
        recipient = _text(m.get("RecipientAddress"))
        trace_id = _text(m.get("MessageTraceId"))
        if sender:
            email["from"] = {"address": [sender]}
        if trace_id:
            email["local_id"] = trace_id
        size = m.get("Size")
        if size not in (None, ""):
            email["attachments"] = {"file": {"size": _int(size)}}
        if subject := _text(m.get("Subject")):
            email["subject"] = subject
        if message_id := _text(m.get("MessageId")):
            email["message_id"] = message_id
        if recipient:
            email["to"] = {"address": [recipient]}

        source: dict[str, Any] = {}
        destination: dict[str, Any] = {}
        self._party(source, sender, "source")
        self._party(destination, recipient, "destination")
        from_ip = _text(m.get("FromIP"))
        to_ip = _text(m.get("ToIP"))
        self._ip(source, from_ip)
        self._ip(destination, to_ip)
        if source:
            doc["source"] = _ordered_party(source)
        if destination:
            doc["destination"] = _ordered_party(destination)

        direction = None
        if self._local:
            src_local = source.get("domain", "").lower() in self._local
            dst_local = destination.get("domain", "").lower() in self._local
            direction = {
                (True, True): "internal",
                (False, False): "external",
                (True, False): "outbound",
                (False, True): "inbound",
            }[(src_local, dst_local)]
            email["direction"] = direction

        related: dict[str, Any] = {}
        users = _unique(
            [
                recipient,
                sender,
                destination.get("user", {}).get("name"),
                source.get("user", {}).get("name"),
            ]
        )
        if users:
            related["user"] = users
        if self.options.extras and (ips := _unique([from_ip, to_ip])):
            related["ip"] = ips
        if related:
            doc["related"] = related
        user = _user_fields(direction, destination.get("user"), source.get("user"))
        if user:
            doc["user"] = user

        trace = _clean(m)
        if trace:
            doc["microsoft"] = {"online_message_trace": trace}
        if self.options.tenant:
            doc["organization"] = {"name": self.options.tenant}
        if record.tenant and not self.options.tenant:
            doc["organization"] = {"name": record.tenant}
        if self.options.preserve_original:
            event["original"] = record.original
        if self._tags:
            doc["tags"] = list(self._tags)
        if not email:
            del doc["email"]
        fp = fingerprint(doc)
        key = row_key(trace_id, recipient) if trace_id and recipient else ""
        return Document(
            doc=doc,
            key=key,
            fingerprint=fp,
            status=status,
            origin=record.origin,
            line=record.line,
            observed_at=record.observed_at or _observed_from_window(m),
        )

    def _party(self, side: dict[str, Any], address: str, role: str) -> None:
        """Fill user.*, domain and public-suffix parts of one side from an address."""
        if not address:
            return
        parsed = self._address(address)
        if parsed is None:
            raise NormalizeError("grok", f"Provided Grok expressions do not match field value: [{address}]")
        name, domain, parts = parsed
        side["user"] = {"domain": domain, "email": address, "id": address, "name": name}
        side["domain"] = domain
        side.update(parts)

    def _address(self, address: str) -> tuple[str, str, dict[str, str]] | None:
        cached = self._address_cache.get(address, False)
        if cached is not False:
            return cached  # type: ignore[return-value]
        name, at, domain = address.partition("@")
        result = (name, domain, domain_parts(domain)) if at and domain else None
        if len(self._address_cache) > 200_000:
            self._address_cache.clear()
        self._address_cache[address] = result
        return result

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


def _ordered_party(side: dict[str, Any]) -> dict[str, Any]:
    return side


def _user_fields(direction: str | None, rcpt: dict[str, Any] | None, sender: dict[str, Any] | None) -> dict[str, Any]:
    if direction == "inbound":
        chosen = [rcpt]
    elif direction == "outbound":
        chosen = [sender]
    elif direction == "internal":
        chosen = [rcpt, sender]
    else:
        return {}
    people = [p for p in chosen if p]
    out: dict[str, Any] = {}
    for key in ("email", "id", "name"):
        values = [p[key] for p in people if p.get(key)]
        if values:
            out[key] = values[0] if len(values) == 1 else values
    return out


def _clean(value: Any) -> Any:
    """Drop None, "" and containers that end up empty (Elastic's final clean-up script)."""
    if isinstance(value, dict):
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
            return format_iso(parse_timestamp(end))
        except ValueError:
            return None
    return None
