"""Searches and statistics over the archive: SQL built from a :class:`SearchQuery`, rows as dicts.

Address patterns (``--sender``/``--recipient``), case-insensitive:

* ``user@contoso.com``: that address;
* ``*@contoso.com`` or ``@contoso.com``: any address at exactly that domain;
* ``contoso.com`` (no ``@``): that domain **and its subdomains** (``mail.contoso.com``), not
  ``notcontoso.com``;
* ``*.contoso.com``: subdomains only;
* any other ``*``/``?`` pattern: a glob over the whole address (``j*@*.example.org``), which scans;
* ``<>``: the null sender (NDRs), i.e. rows without a sender.
"""

from __future__ import annotations

import ipaddress
import sqlite3
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from exotrace.archive.columns import normalize_ip, reverse_domain
from exotrace.model import STATUSES, canonical_status
from exotrace.timeparse import format_ts, parse_time

__all__ = ["DIRECTIONS", "SELECT_ROWS", "SearchQuery", "address_filter", "build_search", "row_dict", "stats"]

DIRECTIONS = ("inbound", "outbound", "internal", "external")
_WILDCARDS = frozenset("*?[")

_ROW_FIELDS = ("key", "seq", "trace_id", "status", "received", "message_id", "from_ip", "to_ip", "direction",
               "tenant", "size", "fingerprint", "observed_at", "first_seen", "updated_at", "source")
SELECT_ROWS = (
    f"SELECT {', '.join('m.' + f for f in _ROW_FIELDS)}, d.doc "
    "FROM messages m JOIN documents d ON d.id = m.id"
)


@dataclass(frozen=True, kw_only=True, slots=True)
class SearchQuery:
    """Filters for :meth:`Archive.search`; all given filters must match. ``limit=None`` or 0: no limit.

    ``status`` takes one status or several (any spelling: ``delivered``, ``filteredAsSpam``); ``since``
    (inclusive) and ``until`` (exclusive) take datetimes or anything :func:`exotrace.timeparse.parse_time`
    reads; ``subject`` is a case-insensitive substring; ``ip`` matches the sending or receiving IP.
    """

    sender: str | None = None
    recipient: str | None = None
    status: str | tuple[str, ...] | list[str] | None = None
    since: datetime | str | None = None
    until: datetime | str | None = None
    message_id: str | None = None
    trace_id: str | None = None
    subject: str | None = None
    ip: str | None = None
    direction: str | None = None
    tenant: str | None = None
    limit: int | None = 100


def _has_wildcard(text: str) -> bool:
    return not _WILDCARDS.isdisjoint(text)


def _domain_and_subdomains(column: str, domain: str) -> tuple[str, list[Any]]:
    rd = reverse_domain(domain) or ""
    return f"({column} = ? OR ({column} >= ? AND {column} < ?))", [rd, rd + ".", rd + "/"]


def address_filter(column: str, pattern: str) -> tuple[str, list[Any]]:
    """SQL condition (on ``column`` and ``column_rdomain``) for an address pattern (module docstring)."""
    text = pattern.strip().lower()
    rdomain = f"{column}_rdomain"
    if not text:
        raise ValueError("empty address pattern")
    if text == "<>":
        return f"{column} IS NULL", []
    if "@" in text:
        local, _, domain = text.rpartition("@")
        if local in ("", "*") and domain and not _has_wildcard(domain):
            return f"{rdomain} = ?", [reverse_domain(domain)]
        if not _has_wildcard(text):
            return f"{column} = ?", [text]
        return f"{column} GLOB ?", [text]
    if text.startswith("*.") and not _has_wildcard(text[2:]):
        rd = reverse_domain(text[2:]) or ""
        return f"({rdomain} >= ? AND {rdomain} < ?)", [rd + ".", rd + "/"]
    if _has_wildcard(text):
        return f"{column} GLOB ?", ["*@" + text]
    return _domain_and_subdomains(rdomain, text)


