"""Hands committed changes to the sink pipeline, crash-safely, through the archive's change counter.

Every page is committed and submitted under one lock, so submissions follow commit order. The ledger
keeps ``acked_seq``: every archive change up to it was acknowledged by every required sink. At start,
changes after ``acked_seq`` (committed by a process that died before its sinks acknowledged them) are
submitted again: at-least-once, and the sinks deduplicate by fingerprint.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from exotrace.archive import Archive
from exotrace.model import Document

log = logging.getLogger("exotrace.collect")


def read_cursor(archive: Archive) -> int:
    """The archive change (``seq``) up to which every required sink acknowledged everything."""
    row = archive.conn.execute("SELECT acked_seq FROM collector_outbox WHERE name = 'sinks'").fetchone()
    return int(row[0]) if row else 0


def save_cursor(archive: Archive, seq: int) -> None:
    """Move the cursor forward to ``seq`` (never back: another writer may have moved it further)."""
    with archive.transaction():
        archive.conn.execute(
            "INSERT INTO collector_outbox (name, acked_seq) VALUES ('sinks', ?) "
            "ON CONFLICT(name) DO UPDATE SET acked_seq = max(acked_seq, excluded.acked_seq)", (seq,))


def changes_after(archive: Archive, seq: int, limit: int = 2000) -> tuple[list[Document], int]:
    """(the archived rows changed after ``seq``, as documents for the sinks; the last one's seq)."""
    rows = archive.rows_since(seq, limit)
    docs = [Document(doc=r["doc"], key=r["key"], fingerprint=r.get("fingerprint", ""),
                     status=r.get("status", ""), observed_at=r.get("observed_at")) for r in rows]
    return docs, int(rows[-1]["seq"]) if rows else seq


class Shipper:
    def __init__(self, pipeline: Any, archive: Archive) -> None:
        self.pipeline = pipeline
        self.archive = archive
        self.lock = asyncio.Lock()
        self._pending: deque[tuple[int, int]] = deque()  # (max seq, ticket)
        self.acked_seq = 0

    async def replay(self) -> int:
        """Resubmit changes a previous run committed but did not see acknowledged; return how many."""
        self.acked_seq = await asyncio.to_thread(read_cursor, self.archive)
        total = 0
        while True:
            docs, last = await asyncio.to_thread(changes_after, self.archive, self.acked_seq)
            if not docs:
                break
            ticket = await self.pipeline.submit(docs)
            while not await self.pipeline.wait_acked(ticket, 30.0):
                log.warning("waiting for sinks to acknowledge replayed changes up to seq=%s", last)
            self.acked_seq = last
            await asyncio.to_thread(save_cursor, self.archive, self.acked_seq)
            total += len(docs)
        if total:
            log.info("replayed %d changes not acknowledged by the sinks before the last stop", total)
        return total

    async def commit(self, fn: Callable[[], tuple[Any, list[Document], int]],
                     run: Callable[..., Any]) -> tuple[Any, int | None]:
        """Run ``fn`` (commit a page: result, changed docs, max seq) through ``run`` and submit its
        changes, in commit order."""
        async with self.lock:
            res, changed, max_seq = await run(fn)
            ticket = await self.pipeline.submit(changed) if changed else None
            if ticket is not None:
                self._pending.append((max_seq, ticket))
            return res, ticket

    async def checkpoint(self) -> None:
        """Advance and persist ``acked_seq`` over the acknowledged prefix."""
        seq = self.acked_seq
        while self._pending and self.pipeline.acked(self._pending[0][1]):
            seq = self._pending.popleft()[0]
        if seq > self.acked_seq:
            self.acked_seq = seq
            await asyncio.to_thread(save_cursor, self.archive, seq)
