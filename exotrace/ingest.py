"""File ingestion: read exports, normalize, upsert into the archive, write NDJSON, count everything.

This is the library behind ``exotrace ingest``; the command only parses options and prints.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import orjson

from exotrace.archive.columns import derived_key
from exotrace.errors import ConfigError
from exotrace.model import Document, RawRecord, Reject
from exotrace.normalize import Normalizer
from exotrace.timeparse import format_ts, normalize_ts

log = logging.getLogger("exotrace.ingest")

#: Documents normalized, written and upserted together. Small on purpose: a chunk's documents are still in
#: the CPU cache when they are encoded, which makes the whole path about a third faster than 5000.
CHUNK_SIZE = 256
#: Rows per archive transaction (each chunk is a savepoint inside it).
COMMIT_ROWS = 5000


@dataclass
class IngestStats:
    """What one ingest run did."""

    read: int = 0
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    written: int = 0
    #: Rows without MessageTraceId archived under a derived key (see docs/archive.md).
    derived: int = 0
    #: The reader of ``--out`` went away (a closed pipe): writing NDJSON stopped there.
    out_closed: bool = False
    reject_messages: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if self.rejected else 0


class RejectWriter:
    """Appends rejected records as NDJSON (origin, line, reason, field, raw) to a file the user chose."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._fh = _open_for_writing(path, "ab", "--rejects")

    def write(self, reject: Reject) -> None:
        row = {"origin": reject.origin, "line": reject.line, "reason": reject.reason, "field": reject.field,
               "raw": reject.raw}
        try:
            data = orjson.dumps(row)
        except TypeError:  # a lone surrogate in the raw text: keep it, escaped
            data = orjson.dumps({k: v.encode("utf-8", "backslashreplace").decode() if isinstance(v, str) else v
                                 for k, v in row.items()})
        with naming(self._fh):
            self._fh.write(data + b"\n")

    def close(self) -> None:
        self._fh.close()


@contextmanager
def naming(stream: IO[bytes], name: str | None = None) -> Iterator[None]:
    """A failed write, flush or close of ``stream`` (a full disk) becomes an ``OSError`` naming the file
    (``name``, else the stream's); a reader that went away stays a ``BrokenPipeError``."""
    try:
        yield
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, name or getattr(stream, "name", None)) from exc


def document_reject(doc: Document) -> Reject:
    """A pipeline_error document described as a reject (for messages and the rejects file)."""
    messages = doc.doc.get("error", {}).get("message") or ["cannot normalize"]
    return Reject(
        origin=doc.origin,
        line=doc.line,
        reason="; ".join(messages) if isinstance(messages, list) else str(messages),
        raw=doc.doc.get("event", {}).get("original", ""),
        field=doc.error_field,
    )


@contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector: documents hold no cycles and are freed by reference counting.

    Callers sweep the young generations once per batch (``gc.collect(1)``), which stays cheap because the
    batch is gone by then; scanning every allocation burst would cost a third of the normalization time.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class FileTimes:
    """Each input file's modification time (UTC, archive form): the observation time of rows that carry none.

    Exports rarely say when they were taken (only Get-MessageTrace's EndDate does); the file's mtime is the
    next best thing, and it is the same every time the same file is read, so re-ingesting changes nothing.
    """

    def __init__(self) -> None:
        self._times: dict[str, str | None] = {}
        self._capped: dict[tuple[str, str], str] = {}

    def cap(self, observed: str, origin: str) -> str:
        """``observed`` (a query window's end), or the file's modification time when that is earlier: an
        export asked up to tomorrow still only knows what was true when it was written."""
        found = self._capped.get((observed, origin))
        if found is None:
            written = self(origin)
            found = written if written is not None and (normalize_ts(observed) or "") > written else observed
            if len(self._capped) >= 4096:
                self._capped.clear()
            self._capped[(observed, origin)] = found
        return found

    def __call__(self, origin: str) -> str | None:
        found = self._times.get(origin, "")
        if found == "":
            try:
                found = format_ts(datetime.fromtimestamp(os.stat(origin).st_mtime, UTC))
            except (OSError, ValueError, OverflowError):
                found = None
            self._times[origin] = found
        return found


