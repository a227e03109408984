"""The archive's own tables, as forward migrations of component ``archive``.

``messages`` holds one narrow row per (MessageTraceId, RecipientAddress) with the search columns, and
``documents`` the ECS JSON of that row (same ``id``), so scans for stats and subject searches stay small.
Addresses, trace ids and domains are stored lower-cased; domains are stored label-reversed
(``mail.contoso.com`` -> ``com.contoso.mail``) so "this domain and its subdomains" is an index range.
Times are ``YYYY-MM-DDTHH:MM:SS.mmmZ`` strings (see :mod:`exotrace.timeparse`).

Since v3 the address, message-id and IP indexes lead with ``day`` (days since 1970 of ``received``):
mail arrives roughly in time order, so inserts touch only the newest part of each index, which stays
in the page cache however large the archive grows. Searches walk the days newest first
(:func:`exotrace.archive.query.search`). Since v4 the row key is indexed the same way, ``(day, key)``:
a global unique index over random trace ids dirtied pages all over the file at every commit, so ingest
slowed as the archive grew (12k rows/s at 1M rows with 5000-row commits, against 21k at the start). The
archive finds a row by its key on its received day and the day either side (a received time is the same
in every source up to a time-zone slip of at most 14 hours), and the single writer keeps keys unique.
Each address side has one index, ``(day, rdomain, address)``, serving exact addresses and domains alike.
"""

from __future__ import annotations

from exotrace.archive.migrations import Migration

__all__ = ["COMPONENT", "MIGRATIONS"]

COMPONENT = "archive"

V1_TABLES = """
-- tables: messages, documents, history, rejects
CREATE TABLE messages (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    seq INTEGER NOT NULL,
    trace_id TEXT NOT NULL,
    recipient TEXT NOT NULL,
    recipient_rdomain TEXT,
    sender TEXT,
    sender_rdomain TEXT,
    received TEXT,
    status TEXT NOT NULL,
    subject TEXT,
    message_id TEXT,
    from_ip TEXT,
    to_ip TEXT,
    direction TEXT,
    tenant TEXT,
    size INTEGER,
    fingerprint TEXT,
    content_hash BLOB NOT NULL,
    observed_at TEXT,
    first_seen TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    origin TEXT,
    line INTEGER,
    source TEXT
);
CREATE TABLE documents (
    id INTEGER PRIMARY KEY,
    doc TEXT NOT NULL
);
CREATE TABLE history (
    id INTEGER PRIMARY KEY,
    message INTEGER NOT NULL,
    event TEXT NOT NULL,
    old_status TEXT,
    new_status TEXT NOT NULL,
    observed_at TEXT,
    recorded_at TEXT NOT NULL,
    source TEXT
);
CREATE INDEX history_message ON history (message);
CREATE TABLE rejects (
    id INTEGER PRIMARY KEY,
    origin TEXT NOT NULL DEFAULT '',
    line INTEGER NOT NULL DEFAULT 0,
    reason TEXT NOT NULL,
    field TEXT,
    raw TEXT NOT NULL DEFAULT '',
    doc TEXT,
    source TEXT,
    recorded_at TEXT NOT NULL,
    digest BLOB NOT NULL UNIQUE
);
"""

V2_SEARCH_INDEXES = """
-- search indexes: newest-first per recipient, sender, domain, time, ids and IPs
CREATE UNIQUE INDEX messages_seq ON messages (seq);
CREATE INDEX messages_received ON messages (received);
CREATE INDEX messages_recipient ON messages (recipient, received);
CREATE INDEX messages_recipient_rdomain ON messages (recipient_rdomain, received);
CREATE INDEX messages_sender ON messages (sender, received);
CREATE INDEX messages_sender_rdomain ON messages (sender_rdomain, received);
CREATE INDEX messages_message_id ON messages (message_id);
CREATE INDEX messages_from_ip ON messages (from_ip) WHERE from_ip IS NOT NULL;
CREATE INDEX messages_to_ip ON messages (to_ip) WHERE to_ip IS NOT NULL;
"""

V3_DAY_INDEXES = """
-- day-partitioned search indexes: inserts stay in the newest part of each index
ALTER TABLE messages ADD COLUMN day INTEGER NOT NULL DEFAULT 0;
UPDATE messages SET day = CAST(julianday(substr(received, 1, 10)) - 2440587.5 AS INTEGER)
    WHERE received IS NOT NULL AND julianday(substr(received, 1, 10)) IS NOT NULL;
DROP INDEX messages_recipient;
DROP INDEX messages_recipient_rdomain;
DROP INDEX messages_sender;
DROP INDEX messages_sender_rdomain;
DROP INDEX messages_message_id;
DROP INDEX messages_from_ip;
DROP INDEX messages_to_ip;
CREATE INDEX messages_day_recipient ON messages (day, recipient, received);
CREATE INDEX messages_day_recipient_rdomain ON messages (day, recipient_rdomain, received);
CREATE INDEX messages_day_sender ON messages (day, sender, received);
CREATE INDEX messages_day_sender_rdomain ON messages (day, sender_rdomain, received);
CREATE INDEX messages_day_message_id ON messages (day, message_id);
CREATE INDEX messages_day_from_ip ON messages (day, from_ip) WHERE from_ip IS NOT NULL;
CREATE INDEX messages_day_to_ip ON messages (day, to_ip) WHERE to_ip IS NOT NULL;
"""

_V4_COLUMNS = (
    "id, key, seq, trace_id, recipient, recipient_rdomain, sender, sender_rdomain, received, status, subject, "
    "message_id, from_ip, to_ip, direction, tenant, size, fingerprint, content_hash, observed_at, first_seen, "
    "updated_at, origin, line, source, day"
)

V4_DAY_KEYS = f"""
-- day-local row identity: (day, key) instead of a global unique key; one index per address side
CREATE TABLE messages_v4 (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    seq INTEGER NOT NULL,
    trace_id TEXT NOT NULL,
    recipient TEXT NOT NULL,
    recipient_rdomain TEXT,
    sender TEXT,
    sender_rdomain TEXT,
    received TEXT,
    status TEXT NOT NULL,
    subject TEXT,
    message_id TEXT,
    from_ip TEXT,
    to_ip TEXT,
    direction TEXT,
    tenant TEXT,
    size INTEGER,
    fingerprint TEXT,
    content_hash BLOB NOT NULL,
    observed_at TEXT,
    first_seen TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    origin TEXT,
    line INTEGER,
    source TEXT,
    day INTEGER NOT NULL DEFAULT 0
);
INSERT INTO messages_v4 ({_V4_COLUMNS}) SELECT {_V4_COLUMNS} FROM messages ORDER BY id;
DROP TABLE messages;
ALTER TABLE messages_v4 RENAME TO messages;
CREATE INDEX messages_day_key ON messages (day, key);
CREATE UNIQUE INDEX messages_seq ON messages (seq);
CREATE INDEX messages_received ON messages (received);
CREATE INDEX messages_day_recipient ON messages (day, recipient_rdomain, recipient);
CREATE INDEX messages_day_sender ON messages (day, sender_rdomain, sender);
CREATE INDEX messages_day_message_id ON messages (day, message_id);
CREATE INDEX messages_day_from_ip ON messages (day, from_ip) WHERE from_ip IS NOT NULL;
CREATE INDEX messages_day_to_ip ON messages (day, to_ip) WHERE to_ip IS NOT NULL;
"""

#: Append-only. Version n is ``MIGRATIONS[n - 1]``.
MIGRATIONS: list[Migration] = [V1_TABLES, V2_SEARCH_INDEXES, V3_DAY_INDEXES, V4_DAY_KEYS]
