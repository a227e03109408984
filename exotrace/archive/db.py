"""The archive: one SQLite file (WAL) holding the latest state of every message-trace row.

One :class:`Archive` object is one writer: its connection is guarded by a lock, every write runs inside
``BEGIN IMMEDIATE`` (nested :meth:`Archive.transaction` blocks become savepoints), and readers in other
processes keep reading the last committed state while it writes (WAL).

Upsert rule, per document (``Document.key`` identifies the row; a document without MessageTraceId but with a
recipient gets a derived key, see :func:`~exotrace.archive.columns.derived_key`):

* unknown key -> **new** row, history entry ``first_seen``;
* same status and same content (ignoring the query-window fields, see :mod:`.columns`) -> **unchanged**
  (a later ``observed_at`` is still recorded: the stored state is known to hold that recently, so an
  observation between the two can no longer replace it);
* otherwise the observations are ordered by ``(status rank, observed_at, observation digest)`` and the
  greater one is kept: a final status beats ``GettingStatus``/``Pending`` whenever it was observed, between
  equal ranks the later observation wins, and two observations of the same time are settled by the digest
  of what Microsoft reported (:func:`~exotrace.archive.columns.observation_digest`; an equal digest is the
  same observation rendered anew, which replaces the stored document). A missing ``observed_at`` is older
  than any known time. The same observations therefore give the same stored state whatever their order,
  and applying one again changes nothing. A kept change updates the row; a status change also appends a
  ``status_change`` history entry (old and new status, observed_at, recorded_at, source). A lesser
  observation is ignored (counted ``unchanged`` and ``stale``).

Every new or updated row gets the next value of a global counter ``seq``; :meth:`Archive.changes_since`
replays rows changed after a cursor. ``pipeline_error`` documents, documents without a recipient and
documents JSON cannot represent go to the ``rejects`` table (counted ``errors``; the last two are also
listed in ``UpsertResult.refused`` with their reason).
"""

from __future__ import annotations

import gc
import json
import logging
import os
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
from exotrace.archive.columns import DERIVED_PREFIX, SEARCH_COLUMNS, derived_key, encode, extract, observation_digest
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
_DAY = SEARCH_COLUMNS.index("day")
_OBSERVED_AT = _ROW_COLUMNS.index("observed_at")
_ROW_DAY = _ROW_COLUMNS.index("day")


@dataclass(slots=True)
class UpsertResult:
    """What one :meth:`Archive.upsert` did. ``unchanged`` includes the ``stale`` documents."""

    new: int = 0
    updated: int = 0
    unchanged: int = 0
    #: Documents ignored because the archive already had a later status or a newer observation.
    stale: int = 0
    #: Documents stored as rejects: ``pipeline_error`` documents and the :attr:`refused` ones.
    errors: int = 0
    #: Documents without a pipeline error that could not be archived (no recipient, or a value JSON cannot
    #: represent), each with the reject stored for it.
    refused: list[tuple[Document, Reject]] = field(default_factory=list)
    #: Documents without MessageTraceId archived under a derived key.
    derived: int = 0
    #: The documents that were new or updated, in input order.
    changed: list[Document] = field(default_factory=list)
    #: The archive changes this upsert made: ``seq`` values ``seqs[0] < seq <= seqs[1]`` (one transaction
    #: holds the write lock, so they are contiguous).
    seqs: tuple[int, int] = (0, 0)

    @property
    def total(self) -> int:
        return self.new + self.updated + self.unchanged + self.errors

    def __iadd__(self, other: UpsertResult) -> UpsertResult:
        self.new += other.new
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.stale += other.stale
        self.errors += other.errors
        self.refused.extend(other.refused)
        self.derived += other.derived
        self.changed.extend(other.changed)
        if other.seqs[1] > other.seqs[0]:  # the span of both (contiguous when one transaction held both)
            mine = self.seqs if self.seqs[1] > self.seqs[0] else other.seqs
            self.seqs = (min(mine[0], other.seqs[0]), max(mine[1], other.seqs[1]))
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