class _Repeats:
    """Rows of one file without MessageTraceId that would share a derived key: a report lists each message
    once per recipient, so the second such row is another message (an alert sent twice in one second), and
    gets the key of its occurrence (:func:`~exotrace.archive.columns.derived_key`); it was taken for a
    second observation of the first, and one of the two was lost without a word. Files are read one after
    another, so only the current file's keys are counted."""

    def __init__(self) -> None:
        self._origin: str | None = None
        self._seen: Counter[str] = Counter()

    def key(self, doc: Document) -> None:
        base = derived_key(doc)
        if not base:
            return  # no recipient: the archive refuses it
        if doc.origin != self._origin:
            self._origin, self._seen = doc.origin, Counter()
        self._seen[base] += 1
        n = self._seen[base]
        doc.key = base if n == 1 else derived_key(doc, n)  # set: the archive does not derive it again


def _unencodable(doc: Document) -> str | None:
    """Why ``doc`` cannot be written as JSON, or None when it can."""
    try:
        doc.json  # noqa: B018 - encodes a document made from a dict
    except (TypeError, ValueError) as exc:
        return str(exc)
    return None


def ingest(
    items: Iterable[RawRecord | Reject],
    normalizer: Normalizer,
    *,
    archive: Any | None = None,
    out: IO[bytes] | None = None,
    rejects_file: RejectWriter | None = None,
    deliver: Callable[[list[Document], tuple[int, int]], None] | None = None,
    on_reject: Callable[[str], None] | None = None,
    chunk_size: int = CHUNK_SIZE,
    commit_rows: int = COMMIT_ROWS,
    observed_at: str | None = None,
) -> IngestStats:
    """Normalize ``items`` in chunks into the archive, an NDJSON stream and/or sinks.

    Rejected input lines, pipeline_error documents and documents the archive cannot store (no recipient,
    values JSON cannot represent) are counted, reported through ``on_reject`` as ``FILE:LINE: reason``,
    stored in the archive's rejects table and appended to ``rejects_file``. Documents without an observation
    time are observed at their file's modification time (all at ``observed_at`` when it is given, archive
    form: the time the user says the export was taken). With an archive, ``deliver`` gets only the rows
    it stored as new or updated (ingesting the same input again sends nothing), as the collector's sinks
    do, and the range of archive changes (``seq``) the upsert made; without one, every document. The
    archive commits every ``commit_rows`` rows and at the end; an interrupted run keeps what was
    committed. When the reader of ``out`` goes away (``BrokenPipeError``), NDJSON output stops and the
    rest still goes to the archive and sinks.
    """
    stats = IngestStats()
    docs: list[Document] = []
    rejects: list[Reject] = []
    transaction = ExitStack()
    uncommitted = 0
    file_time = FileTimes()
    repeats = _Repeats()

    def flush(final: bool = False) -> None:
        nonlocal uncommitted, out
        unwritable: set[int] = set()  # ids of documents that cannot be encoded as JSON
        changed: list[Document] = docs  # what the sinks get: with an archive, only new and updated rows
        seqs = (0, 0)  # the archive changes the upsert made
        if archive is not None and (docs or rejects):
            if not uncommitted:
                transaction.enter_context(archive.transaction())
            result = archive.upsert(docs, source="ingest", keep_changed=deliver is not None)
            changed, seqs = result.changed, result.seqs
            if rejects:
                archive.add_rejects(rejects, source="ingest")
            stats.new += result.new
            stats.updated += result.updated
            stats.unchanged += result.unchanged
            stats.derived += result.derived
            uncommitted += len(docs) + len(rejects)
            for document, refusal in result.refused:
                reject(refusal)
                if _unencodable(document) is not None:
                    unwritable.add(id(document))
        if archive is not None and uncommitted and (final or uncommitted >= commit_rows):
            transaction.close()
            uncommitted = 0
            gc.collect(1)
        if out is not None and docs:
            try:
                write_out(out, unwritable)
            except BrokenPipeError:
                out = None
                stats.out_closed = True
        elif deliver is not None and archive is None:
            check_encodable(unwritable)
        if deliver is not None and (changed or archive is not None):
            deliver([d for d in changed if id(d) not in unwritable] if unwritable else changed, seqs)
        docs.clear()
        rejects.clear()
        if archive is None and (final or stats.read % commit_rows < chunk_size):
            gc.collect(1)

    def write_out(stream: IO[bytes], unwritable: set[int]) -> None:
        try:
            if unwritable:
                raise TypeError("known unwritable documents")
            data = b"\n".join([d.json for d in docs]) + b"\n"
        except (TypeError, ValueError):  # a document JSON cannot represent: write the others
            check_encodable(unwritable)
            data = b"".join([d.json + b"\n" for d in docs if id(d) not in unwritable])
        with naming(stream):
            stream.write(data)
        stats.written += len(docs) - len(unwritable)

    def check_encodable(unwritable: set[int]) -> None:
        """Find the documents JSON cannot represent; reject them unless the archive already did."""
        for d in docs:
            if id(d) in unwritable:
                continue
            problem = _unencodable(d)
            if problem is not None:
                unwritable.add(id(d))
                if archive is None:
                    reject(Reject(d.origin, d.line, f"cannot write the document as JSON: {problem}",
                                  raw=str((d.doc.get("event") or {}).get("original") or "")))

    def reject(item: Reject) -> None:
        stats.rejected += 1
        if rejects_file is not None:
            rejects_file.write(item)
        if on_reject is not None:
            on_reject(item.describe())

    normalize = normalizer.normalize
    with paused_gc(), transaction:
        for item in items:
            stats.read += 1
            if isinstance(item, Reject):
                rejects.append(item)
                reject(item)
            else:
                try:
                    doc = normalize(item)
                except Exception as exc:  # noqa: BLE001 - a normalizer bug must not lose the rest of the file
                    log.debug("Normalizer failed on %s:%d.", item.origin, item.line, exc_info=True)
                    failed = Reject(item.origin, item.line, f"internal error while normalizing "
                                    f"({type(exc).__name__}: {exc}); please report it", raw=item.original)
                    rejects.append(failed)
                    reject(failed)
                    continue
                if doc.is_error:
                    reject(document_reject(doc))
                else:
                    if not doc.key:
                        repeats.key(doc)
                    if observed_at is not None:
                        doc.observed_at = observed_at
                    elif doc.observed_at is None:
                        doc.observed_at = file_time(doc.origin)
                    else:
                        doc.observed_at = file_time.cap(doc.observed_at, doc.origin)
                docs.append(doc)
            if len(docs) + len(rejects) >= chunk_size:
                flush()
                if out is None and stats.out_closed and archive is None and deliver is None:
                    break  # nothing left to write to
        flush(final=True)
    return stats


def _open_for_writing(path: str | os.PathLike[str], mode: str, option: str) -> IO[bytes]:
    """Open a file the user named for writing, creating its folder; OS errors become usage errors."""
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        return open(target, mode)  # type: ignore[return-value]  # noqa: SIM115 - the caller closes it
    except IsADirectoryError:
        raise ConfigError(f"{option} {os.fspath(path)}: is a directory; name a file", key=option) from None
    except (FileExistsError, NotADirectoryError):
        raise ConfigError(f"{option} {os.fspath(path)}: a parent of it is a file, not a folder", key=option) from None
    except OSError as exc:
        raise ConfigError(f"{option} {os.fspath(path)}: cannot write: {exc.strerror or exc}", key=option) from None


def open_output(target: str | None) -> tuple[IO[bytes] | None, bool]:
    """(stream, is_stdout) for ``--out``: ``-`` is standard output, a path is opened for writing."""
    if target is None:
        return None, False
    if target == "-":
        return sys.stdout.buffer, True
    return _open_for_writing(target, "wb", "--out"), False