def _statuses(value: str | tuple[str, ...] | list[str]) -> list[str]:
    items = [value] if isinstance(value, str) else list(value)
    out: list[str] = []
    for item in items:
        for part in str(item).split(","):
            if part.strip():
                out.append(canonical_status(part))
    return out


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def where_clause(query: SearchQuery) -> tuple[str, list[Any]]:
    """``WHERE ...`` (or empty) and its parameters. Raises :class:`ValueError` for unusable filters."""
    conditions: list[str] = []
    params: list[Any] = []

    def add(sql: str, values: list[Any]) -> None:
        conditions.append(sql)
        params.extend(values)

    if query.sender:
        add(*address_filter("m.sender", query.sender))
    if query.recipient:
        add(*address_filter("m.recipient", query.recipient))
    if query.status:
        statuses = _statuses(query.status)
        if statuses:
            add(f"m.status IN ({', '.join('?' * len(statuses))})", statuses)
    if query.since:
        add("m.received >= ?", [format_ts(parse_time(query.since))])
    if query.until:
        add("m.received < ?", [format_ts(parse_time(query.until, end=True))])
    if query.message_id:
        mid = query.message_id.strip()
        variants = sorted({mid, mid.strip("<>"), f"<{mid.strip('<>')}>"})
        add(f"m.message_id IN ({', '.join('?' * len(variants))})", variants)
    if query.trace_id:
        tid = query.trace_id.strip().lower()
        add("(m.key >= ? AND m.key < ?)", [tid + "|", tid + "}"])
    if query.subject:
        if query.subject.isascii():
            add("m.subject LIKE ? ESCAPE '\\'", [f"%{_like_escape(query.subject)}%"])
        else:
            add("exo_icontains(m.subject, ?)", [query.subject])
    if query.ip:
        try:
            ip = normalize_ip(str(ipaddress.ip_address(query.ip.strip())))
        except ValueError:
            raise ValueError(f"not an IP address: {query.ip!r}") from None
        add("(m.from_ip = ? OR m.to_ip = ?)", [ip, ip])
    if query.direction:
        direction = query.direction.strip().lower()
        if direction not in DIRECTIONS:
            raise ValueError(f"unknown direction {query.direction!r} (one of {', '.join(DIRECTIONS)})")
        add("m.direction = ?", [direction])
    if query.tenant:
        add("m.tenant = ? COLLATE NOCASE", [query.tenant.strip()])
    return (" WHERE " + " AND ".join(conditions) if conditions else ""), params


def build_search(query: SearchQuery) -> tuple[str, list[Any]]:
    """The SELECT for :meth:`Archive.search`: newest ``received`` first, ties by newest row."""
    where, params = where_clause(query)
    sql = f"{SELECT_ROWS}{where} ORDER BY m.received DESC, m.id DESC"
    if query.limit:
        sql += " LIMIT ?"
        params.append(int(query.limit))
    return sql, params


def _first_address(doc: dict[str, Any], side: str) -> str | None:
    addresses = ((doc.get("email") or {}).get(side) or {}).get("address")
    if isinstance(addresses, list) and addresses:
        return str(addresses[0])
    return None


def row_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    """A result row: the archive columns, display ``sender``/``recipient``/``subject`` and the ECS ``doc``."""
    out = dict(zip(_ROW_FIELDS, row[:-1], strict=True))
    doc = orjson.loads(row[-1])
    out["sender"] = _first_address(doc, "from")
    out["recipient"] = _first_address(doc, "to")
    out["subject"] = (doc.get("email") or {}).get("subject")
    out["doc"] = doc
    return out


def stats(conn: sqlite3.Connection, *, since: Any = None, until: Any = None, top: int = 10) -> dict[str, Any]:
    """Counts over rows received in [since, until): by status, direction and day; top senders and
    recipient domains; plus the total number of rejects (all time)."""
    conditions: list[str] = []
    params: list[Any] = []
    bounds: dict[str, str | None] = {"since": None, "until": None}
    if since:
        bounds["since"] = format_ts(parse_time(since))
        conditions.append("received >= ?")
        params.append(bounds["since"])
    if until:
        bounds["until"] = format_ts(parse_time(until, end=True))
        conditions.append("received < ?")
        params.append(bounds["until"])
    where = " WHERE " + " AND ".join(conditions) if conditions else ""

    by_status: Counter[str] = Counter()
    by_direction: Counter[str] = Counter()
    by_day: Counter[str] = Counter()
    first = last = None
    sql = (
        "SELECT status, coalesce(direction, ''), substr(received, 1, 10), count(*), min(received), "
        f"max(received) FROM messages{where} GROUP BY 1, 2, 3"
    )
    for status, direction, day, n, lo, hi in conn.execute(sql, params):
        by_status[status] += n
        by_direction[direction or "unknown"] += n
        by_day[day or "unknown"] += n
        first = lo if first is None or (lo and lo < first) else first
        last = hi if last is None or (hi and hi > last) else last
    senders = conn.execute(
        f"SELECT coalesce(sender, '<>'), count(*) FROM messages{where} GROUP BY sender "
        "ORDER BY 2 DESC, 1 LIMIT ?",
        [*params, top],
    ).fetchall()
    domains = conn.execute(
        f"SELECT recipient_rdomain, count(*) FROM messages{where} GROUP BY recipient_rdomain "
        "ORDER BY 2 DESC, 1 LIMIT ?",
        [*params, top],
    ).fetchall()
    rejects = conn.execute("SELECT count(*) FROM rejects").fetchone()[0]
    order = {s: i for i, s in enumerate(STATUSES)}
    return {
        **bounds,
        "total": sum(by_status.values()),
        "first_received": first,
        "last_received": last,
        "by_status": dict(sorted(by_status.items(), key=lambda kv: (-kv[1], order.get(kv[0], 99)))),
        "by_direction": dict(by_direction.most_common()),
        "by_day": dict(sorted(by_day.items())),
        "top_senders": [{"sender": s, "count": n} for s, n in senders],
        "top_recipient_domains": [
            {"domain": ".".join(reversed(rd.split("."))) if rd else "", "count": n} for rd, n in domains
        ],
        "rejects": rejects,
    }
