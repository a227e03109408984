"""Versioned schema: forward migration on open, other components' migrations, failures roll back."""

from __future__ import annotations

import sqlite3

import pytest

from exotrace.archive import Archive, SearchQuery
from exotrace.archive.migrations import applied_versions, apply_migrations, split_sql
from exotrace.archive.schema import MIGRATIONS
from exotrace.errors import ArchiveError


def _v1_database(path) -> None:
    """An archive as the first release wrote it: schema v1 only, one row inserted by hand."""
    conn = sqlite3.connect(path, isolation_level=None)
    apply_migrations(conn, "archive", MIGRATIONS[:1])
    conn.execute(
        "INSERT INTO messages (id, key, seq, trace_id, recipient, recipient_rdomain, sender, sender_rdomain, "
        "received, status, subject, content_hash, first_seen, updated_at) VALUES "
        "(1, 't1|linus@contoso.com', 1, 't1', 'linus@contoso.com', 'com.contoso', 'a@example.com', "
        "'com.example', '2024-05-01T10:00:00.000Z', 'Delivered', 'hello', x'00', "
        "'2024-05-01T10:00:00.000Z', '2024-05-01T10:00:00.000Z')"
    )
    conn.execute("INSERT INTO documents (id, doc) VALUES (1, '{\"email\": {\"local_id\": \"t1\"}}')")
    conn.close()


def test_v1_database_is_migrated_on_open_and_data_kept(db_path) -> None:
    _v1_database(db_path)
    with Archive.open(db_path) as arch:
        assert applied_versions(arch.conn)["archive"] == len(MIGRATIONS)
        assert arch.count() == 1
        rows = arch.search(SearchQuery(recipient="*@contoso.com"))
        assert [r["key"] for r in rows] == ["t1|linus@contoso.com"]
        indexes = {r[0] for r in arch.conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert "messages_day_recipient" in indexes and "messages_recipient" not in indexes
        # v3 back-filled the day of the old row: 2024-05-01 is day 19844 after 1970-01-01.
        assert arch.conn.execute("SELECT day FROM messages").fetchone() == (19844,)
    # Opening again applies nothing.
    with Archive.open(db_path) as arch:
        assert arch.ensure_schema("archive", MIGRATIONS) == 0


def test_newer_schema_is_refused(db_path) -> None:
    with Archive.open(db_path) as arch:
        arch.conn.execute(
            "INSERT INTO _migrations (component, version, name, applied_at) VALUES ('archive', 99, 'x', 'now')"
        )
    with pytest.raises(ArchiveError, match="newer than this exotrace"):
        Archive.open(db_path)


def test_other_components_own_their_tables(arch: Archive) -> None:
    def add_column(conn: sqlite3.Connection) -> None:
        conn.execute("ALTER TABLE ledger ADD COLUMN note TEXT")

    migrations = [
        "-- ledger table\nCREATE TABLE ledger (id INTEGER PRIMARY KEY, window TEXT);"
        "CREATE INDEX ledger_window ON ledger (window);",
        add_column,
    ]
    assert arch.ensure_schema("collector", migrations[:1]) == 1
    assert arch.ensure_schema("collector", migrations) == 1
    assert arch.ensure_schema("collector", migrations) == 0
    arch.conn.execute("INSERT INTO ledger (window, note) VALUES ('w1', 'ok')")
    names = dict(arch.conn.execute("SELECT version, name FROM _migrations WHERE component = 'collector'"))
    assert names == {1: "ledger table", 2: "add_column"}
    assert applied_versions(arch.conn)["archive"] == len(MIGRATIONS)


def test_failed_migration_rolls_back_and_raises(arch: Archive) -> None:
    bad = "CREATE TABLE half (x INTEGER); INSERT INTO no_such_table VALUES (1);"
    with pytest.raises(ArchiveError, match="migration outbox v1 failed"):
        arch.ensure_schema("outbox", [bad])
    assert "outbox" not in applied_versions(arch.conn)
    tables = {r[0] for r in arch.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "half" not in tables


def test_split_sql_keeps_trigger_bodies_whole() -> None:
    script = """
    CREATE TABLE a (x);
    CREATE TRIGGER t AFTER INSERT ON a BEGIN UPDATE a SET x = 1; SELECT 1; END;
    -- trailing comment only
    """
    statements = split_sql(script)
    assert len(statements) == 2
    assert statements[1].startswith("CREATE TRIGGER") and statements[1].rstrip().endswith("END;")


def test_not_a_database_is_an_archive_error(tmp_path) -> None:
    path = tmp_path / "junk.db"
    path.write_text("this is not sqlite " * 100)
    with pytest.raises(ArchiveError, match="cannot open archive"):
        Archive.open(path)


def test_missing_archive_without_create(tmp_path) -> None:
    with pytest.raises(ArchiveError, match="no archive at"):
        Archive.open(tmp_path / "missing.db", create=False)
    assert not (tmp_path / "missing.db").exists()


def test_someone_elses_sqlite_database_is_refused_and_left_untouched(db_path) -> None:
    with sqlite3.connect(db_path) as conn:
        conn.execute("CREATE TABLE messages (subject TEXT)")  # another tool's table of the same name
    before = db_path.read_bytes()
    with pytest.raises(ArchiveError, match="is an SQLite database but not an exotrace archive"):
        Archive.open(db_path)
    assert db_path.read_bytes() == before
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