_Good = tuple[Document, str, tuple[Any, ...], bytes, bytes, str]
_Prepared = tuple[list[_Good], list[Document], list[tuple[Document, Reject]], int]

#: Reject reason for a document the archive cannot key.
NO_RECIPIENT = ("no RecipientAddress: the archive keeps one row per (MessageTraceId, RecipientAddress) and "
                "cannot store a row without a recipient")


_HISTORY_NAMES = ("event", "old_status", "new_status", "observed_at", "recorded_at", "source")
_HISTORY_COLUMNS = ", ".join(f"h.{name}" for name in _HISTORY_NAMES)


def _prepare(batch: list[Document]) -> _Prepared:
    """Key, columns, JSON text, content digest and observation time of each document (no I/O).

    Returns the storable documents, the pipeline errors, the refused documents with their rejects, and how
    many documents got a derived key.
    """
    good: list[_Good] = []
    errors: list[Document] = []
    refused: list[tuple[Document, Reject]] = []
    derived = 0
    for document in batch:
        if document.is_error:
            errors.append(document)
            continue
        key = document.key
        if not key:
            key = derived_key(document)
            if not key:
                refused.append((document, _refusal(document, NO_RECIPIENT, "RecipientAddress")))
                continue
        if key.startswith(DERIVED_PREFIX):  # also a repeated row's key, set by ingest
            derived += 1
        try:
            text, digest = encode(document)
        except (TypeError, ValueError) as exc:  # orjson.JSONEncodeError: a huge integer, a lone surrogate
            refused.append((document, _refusal(document, f"cannot store the document as JSON: {exc}")))
            continue
        good.append((document, key, extract(document), text, digest, normalize_ts(document.observed_at) or ""))
    return good, errors, refused, derived


def _refusal(document: Document, reason: str, field: str | None = None) -> Reject:
    return Reject(origin=document.origin or "", line=document.line or 0, reason=reason,
                  raw=_original(document.doc), field=field)


def _original(doc: dict[str, Any]) -> str:
    """The document's ``event.original``, else the document itself as JSON (never raises)."""
    raw = (doc.get("event") or {}).get("original")
    return raw if isinstance(raw, str) else _safe_json(doc)


def _safe_json(value: Any) -> str:
    """JSON text of ``value``, also for values orjson refuses (huge integers, lone surrogates: escaped)."""
    try:
        return orjson.dumps(value).decode()
    except (TypeError, ValueError):
        return json.dumps(value, default=str)


