"""Forward-only schema migrations, versioned per component, recorded in the ``_migrations`` table.

Every component that keeps tables in the archive file (the archive itself, the collector's ledger, the
sinks' outbox) owns an ordered list of migrations. Migration *n* (1-based) brings the component to
version *n*. A migration is either an SQL script (several statements allowed) or a callable taking the
``sqlite3.Connection``. Missing migrations are applied in order, each in its own transaction together
with its ``_migrations`` row, so a crash leaves the schema at a well-defined version.

Migrations are append-only: never edit or reorder a released one, add a new one instead.
"""

from __future__ import annotations

import logging
import re
import sqlite3
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from exotrace.errors import ArchiveError

__all__ = ["Migration", "applied_versions", "apply_migrations", "split_sql"]

log = logging.getLogger("exotrace.archive")

Migration = str | Callable[[sqlite3.Connection], None]

_CREATE = """
CREATE TABLE IF NOT EXISTS _migrations (
    component TEXT NOT NULL,
    version INTEGER NOT NULL,
    name TEXT NOT NULL,
    applied_at TEXT NOT NULL,
    PRIMARY KEY (component, version)
)
"""


def split_sql(script: str) -> list[str]:
    """Split an SQL script into complete statements (``executescript`` would commit on its own)."""
    statements: list[str] = []
    buffer = ""
    for part in script.split(";"):
        buffer += part + ";"
        if sqlite3.complete_statement(buffer):
            statement = buffer.strip()
            if not _blank(statement):
                statements.append(statement)
            buffer = ""
    if not _blank(buffer):
        statements.append(buffer.strip())
    return statements


def _blank(statement: str) -> bool:
    """Only whitespace, semicolons and ``--`` comments."""
    return not re.sub(r"--[^\n]*", "", statement).strip(" \n\t\r;")


def applied_versions(conn: sqlite3.Connection) -> dict[str, int]:
    """Component -> highest applied version (empty when the table does not exist yet)."""
    try:
        rows = conn.execute("SELECT component, max(version) FROM _migrations GROUP BY component").fetchall()
    except sqlite3.OperationalError:
        return {}
    return {component: version for component, version in rows}


def _name(migration: Migration, version: int) -> str:
    if callable(migration):
        return getattr(migration, "__name__", f"v{version}")
    first = next((line.strip() for line in migration.splitlines() if line.strip()), "")
    if first.startswith("--"):
        return first.lstrip("- ").strip()[:200] or f"v{version}"
    return f"v{version}"


def apply_migrations(conn: sqlite3.Connection, component: str, migrations: Sequence[Migration]) -> int:
    """Apply the missing migrations of ``component``; return how many ran.

    ``conn`` must be in autocommit mode (``isolation_level=None``) and outside a transaction. Raises
    :class:`ArchiveError` when the file was written by a newer exotrace or a migration fails.
    """
    if conn.in_transaction:
        raise ArchiveError(f"cannot migrate {component!r} inside an open transaction")
    exists = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_migrations'").fetchone()
    if exists is None:
        conn.execute(_CREATE)  # an up-to-date archive is opened without taking the write lock
    current = applied_versions(conn).get(component, 0)
    if current > len(migrations):
        raise ArchiveError(
            f"the archive's {component!r} schema is version {current}, newer than this exotrace knows "
            f"({len(migrations)}); upgrade exotrace"
        )
    ran = 0
    for version in range(current + 1, len(migrations) + 1):
        migration = migrations[version - 1]
        # a table rebuilt (copy, drop, rename) must not trip over views users made on it: with the legacy
        # rule, a rename does not check them, and they name the new table once it has the old name
        conn.execute("PRAGMA legacy_alter_table = ON")
        try:
            conn.execute("BEGIN IMMEDIATE")
            # Another process may have migrated while we waited for the write lock.
            done = conn.execute(
                "SELECT 1 FROM _migrations WHERE component = ? AND version = ?", (component, version)
            ).fetchone()
            if done is None:
                if callable(migration):
                    migration(conn)
                else:
                    for statement in split_sql(migration):
                        conn.execute(statement)
                conn.execute(
                    "INSERT INTO _migrations (component, version, name, applied_at) VALUES (?, ?, ?, ?)",
                    (component, version, _name(migration, version), datetime.now(UTC).isoformat()),
                )
                ran += 1
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise ArchiveError(f"migration {component} v{version} failed: {exc}") from exc
            raise
        finally:
            conn.execute("PRAGMA legacy_alter_table = OFF")
        if done is None:
            log.info("Applied migration component=%s version=%d.", component, version)
    return ran
