"""Row identity through the ``(day, key)`` index (schema v4), and the index each search walks."""

from __future__ import annotations

import sqlite3

import pytest

from exotrace.archive import Archive, SearchQuery
from exotrace.archive.migrations import apply_migrations
from exotrace.archive.query import address_filter, where_clause
from exotrace.archive.schema import MIGRATIONS
from exotrace.archive.testing import make_document as doc


@pytest.mark.parametrize("received", [
    "2024-05-02T09:59:00.000Z",  # the next day (a +14 h time-zone slip across midnight)
    "2024-04-30T20:00:00.000Z",  # the day before
    "2024-05-01T23:59:59.999Z",  # the same day
])
def test_a_row_read_again_with_its_received_time_slipped_is_the_same_row(arch: Archive, received: str) -> None:
    arch.upsert([doc("t1", received="2024-05-01T10:00:00.000Z", status="GettingStatus")])
    result = arch.upsert([doc("t1", received=received, status="Delivered", observed_at="2024-05-03T00:00:00Z")])
    assert (result.new, result.updated) == (0, 1)
    assert arch.count() == 1
    assert arch.get("t1|linus@contoso.com")["status"] == "Delivered"
    assert [h["event"] for h in arch.history("t1|linus@contoso.com")] == ["first_seen", "status_change"]


def test_keys_are_unique_within_one_upsert_across_days(arch: Archive) -> None:
    docs = [doc("t1", received="2024-05-01T23:00:00.000Z", status="Pending"),
            doc("t1", received="2024-05-02T01:00:00.000Z", status="Delivered", observed_at="2024-05-02T02:00:00Z")]
    result = arch.upsert(docs)
    assert (result.new, result.updated) == (1, 1)
    assert arch.count() == 1


def _v3_database(path) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    apply_migrations(conn, "archive", MIGRATIONS[:3])
    conn.close()


def test_v3_archive_is_rebuilt_without_a_global_key_index_and_keeps_its_rows(db_path) -> None:
    _v3_database(db_path)
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute(
        "INSERT INTO messages (id, key, seq, trace_id, recipient, recipient_rdomain, sender, sender_rdomain, "
        "received, status, content_hash, first_seen, updated_at, day) VALUES "
        "(7, 't7|linus@contoso.com', 3, 't7', 'linus@contoso.com', 'com.contoso', 'a@example.com', 'com.example', "
        "'2024-05-01T10:00:00.000Z', 'Pending', x'00', '2024-05-01T10:00:00.000Z', '2024-05-01T10:00:00.000Z', 19844)")
    conn.execute("INSERT INTO documents (id, doc) VALUES (7, '{}')")
    conn.execute("INSERT INTO history (message, event, new_status, recorded_at) "
                 "VALUES (7, 'first_seen', 'Pending', 'x')")
    conn.close()
    with Archive.open(db_path) as arch:
        indexes = {r[0] for r in arch.conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert "messages_day_key" in indexes
        assert not any(name.startswith("sqlite_autoindex_messages") for name in indexes)
        assert "messages_day_recipient_rdomain" not in indexes
        row = arch.get("t7|linus@contoso.com")
        assert row is not None and row["seq"] == 3 and row["status"] == "Pending"
        # the migrated row is found and updated in place, ids and history kept
        result = arch.upsert([doc("t7", status="Delivered", observed_at="2024-05-02T00:00:00Z")])
        assert (result.new, result.updated) == (0, 1)
        assert arch.conn.execute("SELECT id FROM messages").fetchall() == [(7,)]
        assert [h["event"] for h in arch.history("t7|linus@contoso.com")] == ["first_seen", "status_change"]


def test_a_user_view_over_the_messages_survives_the_table_rebuild(db_path) -> None:
    """A view made with sqlite3 or Datasette (the docs invite it) stopped v4's rebuild: "error in view
    recent: no such table: main.messages", and then no command could open the archive."""
    _v3_database(db_path)
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("CREATE VIEW recent AS SELECT m.key, d.doc FROM messages m JOIN documents d USING (id)")
    conn.close()
    with Archive.open(db_path) as arch:
        arch.upsert([doc("t1")])
        assert arch.conn.execute("SELECT key FROM recent").fetchall() == [("t1|linus@contoso.com",)]


def _plan(arch: Archive, query: SearchQuery) -> str:
    conditions, params, _ = where_clause(query)
    sql = f"SELECT m.id FROM messages m WHERE m.day = ? AND {' AND '.join(conditions)} ORDER BY m.received DESC"
    return " ".join(r[3] for r in arch.conn.execute(f"EXPLAIN QUERY PLAN {sql}", [19844, *params]))


RECIPIENT = "messages_day_recipient (day=? AND recipient_rdomain=?"
SENDER = "messages_day_sender (day=? AND sender_rdomain=?"


@pytest.mark.parametrize(("query", "index"), [
    (SearchQuery(recipient="linus@contoso.com"), RECIPIENT + " AND recipient=?)"),
    (SearchQuery(recipient="*@contoso.com"), RECIPIENT + ")"),
    (SearchQuery(sender="alice@example.com"), SENDER + " AND sender=?)"),
    (SearchQuery(sender="<>"), SENDER + " AND sender=?)"),
    (SearchQuery(sender="al*@example.com"), SENDER + " AND sender>? AND sender<?)"),
    (SearchQuery(trace_id="t1"), "messages_day_key (day=? AND key>? AND key<?)"),
    (SearchQuery(message_id="<m1@example.com>"), "messages_day_message_id (day=? AND message_id=?)"),
])
def test_each_search_walks_its_day_index(arch: Archive, query: SearchQuery, index: str) -> None:
    arch.upsert([doc("t1")])
    assert index in _plan(arch, query)


def test_exact_address_condition_names_the_domain() -> None:
    assert address_filter("m.recipient", "Linus@Contoso.com") == (
        "m.recipient_rdomain = ? AND m.recipient = ?", ["com.contoso", "linus@contoso.com"])


def test_every_day_a_key_is_received_on_in_one_batch_is_looked_up(arch: Archive) -> None:
    """Two sources 2 days apart (UTC-11 and UTC+14 exports without offsets) around a correct UTC read: the
    UTC read is within a day of the stored row, so the batch holding it finds that row whatever follows."""
    arch.upsert([doc("t1", received="2024-05-02T01:00:00.000Z", status="Pending", observed_at="2024-05-01T12:00:00Z")])
    arch.upsert([doc("t1", received="2024-05-01T11:00:00.000Z", status="Delivered", observed_at="2024-05-01T13:00:00Z"),
                 doc("t1", received="2024-04-30T23:00:00.000Z", status="Pending", observed_at="2024-05-01T12:30:00Z")])
    assert arch.count() == 1 and arch.get("t1|linus@contoso.com")["status"] == "Delivered"