def _storable(text: str) -> str:
    """``text`` as SQLite can store it: lone surrogates become ``\\udXXX`` escapes."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def _icontains(haystack: str | None, needle: str | None) -> int:
    if haystack is None or needle is None:
        return 0
    return int(needle.casefold() in haystack.casefold())


def _reject_row(reject: Reject, doc: str | None, source: str, now: str) -> tuple[Any, ...]:
    """The ``rejects`` row of ``reject`` (text made storable, digest for de-duplication)."""
    origin, reason, raw = _storable(reject.origin or ""), _storable(reject.reason), _storable(reject.raw or "")
    line, field = reject.line or 0, reject.field
    text = "\x00".join((_same_file(origin), str(line), reason, field or "", raw))
    digest = blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
    return (origin, line, reason, field, raw, doc, source, now, digest)


def _same_file(origin: str) -> str:
    """A file's origin as one spelling (``in1/a.ndjson``, ``./in1/a.ndjson`` and the absolute path are one
    file), so a reject read again through another path is the same reject; other origins as they are."""
    if origin and origin != "-" and os.path.isfile(origin):
        return os.path.realpath(origin)
    return origin


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
        if not create and path != ":memory:" and Path(path).is_file():
            if Path(path).stat().st_size == 0:
                raise ArchiveError(f"{path} is an empty file, not an exotrace archive; give another --archive path")
            if not os.access(Path(path).resolve().parent, os.W_OK):
                return cls._open_read_only(path, busy_timeout)
        if path != ":memory:" and not Path(path).exists():
            if not create:
                raise ArchiveError(f"no archive at {path} (run exotrace ingest or exotrace collect first)")
            try:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            except (FileExistsError, NotADirectoryError):
                raise ArchiveError(f"cannot create archive {path}: a parent of it is a file, not a folder") from None
            except OSError as exc:
                raise ArchiveError(f"cannot create archive {path}: {exc.strerror or exc}") from None
        try:
            conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise ArchiveError(f"cannot open archive {path}: {exc}") from exc
        try:
            tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if tables and "_migrations" not in tables:  # someone else's database: leave it as it is
                conn.close()
                raise ArchiveError(f"{path} is an SQLite database but not an exotrace archive (its tables: "
                                   f"{', '.join(sorted(tables)[:5])}); give another --archive path")
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

    @classmethod
    def _open_read_only(cls, path: str, busy_timeout: float) -> Archive:
        """An archive in a folder nobody can write to (read-only media): SQLite cannot make the WAL index
        beside it, so it is opened read-only, and immutable when even that needs one (nobody can be
        writing it there)."""
        uri = Path(path).resolve().as_uri()
        wal = Path(f"{path}-wal")
        for mode in ("mode=ro", "immutable=1"):
            conn = None
            try:
                conn = sqlite3.connect(f"{uri}?{mode}", uri=True, timeout=busy_timeout, isolation_level=None,
                                       check_same_thread=False)
                tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            except sqlite3.Error as exc:
                if conn is not None:
                    conn.close()
                if mode == "immutable=1":
                    raise ArchiveError(f"cannot open archive {path} (in a read-only folder): {exc}") from exc
                continue
            if "_migrations" not in tables:
                conn.close()
                raise ArchiveError(f"{path} is not an exotrace archive; give another --archive path")
            if mode == "immutable=1" and wal.is_file() and wal.stat().st_size > 0:
                log.warning("Archive %s is in a read-only folder beside a write-ahead log SQLite cannot use "
                            "there: changes still in %s are not shown (copy both files to a writable folder).",
                            path, wal.name)
            conn.create_function("exo_icontains", 2, _icontains, deterministic=True)
            archive = cls(conn, path)
            try:
                archive.ensure_schema(COMPONENT, MIGRATIONS)
            except (sqlite3.Error, ArchiveError) as exc:
                conn.close()
                raise ArchiveError(f"archive {path} is in a read-only folder and its schema needs an upgrade "
                                   f"({exc}): copy it to a writable folder and open it there once") from exc
            return archive
        raise AssertionError("unreachable")

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
                    self._apply(_prepare(batch), source, now, counters, result, keep_changed)
                result.seqs = (last_seq, counters[1])
        except sqlite3.Error as exc:
            raise ArchiveError(f"archive {self.path}: upsert failed: {exc}") from exc
        finally:
            if gc_was_enabled:
                gc.enable()
        self._written += result.new + result.updated
        return result

    def _lookup(self, wanted: dict[str, set[int]]) -> dict[str, _State]:
        """The stored state of the rows with these keys (key -> received days of the incoming documents).

        A row is looked for on its days, then, when not there, on the day either side of each (``(day, key)``
        index, see :mod:`.schema`): a received time can slip by a time zone between sources, never more.
        """
        found: dict[str, _State] = {}
        for days in ((0,), (-1, 1)):
            by_day: dict[int, list[str]] = {}
            for key, key_days in wanted.items():
                if key not in found:
                    for day in key_days:
                        by_day.setdefault(day, []).append(key)
            for day, keys in by_day.items():
                near = [day + offset for offset in days]
                for start in range(0, len(keys), LOOKUP_CHUNK):
                    chunk = keys[start : start + LOOKUP_CHUNK]
                    sql = (
                        "SELECT key, id, status, content_hash, observed_at FROM messages "
                        f"WHERE day IN ({', '.join('?' * len(near))}) AND key IN ({', '.join('?' * len(chunk))})"
                    )
                    for key, id_, status, digest, observed in self._conn.execute(sql, [*near, *chunk]):
                        found[key] = _State(id_, status, digest, observed or "")
        return found

    def _apply(
        self, prepared: _Prepared, source: str, now: str, counters: list[int], result: UpsertResult,
        keep_changed: bool,
    ) -> None:
        """Classify one prepared batch against the archive and write it."""
        good, errors, refused, derived = prepared
        rejects = [self._error_reject_row(document, source, now) for document in errors]
        rejects += [_reject_row(reject, None, source, now) for _, reject in refused]
        result.errors += len(errors) + len(refused)
        result.refused.extend(refused)
        result.derived += derived
        wanted: dict[str, set[int]] = {}
        for item in good:
            wanted.setdefault(item[1], set()).add(item[2][_DAY])
        states = self._lookup(wanted)
        inserts: list[list[Any]] = []
        updates: dict[int, tuple[Any, ...]] = {}
        docs: dict[int, bytes] = {}
        history: list[tuple[Any, ...]] = []
        touched: dict[int, str] = {}  # unchanged rows observed later: only observed_at moves
        for document, key, columns, text, digest, observed in good:
            status = columns[_STATUS]
            state = states.get(key)
            if state is None:
                counters[0] += 1
                counters[1] += 1
                row = [counters[0], key, counters[1], *columns, digest, observed or None, now, now,
                       document.origin or None, document.line or None, source]
                inserts.append(row)
                states[key] = _State(counters[0], status, digest, observed, row)
                docs[counters[0]] = text
                history.append((counters[0], "first_seen", None, status, observed or None, now, source))
                result.new += 1
                if keep_changed:
                    result.changed.append(document)
                continue
            if status == state.status and digest == state.digest:
                result.unchanged += 1
                if observed > state.observed_at:  # seen again later: the stored state is that recent
                    state.observed_at = observed
                    if state.insert is not None:
                        state.insert[_OBSERVED_AT] = observed
                    else:
                        touched[state.id] = observed
                continue
            # One total order over observations of a row, so the outcome never depends on input order.
            new_order, old_order = (status_rank(status), observed), (status_rank(state.status), state.observed_at)
            if new_order < old_order or (new_order == old_order and not self._wins_tie(document, state, docs)):
                result.unchanged += 1
                result.stale += 1
                continue
            counters[1] += 1
            if status != state.status:
                history.append((state.id, "status_change", state.status, status, observed or None, now, source))
            origin, line = document.origin or None, document.line or None
            if state.insert is not None:  # first seen earlier in this same upsert: rewrite the insert
                first_seen = state.insert[_ROW_COLUMNS.index("first_seen")]
                state.insert[2:] = [counters[1], *columns, digest, observed or None, first_seen, now, origin, line,
                                    source]
            else:
                updates[state.id] = (counters[1], *columns, digest, observed or None, now, origin, line, source,
                                     state.id)
                touched.pop(state.id, None)  # an earlier touch in this batch is older than this update
            state.status, state.digest, state.observed_at = status, digest, observed
            docs[state.id] = text
            result.updated += 1
            if keep_changed:
                result.changed.append(document)
        conn = self._conn
        if inserts:
            inserts.sort(key=lambda row: (row[_ROW_DAY], row[1]))  # neighbouring leaves of the (day, key) index
            conn.executemany(_INSERT_MESSAGE, inserts)
        if updates:
            conn.executemany(_UPDATE_MESSAGE, updates.values())
        if touched:  # after the updates: a touch is always later than an update of the same row
            conn.executemany("UPDATE messages SET observed_at = ? WHERE id = ?",
                             [(observed, row_id) for row_id, observed in touched.items()])
        if docs:
            conn.executemany(_UPSERT_DOCUMENT, docs.items())
        if history:
            conn.executemany(_INSERT_HISTORY, history)
        if rejects:
            conn.executemany(_INSERT_REJECT, rejects)

    def _wins_tie(self, document: Document, state: _State, pending: dict[int, bytes]) -> bool:
        """Whether ``document`` replaces the stored version of its row observed at the same time and rank.

        The same observation (equal :func:`observation_digest`) rendered anew wins, so re-ingesting with other
        options updates the row; otherwise the greater observation digest wins, whatever the input order.
        Runs only on such ties, which are rare, so the stored document is read back here instead of keeping
        another digest in every row.
        """
        text = pending.get(state.id)
        if text is None:
            found = self._conn.execute("SELECT doc FROM documents WHERE id = ?", (state.id,)).fetchone()
            if found is None:
                return True
            text = found[0]
        try:
            stored = orjson.loads(text)
        except orjson.JSONDecodeError:
            return True
        return observation_digest(document.doc) >= observation_digest(stored)

    @staticmethod
    def _error_reject_row(document: Document, source: str, now: str) -> tuple[Any, ...]:
        doc = document.doc
        messages = (doc.get("error") or {}).get("message")
        if isinstance(messages, list):
            messages = "; ".join(str(m) for m in messages)
        reason = str(messages or "pipeline error")
        reject = Reject(origin=document.origin or "", line=document.line or 0, reason=reason, raw=_original(doc),
                        field=document.error_field)
        return _reject_row(reject, _storable(_safe_json(doc)), source, now)

    def add_rejects(self, rejects: Iterable[Reject], *, source: str = "ingest") -> int:
        """Store input records that could not be read; return how many were new (repeats are ignored)."""
        now = utcnow_ts()
        rows = [_reject_row(r, None, source, now) for r in rejects]
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

    def iter_search(self, query: _query.SearchQuery) -> Iterator[dict[str, Any]]:
        """Like :meth:`search`, one row at a time (the archive stays locked for this object's other users
        until the iteration ends)."""
        with self._lock:
            try:
                yield from _query.iter_search(self._conn, query)
            except sqlite3.Error as exc:
                raise ArchiveError(f"archive {self.path}: {exc}") from exc

    def get(self, key: str) -> dict[str, Any] | None:
        """The row with this key (``row_key(trace_id, recipient)``), or ``None``."""
        found = self._read(lambda c: _query.row_by_key(c, key.strip().lower()))
        return _query.row_dict(found) if found else None

    def history(self, key: str) -> list[dict[str, Any]]:
        """The row's history, oldest first: ``first_seen`` then each ``status_change``."""
        sql = f"SELECT {_HISTORY_COLUMNS} FROM history h WHERE h.message = ? ORDER BY h.id"

        def read(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            row = _query.row_by_key(conn, key.strip().lower())
            if row is None:
                return []
            return [dict(zip(_HISTORY_NAMES, r, strict=True)) for r in conn.execute(sql, (row[-2],))]

        return self._read(read)

    def histories(self, seqs: Sequence[int]) -> dict[int, list[dict[str, Any]]]:
        """The history of each row given by its ``seq`` (as search rows carry it), like :meth:`history`."""

        def read(conn: sqlite3.Connection) -> dict[int, list[dict[str, Any]]]:
            found: dict[int, list[dict[str, Any]]] = {seq: [] for seq in seqs}
            for start in range(0, len(seqs), LOOKUP_CHUNK):
                chunk = list(seqs[start : start + LOOKUP_CHUNK])
                sql = (f"SELECT m.seq, {_HISTORY_COLUMNS} FROM messages m JOIN history h ON h.message = m.id "
                       f"WHERE m.seq IN ({', '.join('?' * len(chunk))}) ORDER BY h.id")
                for seq, *values in conn.execute(sql, chunk):
                    found[seq].append(dict(zip(_HISTORY_NAMES, values, strict=True)))
            return found

        return self._read(read)

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

    def rows_since(self, seq: int, limit: int = 1000, upto: int | None = None) -> list[dict[str, Any]]:
        """Like :meth:`changes_since` but full rows (key, fingerprint, status, ..., ``doc``); with ``upto``,
        only changes up to that ``seq``."""
        sql = f"{_query.SELECT_ROWS} WHERE m.seq > ? AND m.seq <= ? ORDER BY m.seq LIMIT ?"
        last = upto if upto is not None else 2**63 - 1
        return self._read(lambda c: [_query.row_dict(r) for r in c.execute(sql, (seq, last, limit))])
