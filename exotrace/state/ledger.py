"""Ledger of collection windows, one row per (tenant, window), kept in the archive file.

A window is a closed time range ``[start, end]`` of ``receivedDateTime`` (both bounds inclusive, the next
window starts one :data:`TICK` after ``end``, as Elastic's cursor does). States:

``pending``   planned, not yet read completely (or read, but not yet acknowledged by every sink);
``complete``  every row was committed and acknowledged; re-reads are still scheduled (``next_read``);
``settled``   the last scheduled re-read is done: nothing is expected to change any more;
``failed``    the last attempt failed before the window was ever complete; retried at ``next_read``
              (``next_read`` NULL: given up, e.g. the window aged past the API's horizon).

Row writes and the ledger update that follows them are committed in one transaction by the caller, so the
ledger never claims data that is not stored.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

TICK = timedelta(microseconds=1)

MIGRATIONS: list[str] = [
    """-- collector ledger v1
    CREATE TABLE collector_windows (
        tenant TEXT NOT NULL,
        start TEXT NOT NULL,
        end TEXT NOT NULL,
        state TEXT NOT NULL,
        reads INTEGER NOT NULL DEFAULT 0,
        rows INTEGER NOT NULL DEFAULT 0,
        new_rows INTEGER NOT NULL DEFAULT 0,
        updated_rows INTEGER NOT NULL DEFAULT 0,
        next_read TEXT,
        last_read TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        error TEXT,
        PRIMARY KEY (tenant, start)
    );
    CREATE INDEX collector_windows_due ON collector_windows (tenant, state, next_read);
    CREATE TABLE collector_tenants (
        tenant TEXT PRIMARY KEY,
        api TEXT,
        last_success TEXT,
        last_error TEXT,
        last_error_at TEXT,
        requests INTEGER NOT NULL DEFAULT 0,
        throttled INTEGER NOT NULL DEFAULT 0,
        rows INTEGER NOT NULL DEFAULT 0,
        quota_used INTEGER NOT NULL DEFAULT 0,
        quota_limit INTEGER NOT NULL DEFAULT 0,
        warning TEXT,
        updated_at TEXT
    );
    """,
    """-- collector sink outbox cursor v2
    CREATE TABLE collector_outbox (
        name TEXT PRIMARY KEY,
        acked_seq INTEGER NOT NULL DEFAULT 0
    );
    """,
    """-- collector quota persistence v3
    ALTER TABLE collector_tenants ADD COLUMN quota_json TEXT;
    """,
    """-- collector live status v4: when a broken tenant is retried, how far the provisional live tail reached
    ALTER TABLE collector_tenants ADD COLUMN retry_at TEXT;
    ALTER TABLE collector_tenants ADD COLUMN live_until TEXT;
    """,
]


def fmt_time(t: datetime) -> str:
    """UTC, fixed width, microseconds: sorts as text (``2026-11-22T10:00:00.000000Z``)."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


@dataclass(slots=True)
class Window:
    tenant: str
    start: datetime
    end: datetime
    state: str = "pending"
    reads: int = 0
    rows: int = 0
    next_read: datetime | None = None
    last_read: datetime | None = None
    attempts: int = 0
    error: str | None = None

    @property
    def span(self) -> timedelta:
        return self.end - self.start + TICK

    def label(self) -> str:
        return f"{fmt_time(self.start)}..{fmt_time(self.end)}"


def _window(row: sqlite3.Row | tuple[Any, ...]) -> Window:
    (tenant, start, end, state, reads, rows, next_read, last_read, attempts, error) = row
    return Window(tenant, parse_time(start), parse_time(end), state, reads, rows,
                  parse_time(next_read) if next_read else None,
                  parse_time(last_read) if last_read else None, attempts, error)


_COLS = "tenant, start, end, state, reads, rows, next_read, last_read, attempts, error"


