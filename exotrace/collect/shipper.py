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
from collections.abc import Callable, Iterator
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


def changes_after(archive: Archive, seq: int, limit: int = 2000,
                  upto: int | None = None) -> tuple[list[Document], int]:
    """(the archived rows changed after ``seq`` (and up to ``upto``), as documents for the sinks; the last
    one's seq)."""
    rows = archive.rows_since(seq, limit, upto)
    docs = [Document(doc=r["doc"], key=r["key"], fingerprint=r.get("fingerprint", ""),
                     status=r.get("status", ""), observed_at=r.get("observed_at")) for r in rows]
    return docs, int(rows[-1]["seq"]) if rows else seq


class Coverage:
    """The archive changes this process handed to the sinks, as ``(lo, hi]`` ranges of ``seq``.

    Another process may write to the same archive meanwhile (``ingest`` without sinks beside the daemon):
    its changes fall between this process's own, and the shared cursor must not pass them until they are
    delivered too (:func:`foreign_changes`)."""

    def __init__(self) -> None:
        self._ranges: list[tuple[int, int]] = []

    def add(self, lo: int, hi: int) -> None:
        if hi <= lo:
            return
        ranges = sorted([*self._ranges, (lo, hi)])
        merged = [ranges[0]]
        for a, b in ranges[1:]:
            if a <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], b))
            else:
                merged.append((a, b))
        self._ranges = merged

    def gaps(self, lo: int, hi: int) -> list[tuple[int, int]]:
        """The parts of ``(lo, hi]`` no range covers."""
        found, at = [], lo
        for a, b in self._ranges:
            if b <= at:
                continue
            if a >= hi:
                break
            if a > at:
                found.append((at, a))
            at = max(at, b)
        if at < hi:
            found.append((at, hi))
        return found

    def high(self) -> int:
        """The last change covered (0: none)."""
        return self._ranges[-1][1] if self._ranges else 0

    def forget(self, upto: int) -> None:
        """Drop what lies at or below ``upto`` (the cursor passed it)."""
        self._ranges = [(max(a, upto), b) for a, b in self._ranges if b > upto]


#: Batches of another process's changes one checkpoint submits (the rest waits for the next).
FOREIGN_BATCHES = 5


def foreign_changes(archive: Archive, lo: int, hi: int, coverage: Coverage,
                    limit: int = 2000) -> Iterator[tuple[list[Document], int]]:
    """The rows changed in ``(lo, hi]`` by another process (outside ``coverage``), in batches, each with
    the last change it reaches."""
    for a, b in coverage.gaps(lo, hi):
        seq = a
        while True:
            docs, last = changes_after(archive, seq, limit, upto=b)
            if not docs:
                break
            yield docs, last if len(docs) == limit else b
            seq = last


class Shipper:
    def __init__(self, pipeline: Any, archive: Archive) -> None:
        self.pipeline = pipeline
        self.archive = archive
        self.lock = asyncio.Lock()
        self._pending: deque[tuple[int, int]] = deque()  # (max seq, ticket)
        self._own = Coverage()
        self.acked_seq = 0
        #: Changes of other processes found between this one's and handed to the sinks.
        self.foreign = 0

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

    async def commit(self, fn: Callable[[], tuple[Any, list[Document], tuple[int, int]]],
                     run: Callable[..., Any]) -> tuple[Any, int | None]:
        """Run ``fn`` (commit a page: result, changed docs, the ``(lo, hi]`` seq range it wrote) through
        ``run`` and submit its changes, in commit order."""
        async with self.lock:
            res, changed, (lo, hi) = await run(fn)
            self._own.add(lo, hi)
            ticket = await self.pipeline.submit(changed) if changed else None
            if ticket is not None:
                self._pending.append((hi, ticket))
            return res, ticket

    async def checkpoint(self) -> None:
        """Advance and persist ``acked_seq`` over the acknowledged prefix. Changes another process made in
        between are submitted first (at most ``FOREIGN_BATCHES`` batches a call, so page commits never wait
        long), and the cursor passes them once they are acknowledged too.

        All of it runs under the commit lock: two reads checkpointing at once would otherwise both pass the
        other process's changes, one of them before they were acknowledged."""
        async with self.lock:
            seq = self.acked_seq
            while self._pending and self.pipeline.acked(self._pending[0][1]):
                seq = self._pending.popleft()[0]
            if seq <= self.acked_seq:
                return
            batches = foreign_changes(self.archive, self.acked_seq, seq, self._own)
            tickets: list[int] = []
            count, reached = 0, self.acked_seq
            while len(tickets) < FOREIGN_BATCHES:
                found = await asyncio.to_thread(next, batches, None)
                if found is None:
                    reached = seq  # every change up to seq was the collector's or is submitted now
                    break
                docs, last = found
                tickets.append(await self.pipeline.submit(docs))
                count += len(docs)
                reached = last
            self._own.add(self.acked_seq, reached)
            if tickets:
                self.foreign += count
                log.info("submitted %d changes another process archived meanwhile", count)
                # the cursor moves to `reached` once the last of them is acknowledged, and on to seq (past
                # what is left of the other process's changes, if anything) on a later checkpoint
                entries = [(self.acked_seq, t) for t in tickets[:-1]] + [(reached, tickets[-1]), (seq, tickets[-1])]
                self._pending.extendleft(reversed(entries))
                return
            self.acked_seq = seq
            self._own.forget(seq)
            await asyncio.to_thread(save_cursor, self.archive, seq)
