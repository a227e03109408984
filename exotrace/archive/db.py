"""The archive: one SQLite file (WAL) holding the latest state of every message-trace row.

One :class:`Archive` object is one writer: its connection is guarded by a lock, every write runs inside
``BEGIN IMMEDIATE`` (nested :meth:`Archive.transaction` blocks become savepoints), and readers in other
processes keep reading the last committed state while it writes (WAL).

Upsert rule, per document (``Document.key`` identifies the row):

* unknown key -> **new** row, history entry ``first_seen``;
* same status and same content (ignoring the query-window fields, see :mod:`.columns`) -> **unchanged**;
* other status: accepted when its rank is higher (a final status beats ``GettingStatus``/``Pending``), or
  the rank is equal and its ``observed_at`` is not older than the stored one (a missing ``observed_at``
  counts as the time of the upsert); a lower rank or an older observation is ignored (counted
  ``unchanged`` and ``stale``). An accepted change updates the row and appends a ``status_change``
  history entry (old and new status, observed_at, recorded_at, source);
* same status, other content (a fixed subject, new enrichment) -> **updated** when not older, without a
  history entry.

Every new or updated row gets the next value of a global counter ``seq``; :meth:`Archive.changes_since`
replays rows changed after a cursor. ``pipeline_error`` documents have no reliable key and go to the
``rejects`` table (counted ``errors``).
"""

from __future__ import annotations

import gc
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from hashlib import blake2b
from itertools import islice
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson

from exotrace.archive import query as _query
from exotrace.archive.columns import SEARCH_COLUMNS, encode, extract
from exotrace.archive.migrations import Migration, apply_migrations
from exotrace.archive.schema import COMPONENT, MIGRATIONS
from exotrace.errors import ArchiveError
from exotrace.model import Document, Reject, status_rank
from exotrace.timeparse import normalize_ts, utcnow_ts

__all__ = ["DEFAULT_PATH", "Archive", "UpsertResult"]

log = logging.getLogger("exotrace.archive")

DEFAULT_PATH = "exotrace.db"
#: Documents handled per round trip (key lookup, then executemany).
BATCH_SIZE = 5000
#: Page size of new archives (existing ones keep theirs).
PAGE_SIZE = 16384
#: Keys per ``IN (...)`` lookup, well under SQLite's bound-variable limit.
LOOKUP_CHUNK = 500

_ROW_COLUMNS = ("id", "key", "seq", *SEARCH_COLUMNS, "content_hash", "observed_at", "first_seen",
                "updated_at", "origin", "line", "source")
_INSERT_MESSAGE = (
    f"INSERT INTO messages ({', '.join(_ROW_COLUMNS)}) VALUES ({', '.join('?' * len(_ROW_COLUMNS))})"
)
_UPDATE_COLUMNS = ("seq", *SEARCH_COLUMNS, "content_hash", "observed_at", "updated_at", "origin", "line",
                   "source")