class Ledger:
    """Reads and writes the ledger through the archive's connection (caller holds the transaction)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    # -- reads --------------------------------------------------------------------------------
    def windows(self, tenant: str, states: Sequence[str] | None = None) -> list[Window]:
        sql = f"SELECT {_COLS} FROM collector_windows WHERE tenant = ?"
        args: list[Any] = [tenant]
        if states:
            sql += f" AND state IN ({','.join('?' * len(states))})"
            args += list(states)
        return [_window(r) for r in self.conn.execute(sql + " ORDER BY start", args)]

    def bounds(self, tenant: str) -> tuple[datetime, datetime] | None:
        row = self.conn.execute(
            "SELECT min(start), max(end) FROM collector_windows WHERE tenant = ?", (tenant,)).fetchone()
        if not row or row[0] is None:
            return None
        return parse_time(row[0]), parse_time(row[1])

    def due(self, tenant: str, now: datetime) -> list[Window]:
        """Windows to read now, oldest first: never-completed ones and re-reads whose time has come."""
        rows = self.conn.execute(
            f"SELECT {_COLS} FROM collector_windows WHERE tenant = ? AND state != 'settled' "
            "AND next_read IS NOT NULL AND next_read <= ? ORDER BY start", (tenant, fmt_time(now)))
        return [_window(r) for r in rows]

    def next_due(self, tenant: str, after: datetime | None = None) -> datetime | None:
        """Earliest scheduled read (only those later than ``after``, when given)."""
        sql = "SELECT min(next_read) FROM collector_windows WHERE tenant = ? AND state != 'settled'"
        args: list[Any] = [tenant]
        if after is not None:
            sql += " AND next_read > ?"
            args.append(fmt_time(after))
        row = self.conn.execute(sql, args).fetchone()
        return parse_time(row[0]) if row and row[0] else None

    def summary(self, tenant: str) -> dict[str, Any]:
        out: dict[str, Any] = {"windows": {}, "seconds": {}}
        for state, n, secs in self.conn.execute(
            "SELECT state, count(*), sum((julianday(end) - julianday(start)) * 86400.0) "
            "FROM collector_windows WHERE tenant = ? GROUP BY state", (tenant,)):
            out["windows"][state] = n
            out["seconds"][state] = secs or 0.0
        b = self.bounds(tenant)
        out["first"], out["last"] = (b if b else (None, None))
        row = self.conn.execute(
            "SELECT max(end) FROM collector_windows WHERE tenant = ? AND state IN ('complete', 'settled')",
            (tenant,)).fetchone()
        out["complete_until"] = parse_time(row[0]) if row and row[0] else None
        errs = self.conn.execute(
            "SELECT start, end, error FROM collector_windows WHERE tenant = ? AND error IS NOT NULL "
            "ORDER BY start LIMIT 5", (tenant,)).fetchall()
        out["errors"] = [f"{s}..{e}: {err}" for s, e, err in errs]
        return out

    # -- writes (inside the caller's transaction) --------------------------------------------
    def add(self, windows: Iterable[Window]) -> None:
        self.conn.executemany(
            f"INSERT OR IGNORE INTO collector_windows ({_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
            [(w.tenant, fmt_time(w.start), fmt_time(w.end), w.state, w.reads, w.rows,
              fmt_time(w.next_read) if w.next_read else None,
              fmt_time(w.last_read) if w.last_read else None, w.attempts, w.error) for w in windows])

    def mark_read(self, w: Window, *, now: datetime, rows: int, rereads: Sequence[timedelta],
                  new: int = 0, updated: int = 0) -> Window:
        """A complete read of ``w`` is committed and acknowledged: complete (next re-read) or settled."""
        age = now - w.end
        later = [w.end + off for off in sorted(rereads) if off > age]
        w.state = "complete" if later else "settled"
        w.next_read = later[0] if later else None
        w.reads += 1
        w.rows = rows
        w.last_read = now
        w.attempts = 0
        w.error = None
        self.conn.execute(
            "UPDATE collector_windows SET state = ?, reads = reads + 1, rows = ?, new_rows = new_rows + ?, "
            "updated_rows = updated_rows + ?, next_read = ?, last_read = ?, attempts = 0, error = NULL "
            "WHERE tenant = ? AND start = ?",
            (w.state, rows, new, updated, fmt_time(w.next_read) if w.next_read else None, fmt_time(now),
             w.tenant, fmt_time(w.start)))
        return w

    def mark_failed(self, w: Window, *, error: str, retry_at: datetime | None) -> None:
        """An attempt failed: keep ``complete`` windows complete (their data is stored), else ``failed``."""
        state = "complete" if w.state in ("complete", "settled") else "failed"
        self.conn.execute(
            "UPDATE collector_windows SET state = ?, attempts = attempts + 1, error = ?, next_read = ? "
            "WHERE tenant = ? AND start = ?",
            (state, error[:500], fmt_time(retry_at) if retry_at else None, w.tenant, fmt_time(w.start)))
        w.state, w.error, w.next_read = state, error, retry_at
        w.attempts += 1

    def split(self, w: Window) -> list[Window]:
        """Replace ``w`` by two halves (a continuation that keeps failing needs fewer pages)."""
        return self.cut(w, w.start + (w.end - w.start) / 2)

    def cut(self, w: Window, last: datetime) -> list[Window]:
        """Replace ``w`` by ``w.start..last`` and ``last + TICK..w.end``; both are due when ``w`` was."""
        pieces = [Window(w.tenant, w.start, last, "pending", next_read=w.next_read or w.start),
                  Window(w.tenant, last + TICK, w.end, "pending", next_read=w.next_read or w.start)]
        if w.state in ("complete", "settled"):
            for piece in pieces:
                piece.state, piece.reads = "complete", w.reads
        self.conn.execute("DELETE FROM collector_windows WHERE tenant = ? AND start = ?",
                          (w.tenant, fmt_time(w.start)))
        self.add(pieces)
        return pieces

    def tenant_update(self, tenant: str, **fields: Any) -> None:
        self.conn.execute("INSERT OR IGNORE INTO collector_tenants (tenant) VALUES (?)", (tenant,))
        incs = {k: v for k, v in fields.items() if k in ("requests", "throttled", "rows")}
        sets = {k: v for k, v in fields.items() if k not in incs}
        parts = [f"{k} = {k} + ?" for k in incs] + [f"{k} = ?" for k in sets]
        if parts:
            self.conn.execute(f"UPDATE collector_tenants SET {', '.join(parts)} WHERE tenant = ?",
                              [*incs.values(), *sets.values(), tenant])

    def tenant_info(self, tenant: str) -> dict[str, Any]:
        cur = self.conn.execute("SELECT * FROM collector_tenants WHERE tenant = ?", (tenant,))
        row = cur.fetchone()
        if row is None:
            return {}
        return dict(zip([d[0] for d in cur.description], row, strict=True))

    def tenants(self) -> list[str]:
        rows = self.conn.execute(
            "SELECT tenant FROM collector_windows UNION SELECT tenant FROM collector_tenants ORDER BY 1")
        return [r[0] for r in rows]
