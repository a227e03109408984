"""Cached JSON text for the parts of a document that repeat: addresses, domains, IPs, statuses.

The normalizer writes each document as JSON text assembled from these fragments (see :mod:`.ecs`), so
the public-suffix, GeoIP and escaping work for an address or an IP is done once, not once per row.
Fragments are ``str`` holding compact JSON exactly as ``orjson.dumps`` writes it: the same key order,
the same escapes (:func:`quote` is the standard library's C string encoder, which escapes the same
characters as orjson and leaves other Unicode as it is).
"""

from __future__ import annotations

import ipaddress
from json.encoder import encode_basestring as quote  # type: ignore[attr-defined]
from typing import Any, NamedTuple

import orjson

from exotrace.normalize.domains import domain_parts
from exotrace.normalize.geo import GeoEnricher

__all__ = ["AddressParts", "FragmentCache", "IpParts", "quote"]


class NormalizeError(ValueError):
    """A record that cannot become an ECS document; ``processor`` names the failing step (Elastic's wording)
    and ``field`` the input field at fault (legacy name), when one is."""

    def __init__(self, processor: str, message: str, field: str | None = None) -> None:
        super().__init__(f"Processor '{processor}' failed with message '{message}'")
        self.processor = processor
        self.field = field


class AddressParts(NamedTuple):
    """JSON fragments for one e-mail address, as sender or recipient."""

    name: str
    local: bool
    q_address: str
    q_name: str
    #: ``source``/``destination`` object without its closing brace (the IP part may follow).
    side: str
    from_field: str
    to_field: str
    #: The top-level ``user`` object for this address.
    user: str


class IpParts(NamedTuple):
    """JSON fragments for one IP: the quoted IP and ``"ip":..,"geo":{..},"as":{..}`` for a side object."""

    q_ip: str
    side: str


_new = tuple.__new__  # NamedTuples built without their Python-level __new__ (cache misses are frequent)


class FragmentCache:
    """Bounded caches of :class:`AddressParts` and :class:`IpParts` (each empties when full)."""

    def __init__(self, local_domains: frozenset[str], geo: GeoEnricher | None, size: int = 100_000) -> None:
        self._local = local_domains
        self._geo = geo
        self._size = size
        self.addresses: dict[str, AddressParts] = {}
        self._domains: dict[str, tuple[str, bool]] = {}
        self._ips: dict[str, IpParts] = {}

    def address(self, address: str) -> AddressParts:
        """Fragments for ``address``; raises :class:`NormalizeError` when it has no ``@domain``."""
        parts = self.addresses.get(address)
        if parts is None:
            name, at, domain = address.partition("@")
            if not at or not domain:
                raise NormalizeError("grok", f"Provided Grok expressions do not match field value: [{address}]")
            prefix, local = self._domain(domain)
            q_address, q_name = quote(address), quote(name)
            person = f'"email":{q_address},"id":{q_address},"name":{q_name}'
            parts = _new(AddressParts, (
                name, local, q_address, q_name, f"{prefix}{person}}}", f',"from":{{"address":[{q_address}]}}',
                f',"to":{{"address":[{q_address}]}}', f"{{{person}}}"))
            if len(self.addresses) >= self._size:
                self.addresses.clear()
            self.addresses[address] = parts
        return parts

    def _domain(self, domain: str) -> tuple[str, bool]:
        """(side object up to the user's e-mail, is local) for a domain."""
        found = self._domains.get(domain)
        if found is None:
            q_domain = quote(domain)
            suffix = _members(domain_parts(domain))
            found = (f'{{"domain":{q_domain}{suffix},"user":{{"domain":{q_domain},', domain.lower() in self._local)
            if len(self._domains) >= self._size:
                self._domains.clear()
            self._domains[domain] = found
        return found

    def ip(self, ip: str) -> IpParts:
        """Fragments for ``ip`` with GeoIP/ASN data; raises :class:`NormalizeError` for an invalid IP."""
        parts = self._ips.get(ip)
        if parts is None:
            q_ip = quote(ip)
            side = f'"ip":{q_ip}'
            try:
                if self._geo is None:
                    ipaddress.ip_address(ip)
                    geo = asn = None
                else:
                    geo, asn = self._geo.lookup(ip)
            except (ValueError, TypeError):  # maxminddb raises TypeError for an embedded NUL
                raise NormalizeError("geoip", f"'{ip}' is not an IP string literal.") from None
            if geo:
                side += ',"geo":' + orjson.dumps(geo).decode()
            if asn:
                side += ',"as":' + orjson.dumps(asn).decode()
            parts = _new(IpParts, (q_ip, side))
            if len(self._ips) >= self._size:
                self._ips.clear()
            self._ips[ip] = parts
        return parts


def _members(obj: dict[str, Any]) -> str:
    """``{"a":1,"b":2}`` -> ``,"a":1,"b":2`` (the members of a JSON object, to splice into another)."""
    return "," + orjson.dumps(obj).decode()[1:-1] if obj else ""