_UPDATE_MESSAGE = f"UPDATE messages SET {', '.join(c + ' = ?' for c in _UPDATE_COLUMNS)} WHERE id = ?"
#: The JSON arrives as UTF-8 bytes; SQLite turns them into TEXT without a Python decode.
_UPSERT_DOCUMENT = "INSERT OR REPLACE INTO documents (id, doc) VALUES (?, CAST(? AS TEXT))"
_INSERT_HISTORY = (
    "INSERT INTO history (message, event, old_status, new_status, observed_at, recorded_at, source) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_REJECT = (
    "INSERT OR IGNORE INTO rejects (origin, line, reason, field, raw, doc, source, recorded_at, digest) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_STATUS = SEARCH_COLUMNS.index("status")


@dataclass(slots=True)
class UpsertResult:
    """What one :meth:`Archive.upsert` did. ``unchanged`` includes the ``stale`` documents."""

    new: int = 0
    updated: int = 0
    unchanged: int = 0
    #: Documents ignored because the archive already had a later status or a newer observation.
    stale: int = 0
    #: ``pipeline_error`` documents stored as rejects.
    errors: int = 0
    #: The documents that were new or updated, in input order.
    changed: list[Document] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.new + self.updated + self.unchanged + self.errors

    def __iadd__(self, other: UpsertResult) -> UpsertResult:
        self.new += other.new
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.stale += other.stale
        self.errors += other.errors
        self.changed.extend(other.changed)
        return self


@dataclass(slots=True)
class _State:
    """A row's current state while a batch is applied."""

    id: int
    status: str
    digest: bytes
    observed_at: str
    #: The pending insert row when the key was first seen in this upsert, else ``None``.
    insert: list[Any] | None = None


_Prepared = tuple[list[tuple[Document, tuple[Any, ...], bytes, bytes, str]], list[Document]]


def _prepare(batch: list[Document], now: str) -> _Prepared:
    """Columns, JSON text, content digest and observation time of each document (no I/O)."""
    good: list[tuple[Document, tuple[Any, ...], bytes, bytes, str]] = []
    errors: list[Document] = []
    for document in batch:
        if document.is_error or not document.key:
            errors.append(document)
            continue
        text, digest = encode(document.doc)
        good.append((document, extract(document), text, digest, normalize_ts(document.observed_at) or now))
    return good, errors


def _batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def _icontains(haystack: str | None, needle: str | None) -> int:
    if haystack is None or needle is None:
        return 0
    return int(needle.casefold() in haystack.casefold())


def _reject_digest(origin: str, line: int, reason: str, field: str | None, raw: str) -> bytes:
    text = "\x00".join((origin, str(line), reason, field or "", raw))
    return blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class Archive:
    """The message-trace archive. Open with :meth:`Archive.open`; close, or use as a context manager."""

    def __init__(self, conn: sqlite3.Connection, path: str) -> None:
        self._conn = conn
        self.path = path
        self._lock = threading.RLock()
        self._depth = 0
        self._written = 0
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | Path = DEFAULT_PATH, *, create: bool = True, busy_timeout: float = 30.0) -> Archive:
        """Open (and with ``create``, create) the archive at ``path``, in WAL mode, schema migrated forward.

        ``create=False`` raises :class:`ArchiveError` when the file does not exist.
        """
        path = str(path)
        if path != ":memory:" and not Path(path).exists():
            if not create:
                raise ArchiveError(f"no archive at {path} (run exotrace ingest or exotrace collect first)")
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise ArchiveError(f"cannot open archive {path}: {exc}") from exc
        try:
            # New files only (a no-op once tables exist): 16 KiB pages halve the write cost of ~2 KB documents.
            conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal" and path != ":memory:":
                log.warning("Archive %s is in journal mode %s, not WAL; readers may wait for writers.", path, mode)
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            conn.execute("PRAGMA cache_size = -262144")
            conn.execute("PRAGMA temp_store = MEMORY")
            conn.create_function("exo_icontains", 2, _icontains, deterministic=True)
            archive = cls(conn, path)
            archive.ensure_schema(COMPONENT, MIGRATIONS)
        except sqlite3.Error as exc:
            conn.close()
            raise ArchiveError(f"cannot open archive {path}: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        return archive

    def close(self) -> None:
        """Close the connection; a connection that wrote many rows refreshes the planner's statistics first."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                if self._written >= 1000:
                    self._conn.execute("PRAGMA busy_timeout = 1000")  # statistics can wait for next time
                    self._conn.execute("PRAGMA analysis_limit = 1000")
                    self._conn.execute("ANALYZE")
            except sqlite3.Error as exc:  # statistics are an optimisation only
                log.debug("ANALYZE skipped: %s", exc)
            finally:
                self._conn.close()

    def __enter__(self) -> Archive:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def conn(self) -> sqlite3.Connection:
        """The connection (autocommit mode): for other components' own tables, inside :meth:`transaction`."""
        return self._conn

    # -- schema and transactions -----------------------------------------------------------------

    def ensure_schema(self, component: str, migrations: Sequence[Migration]) -> int:
        """Apply ``component``'s missing migrations (see :mod:`exotrace.archive.migrations`); return how many."""
        with self._lock:
            return apply_migrations(self._conn, component, migrations)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error); nested blocks are savepoints.

        Holds this archive's lock, so other threads using the same object wait for the commit.
        """
        with self._lock:
            if self._depth == 0:
                self._execute("BEGIN IMMEDIATE")
                self._depth = 1
                try:
                    yield self._conn
                except BaseException:
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
                    raise
                else:
                    try:
                        self._execute("COMMIT")
                    except BaseException:
                        if self._conn.in_transaction:
                            self._conn.execute("ROLLBACK")
                        raise
                finally:
                    self._depth = 0
            else:
                name = f"exotrace_sp{self._depth}"
                self._conn.execute(f"SAVEPOINT {name}")
                self._depth += 1
                try:
                    yield self._conn
                except BaseException:
                    self._conn.execute(f"ROLLBACK TO {name}")
                    self._conn.execute(f"RELEASE {name}")
                    raise
                else:
                    self._conn.execute(f"RELEASE {name}")
                finally:
                    self._depth -= 1

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        try:
            return self._conn.execute(sql, params)
        except sqlite3.Error as exc:
            raise ArchiveError(f"archive {self.path}: {exc}") from exc

    # -- writes ----------------------------------------------------------------------------------

    def upsert(
        self, documents: Iterable[Document], *, source: str = "ingest", keep_changed: bool = True
    ) -> UpsertResult:
        """Apply ``documents`` in one transaction following the upsert rule (module docstring).

        ``keep_changed=False`` leaves ``UpsertResult.changed`` empty (saves memory on huge inputs).
        """
        result = UpsertResult()
        now = utcnow_ts()
        # The batches create millions of short-lived, acyclic objects: cyclic GC passes over them cost
        # a third of the time and free nothing, so the collector pauses until the upsert ends.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            with self.transaction():
                last_id, last_seq = self._conn.execute(
                    "SELECT coalesce(max(id), 0), (SELECT coalesce(max(seq), 0) FROM messages) FROM messages"
                ).fetchone()
                counters = [last_id, last_seq]
                for batch in _batched(documents, BATCH_SIZE):
                    self._apply(_prepare(batch, now), source, now, counters, result, keep_changed)
        except sqlite3.Error as exc:
            raise ArchiveError(f"archive {self.path}: upsert failed: {exc}") from exc
        finally:
            if gc_was_enabled:
                gc.enable()
        self._written += result.new + result.updated
        return result

    def _lookup(self, keys: list[str]) -> dict[str, _State]:
        found: dict[str, _State] = {}
        for start in range(0, len(keys), LOOKUP_CHUNK):
            chunk = keys[start : start + LOOKUP_CHUNK]
            sql = (
                "SELECT key, id, status, content_hash, observed_at FROM messages "
                f"WHERE key IN ({', '.join('?' * len(chunk))})"
            )
            for key, id_, status, digest, observed in self._conn.execute(sql, chunk):
                found[key] = _State(id_, status, digest, observed or "")
        return found

    def _apply(
        self, prepared: _Prepared, source: str, now: str, counters: list[int], result: UpsertResult,
        keep_changed: bool,
    ) -> None:
        """Classify one prepared batch against the archive and write it."""
        good, errors = prepared
        rejects = [self._error_reject_row(document, source, now) for document in errors]
        result.errors += len(errors)
        states = self._lookup(list({item[0].key for item in good}))
        inserts: list[list[Any]] = []
        updates: dict[int, tuple[Any, ...]] = {}
        docs: dict[int, bytes] = {}
        history: list[tuple[Any, ...]] = []
        for document, columns, text, digest, observed in good:
            status = columns[_STATUS]
            state = states.get(document.key)
            if state is None:
                counters[0] += 1
                counters[1] += 1
                row = [counters[0], document.key, counters[1], *columns, digest, observed, now, now,
                       document.origin or None, document.line or None, source]
                inserts.append(row)
                states[document.key] = _State(counters[0], status, digest, observed, row)
                docs[counters[0]] = text
                history.append((counters[0], "first_seen", None, status, observed, now, source))
                result.new += 1
                if keep_changed:
                    result.changed.append(document)
                continue
            if status == state.status and digest == state.digest:
                result.unchanged += 1
                continue
            if status != state.status:
                new_rank, old_rank = status_rank(status), status_rank(state.status)
                accept = new_rank > old_rank or (new_rank == old_rank and observed >= state.observed_at)
            else:
                accept = observed >= state.observed_at
            if not accept:
                result.unchanged += 1
                result.stale += 1
                continue
            counters[1] += 1
            if status != state.status:
                history.append((state.id, "status_change", state.status, status, observed, now, source))
            origin, line = document.origin or None, document.line or None
            if state.insert is not None:  # first seen earlier in this same upsert: rewrite the insert
                first_seen = state.insert[_ROW_COLUMNS.index("first_seen")]
                state.insert[2:] = [counters[1], *columns, digest, observed, first_seen, now, origin, line, source]
            else:
                updates[state.id] = (counters[1], *columns, digest, observed, now, origin, line, source, state.id)
            state.status, state.digest, state.observed_at = status, digest, observed
            docs[state.id] = text
            result.updated += 1
            if keep_changed:
                result.changed.append(document)
        conn = self._conn
        if inserts:
            inserts.sort(key=lambda row: row[1])  # key order: neighbouring leaf pages in the key index
            conn.executemany(_INSERT_MESSAGE, inserts)
        if updates:
            conn.executemany(_UPDATE_MESSAGE, updates.values())
        if docs:
            conn.executemany(_UPSERT_DOCUMENT, docs.items())
        if history:
            conn.executemany(_INSERT_HISTORY, history)
        if rejects:
            conn.executemany(_INSERT_REJECT, rejects)

    @staticmethod
    def _error_reject_row(document: Document, source: str, now: str) -> tuple[Any, ...]:
        doc = document.doc
        reason = str((doc.get("error") or {}).get("message") or "pipeline error")
        raw = (doc.get("event") or {}).get("original")
        raw_text = raw if isinstance(raw, str) else orjson.dumps(doc).decode()
        origin = document.origin or ""
        return (origin, document.line, reason, None, raw_text, orjson.dumps(doc).decode(), source, now,
                _reject_digest(origin, document.line, reason, None, raw_text))

    def add_rejects(self, rejects: Iterable[Reject], *, source: str = "ingest") -> int:
        """Store input records that could not be read; return how many were new (repeats are ignored)."""
        now = utcnow_ts()
        rows = [
            (r.origin or "", r.line or 0, r.reason, r.field, r.raw or "", None, source, now,
             _reject_digest(r.origin or "", r.line or 0, r.reason, r.field, r.raw or ""))
            for r in rejects
        ]
        if not rows:
            return 0
        try:
            with self.transaction():
                before = self._conn.total_changes
                self._conn.executemany(_INSERT_REJECT, rows)
                return self._conn.total_changes - before
        except sqlite3.Error as exc:
            raise ArchiveError(f"archive {self.path}: cannot store rejects: {exc}") from exc

    # -- reads -----------------------------------------------------------------------------------

    def _read(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        with self._lock:
            try:
                return fn(self._conn)
            except sqlite3.Error as exc:
                raise ArchiveError(f"archive {self.path}: {exc}") from exc

    def search(self, query: _query.SearchQuery) -> list[dict[str, Any]]:
        """Rows matching ``query``, newest ``received`` first (see :func:`exotrace.archive.query.row_dict`)."""
        return self._read(lambda c: _query.search(c, query))

    def get(self, key: str) -> dict[str, Any] | None:
        """The row with this key (``row_key(trace_id, recipient)``), or ``None``."""
        sql = f"{_query.SELECT_ROWS} WHERE m.key = ?"
        rows = self._read(lambda c: c.execute(sql, (key.strip().lower(),)).fetchall())
        return _query.row_dict(rows[0]) if rows else None

    def history(self, key: str) -> list[dict[str, Any]]:
        """The row's history, oldest first: ``first_seen`` then each ``status_change``."""
        sql = (
            "SELECT h.event, h.old_status, h.new_status, h.observed_at, h.recorded_at, h.source "
            "FROM history h JOIN messages m ON m.id = h.message WHERE m.key = ? ORDER BY h.id"
        )
        names = ("event", "old_status", "new_status", "observed_at", "recorded_at", "source")
        params = (key.strip().lower(),)
        return self._read(lambda c: [dict(zip(names, row, strict=True)) for row in c.execute(sql, params)])

    def stats(self, since: Any = None, until: Any = None, *, top: int = 10) -> dict[str, Any]:
        """Counts by status, direction and day, top senders and recipient domains, rejects (see query.stats)."""
        return self._read(lambda c: _query.stats(c, since=since, until=until, top=top))

    def snapshot(self) -> dict[str, str]:
        """Row key -> canonical status, for every row."""
        return self._read(lambda c: dict(c.execute("SELECT key, status FROM messages")))

    def count(self) -> int:
        """Number of rows (one per message and recipient)."""
        return int(self._read(lambda c: c.execute("SELECT count(*) FROM messages").fetchone()[0]))

    def statuses(self) -> list[str]:
        """The distinct statuses present in the archive."""
        return self._read(lambda c: [s for (s,) in c.execute("SELECT DISTINCT status FROM messages ORDER BY 1")])

    def reject_count(self) -> int:
        return int(self._read(lambda c: c.execute("SELECT count(*) FROM rejects").fetchone()[0]))

    def rejects(self, limit: int = 100) -> list[dict[str, Any]]:
        """The most recent rejects, newest first."""
        names = ("origin", "line", "reason", "field", "raw", "source", "recorded_at")
        sql = f"SELECT {', '.join(names)} FROM rejects ORDER BY id DESC LIMIT ?"
        return self._read(lambda c: [dict(zip(names, row, strict=True)) for row in c.execute(sql, (limit,))])

    def last_seq(self) -> int:
        """The highest change counter in the archive (0 when empty)."""
        return int(self._read(lambda c: c.execute("SELECT coalesce(max(seq), 0) FROM messages").fetchone()[0]))

    def changes_since(self, seq: int, limit: int = 1000) -> list[tuple[int, dict[str, Any]]]:
        """``(seq, ECS document)`` of rows changed after ``seq``, in change order, at most ``limit``.

        A row changed twice appears once, with its latest state, at its latest ``seq``.
        """
        sql = (
            "SELECT m.seq, d.doc FROM messages m JOIN documents d ON d.id = m.id "
            "WHERE m.seq > ? ORDER BY m.seq LIMIT ?"
        )
        return self._read(lambda c: [(s, orjson.loads(doc)) for s, doc in c.execute(sql, (seq, limit))])

    def rows_since(self, seq: int, limit: int = 1000) -> list[dict[str, Any]]:
        """Like :meth:`changes_since` but full rows (key, fingerprint, status, ..., ``doc``)."""
        sql = f"{_query.SELECT_ROWS} WHERE m.seq > ? ORDER BY m.seq LIMIT ?"
        return self._read(lambda c: [_query.row_dict(r) for r in c.execute(sql, (seq, limit))])
