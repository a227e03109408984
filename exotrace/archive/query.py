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

import sqlite3
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson

from exotrace.archive.columns import day_number, ip_variants, reverse_domain
from exotrace.model import STATUSES, canonical_status
from exotrace.timeparse import format_ts, parse_time

__all__ = [
    "DIRECTIONS", "SELECT_ROWS", "DomainSuffix", "SearchQuery", "address_filter", "build_search", "days_present",
    "row_by_key", "row_dict", "search", "stats",
]

DIRECTIONS = ("inbound", "outbound", "internal", "external")
_WILDCARDS = frozenset("*?[")

_ROW_FIELDS = ("key", "seq", "trace_id", "status", "received", "message_id", "from_ip", "to_ip", "direction",
               "tenant", "size", "fingerprint", "observed_at", "first_seen", "updated_at", "source")
SELECT_ROWS = (
    f"SELECT {', '.join('m.' + f for f in _ROW_FIELDS)}, m.id, d.doc "
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


#: Above this many distinct subdomains, a domain-suffix search is one range scan plus a sort.
MAX_EXPANDED_DOMAINS = 256


@dataclass(frozen=True, slots=True)
class DomainSuffix:
    """A "domain and/or its subdomains" filter on the label-reversed column ``column``."""

    column: str
    rdomain: str
    include_self: bool

    def sql(self) -> tuple[str, list[Any]]:
        c, rd = self.column, self.rdomain
        if self.include_self:
            return f"({c} = ? OR ({c} >= ? AND {c} < ?))", [rd, rd + ".", rd + "/"]
        return f"({c} >= ? AND {c} < ?)", [rd + ".", rd + "/"]

    def expand(self, conn: sqlite3.Connection) -> list[str] | None:
        """The concrete domains present in the archive (one index probe each), or ``None`` if too many."""
        table_column = self.column.removeprefix("m.")
        found = [self.rdomain] if self.include_self else []
        cursor, stop = self.rdomain + ".", self.rdomain + "/"
        sql = f"SELECT min({table_column}) FROM messages WHERE {table_column} >= ? AND {table_column} < ?"
        while True:
            (value,) = conn.execute(sql, (cursor, stop)).fetchone()
            if value is None:
                return found
            if len(found) >= MAX_EXPANDED_DOMAINS:
                return None
            found.append(value)
            cursor = value + "\x00"


def _domain_forms(domain: str) -> list[str]:
    """``domain`` and its other IDNA 2008 spelling (``bücher.de`` and ``xn--bcher-kva.de``; ``straße.de`` is
    ``xn--strae-oqa.de``, not ``strasse.de``): mail carries either."""
    import idna

    try:
        other = idna.encode(domain, uts46=True).decode("ascii") if not domain.isascii() else idna.decode(domain)
    except (idna.IDNAError, UnicodeError):
        return [domain]
    other = other.lower()
    return [domain, other] if other != domain else [domain]


def address_filter(column: str, pattern: str) -> tuple[str, list[Any]] | DomainSuffix:
    """SQL condition (on ``column`` and ``column_rdomain``) for an address pattern (module docstring);
    domain-suffix patterns come back as :class:`DomainSuffix`."""
    text = pattern.strip().lower()
    rdomain = f"{column}_rdomain"
    if not text:
        raise ValueError("empty address pattern")
    if text == "<>":
        return f"{rdomain} IS NULL AND {column} IS NULL", []
    if "@" in text:
        local, _, domain = text.rpartition("@")
        if not domain:
            raise ValueError(f"address pattern {pattern.strip()!r} has no domain after '@' (write *@contoso.com)")
        if local in ("", "*") and domain and not _has_wildcard(domain):
            forms = [reverse_domain(d) for d in _domain_forms(domain)]
            if len(forms) == 1:
                return f"{rdomain} = ?", forms
            return f"{rdomain} IN ({', '.join('?' * len(forms))})", forms
        # the domain, when literal, narrows the walk of the (day, rdomain, address) index
        narrow = (f"{rdomain} = ? AND ", [reverse_domain(domain)]) if domain and not _has_wildcard(domain) else ("", [])
        if not _has_wildcard(text):
            return f"{narrow[0]}{column} = ?", [*narrow[1], text]
        return f"{narrow[0]}{column} GLOB ?", [*narrow[1], text]
    if text.startswith("*.") and not _has_wildcard(text[2:]):
        return DomainSuffix(rdomain, reverse_domain(text[2:]) or "", include_self=False)
    if _has_wildcard(text):
        return f"{column} GLOB ?", ["*@" + text]
    return DomainSuffix(rdomain, reverse_domain(text) or "", include_self=True)


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


def where_clause(
    query: SearchQuery, *, split: DomainSuffix | None = None
) -> tuple[list[str], list[Any], DomainSuffix | None]:
    """Conditions and parameters of ``query``, and its first domain-suffix filter.

    With ``split`` (that filter), the filter itself is left out so the caller can apply it per domain.
    Raises :class:`ValueError` for unusable filters.
    """
    conditions: list[str] = []
    params: list[Any] = []
    suffix: DomainSuffix | None = None

    def add(sql: str, values: list[Any]) -> None:
        conditions.append(sql)
        params.extend(values)

    for column, pattern in (("m.sender", query.sender), ("m.recipient", query.recipient)):
        if pattern is None:
            continue
        condition = address_filter(column, pattern)
        if isinstance(condition, DomainSuffix):
            if suffix is None:
                suffix = condition
                if split is not None:
                    continue
            add(*condition.sql())
        else:
            add(*condition)
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
            ips = ip_variants(query.ip)
        except ValueError:
            raise ValueError(f"not an IP address: {query.ip!r}") from None
        marks = ", ".join("?" * len(ips))
        add(f"(m.from_ip IN ({marks}) OR m.to_ip IN ({marks}))", [*ips, *ips])
    if query.direction:
        direction = query.direction.strip().lower()
        if direction not in DIRECTIONS:
            raise ValueError(f"unknown direction {query.direction!r} (one of {', '.join(DIRECTIONS)})")
        add("m.direction = ?", [direction])
    if query.tenant:
        add("m.tenant = ? COLLATE NOCASE", [query.tenant.strip()])
    return conditions, params, suffix


def _where(conditions: list[str]) -> str:
    return " WHERE " + " AND ".join(conditions) if conditions else ""


_ORDER = " ORDER BY m.received DESC, m.id DESC"


def build_search(query: SearchQuery, conn: sqlite3.Connection | None = None) -> tuple[str, list[Any]]:
    """The SELECT for :meth:`Archive.search`: newest ``received`` first, ties by newest row.

    The newest ids are picked from ``messages`` (its indexes) before the documents are joined. With
    ``conn`` and a limit, a domain-suffix filter is expanded to the domains present and searched one
    domain at a time (each an ordered index walk stopping at the limit), then merged.
    """
    conditions, params, suffix = where_clause(query)
    limit = int(query.limit) if query.limit else None
    if limit is None:
        return f"{SELECT_ROWS}{_where(conditions)}{_ORDER}", params
    domains = suffix.expand(conn) if suffix is not None and conn is not None else None
    if suffix is None or domains is None:
        inner = f"SELECT m.id FROM messages m{_where(conditions)}{_ORDER} LIMIT ?"
        inner_params = [*params, limit]
    elif not domains:
        return f"{SELECT_ROWS} WHERE 0", []
    else:
        rest, rest_params, _ = where_clause(query, split=suffix)
        branch = f"SELECT * FROM (SELECT m.id FROM messages m{_where([f'{suffix.column} = ?', *rest])}{_ORDER} LIMIT ?)"
        inner = " UNION ALL ".join([branch] * len(domains))
        inner_params = [value for domain in domains for value in (domain, *rest_params, limit)]
    sql = f"{SELECT_ROWS} WHERE m.id IN ({inner}){_ORDER} LIMIT ?"
    return sql, [*inner_params, limit]


def _day_bounds(query: SearchQuery) -> tuple[int | None, int | None]:
    lo = day_number(format_ts(parse_time(query.since))) if query.since else None
    hi = None
    if query.until:
        end = parse_time(query.until, end=True) - timedelta(milliseconds=1)
        hi = day_number(format_ts(end))
    return lo, hi


def days_present(conn: sqlite3.Connection, lo: int | None = None, hi: int | None = None) -> Iterator[int]:
    """The ``day`` values present in ``messages`` within [lo, hi], newest first (one index probe each)."""
    sql = "SELECT max(day) FROM messages WHERE day < ?"
    cursor = hi + 1 if hi is not None else 1 << 40
    while True:
        (day,) = conn.execute(sql, (cursor,)).fetchone()
        if day is None or (lo is not None and day < lo):
            return
        yield day
        cursor = day


def _uses_day_indexes(query: SearchQuery) -> bool:
    return bool(query.sender or query.recipient or query.message_id or query.ip or query.trace_id)


def row_by_key(conn: sqlite3.Connection, key: str) -> tuple[Any, ...] | None:
    """The :data:`SELECT_ROWS` row with this key, found day by day through the ``(day, key)`` index."""
    sql = f"{SELECT_ROWS} WHERE m.day = ? AND m.key = ?"
    for day in days_present(conn):
        row = conn.execute(sql, (day, key)).fetchone()
        if row is not None:
            return row
    return None


def _day_ids(
    conn: sqlite3.Connection, query: SearchQuery, day: int, limit: int | None, domains: list[str] | None,
    suffix: DomainSuffix | None,
) -> list[int]:
    limit_sql = " LIMIT ?" if limit else ""
    limit_params = [limit] if limit else []
    if suffix is not None and domains is not None:
        if not domains:
            return []
        rest, rest_params, _ = where_clause(query, split=suffix)
        where = _where(["m.day = ?", f"{suffix.column} = ?", *rest])
        branch = f"SELECT * FROM (SELECT m.id, m.received FROM messages m{where}{_ORDER}{limit_sql})"
        sql = (
            f"SELECT id FROM ({' UNION ALL '.join([branch] * len(domains))}) "
            f"ORDER BY received DESC, id DESC{limit_sql}"
        )
        params = [v for domain in domains for v in (day, domain, *rest_params, *limit_params)] + limit_params
    else:
        conditions, params, _ = where_clause(query)
        sql = f"SELECT m.id FROM messages m{_where(['m.day = ?', *conditions])}{_ORDER}{limit_sql}"
        params = [day, *params, *limit_params]
    return [row[0] for row in conn.execute(sql, params)]


def search(conn: sqlite3.Connection, query: SearchQuery) -> list[dict[str, Any]]:
    """Rows matching ``query``, newest ``received`` first, as :func:`row_dict` dicts."""
    return list(iter_search(conn, query))


def iter_search(conn: sqlite3.Connection, query: SearchQuery) -> Iterator[dict[str, Any]]:
    """Like :func:`search`, one row at a time: a result of a million rows is never held at once.

    Address, message-id and IP filters walk the days newest first through the day-partitioned indexes
    and stop at the limit; other searches use :func:`build_search` (the ``received`` index or a scan).
    A bad filter raises ValueError before the first row.
    """
    if not _uses_day_indexes(query):
        sql, params = build_search(query, conn)
        for r in conn.execute(sql, params):
            yield row_dict(r)
        return
    limit = int(query.limit) if query.limit else None
    _, _, suffix = where_clause(query)  # also validates every filter before the archive is read
    domains = suffix.expand(conn) if suffix is not None else None
    lo, hi = _day_bounds(query)
    ids: list[int] = []
    for day in days_present(conn, lo, hi):
        ids += _day_ids(conn, query, day, limit - len(ids) if limit else None, domains, suffix)
        if limit and len(ids) >= limit:
            break
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        rows = conn.execute(f"{SELECT_ROWS} WHERE m.id IN ({', '.join('?' * len(chunk))})", chunk).fetchall()
        order = {id_: n for n, id_ in enumerate(chunk)}
        rows.sort(key=lambda r: order[r[-2]])
        for r in rows:
            yield row_dict(r)


def _first_address(doc: dict[str, Any], side: str) -> str | None:
    addresses = ((doc.get("email") or {}).get(side) or {}).get("address")
    if isinstance(addresses, list) and addresses:
        return str(addresses[0])
    return None


def row_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    """A result row: the archive columns, display ``sender``/``recipient``/``subject`` and the ECS ``doc``."""
    out = dict(zip(_ROW_FIELDS, row[:-2], strict=True))
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
