"""File ingestion: read exports, normalize, upsert into the archive, write NDJSON, count everything.

This is the library behind ``exotrace ingest``; the command only parses options and prints.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from exotrace.model import Document, RawRecord, Reject
from exotrace.normalize import Normalizer

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
    reject_messages: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if self.rejected else 0


class RejectWriter:
    """Appends rejected records as NDJSON (origin, line, reason, field, raw) to a file the user chose."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._fh = open(path, "ab")  # noqa: SIM115 - closed in close()

    def write(self, reject: Reject) -> None:
        row = {"origin": reject.origin, "line": reject.line, "reason": reject.reason, "field": reject.field,
               "raw": reject.raw}
        self._fh.write(orjson.dumps(row) + b"\n")

    def close(self) -> None:
        self._fh.close()


def document_reject(doc: Document) -> Reject:
    """A pipeline_error document described as a reject (for messages and the rejects file)."""
    messages = doc.doc.get("error", {}).get("message") or ["cannot normalize"]
    return Reject(
        origin=doc.origin,
        line=doc.line,
        reason="; ".join(messages) if isinstance(messages, list) else str(messages),
        raw=doc.doc.get("event", {}).get("original", ""),
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


def ingest(
    items: Iterable[RawRecord | Reject],
    normalizer: Normalizer,
    *,
    archive: Any | None = None,
    out: IO[bytes] | None = None,
    rejects_file: RejectWriter | None = None,
    deliver: Callable[[list[Document]], None] | None = None,
    on_reject: Callable[[str], None] | None = None,
    chunk_size: int = CHUNK_SIZE,
    commit_rows: int = COMMIT_ROWS,
) -> IngestStats:
    """Normalize ``items`` in chunks into the archive, an NDJSON stream and/or sinks.

    Rejected input lines and pipeline_error documents are counted, reported through ``on_reject`` as
    ``FILE:LINE: reason``, stored in the archive's rejects table and appended to ``rejects_file``.
    The archive commits every ``commit_rows`` rows and at the end; an interrupted run keeps what was committed.
    """
    stats = IngestStats()
    docs: list[Document] = []
    rejects: list[Reject] = []
    transaction = ExitStack()
    uncommitted = 0

    def flush(final: bool = False) -> None:
        nonlocal uncommitted
        if archive is not None and (docs or rejects):
            if not uncommitted:
                transaction.enter_context(archive.transaction())
            result = archive.upsert(docs, source="ingest", keep_changed=False)
            if rejects:
                archive.add_rejects(rejects, source="ingest")
            stats.new += result.new
            stats.updated += result.updated
            stats.unchanged += result.unchanged
            uncommitted += len(docs) + len(rejects)
        if archive is not None and uncommitted and (final or uncommitted >= commit_rows):
            transaction.close()
            uncommitted = 0
            gc.collect(1)
        if out is not None and docs:
            out.write(b"\n".join([d.json for d in docs]) + b"\n")
            stats.written += len(docs)
        if deliver is not None and docs:
            deliver(docs)
        docs.clear()
        rejects.clear()
        if archive is None and (final or stats.read % commit_rows < chunk_size):
            gc.collect(1)

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
                doc = normalize(item)
                if doc.is_error:
                    reject(document_reject(doc))
                docs.append(doc)
            if len(docs) + len(rejects) >= chunk_size:
                flush()
        flush(final=True)
    return stats


def open_output(target: str | None) -> tuple[IO[bytes] | None, bool]:
    """(stream, is_stdout) for ``--out``: ``-`` is standard output, a path is opened for writing."""
    if target is None:
        return None, False
    if target == "-":
        import sys

        return sys.stdout.buffer, True
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    return open(target, "wb"), False  # noqa: SIM115 - the caller closes it
