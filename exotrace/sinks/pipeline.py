"""The sink pipeline: fan batches out to every configured sink, at least once, with backpressure.

Per sink a worker owns a bounded memory buffer, a disk :class:`~exotrace.sinks.buffer.spool.Spool`, a
dead-letter file and a retry policy; it sends one batch at a time and resolves every record in it
(delivered, or dead-lettered with the reason) before taking the next.

Tickets. ``submit`` gives each document a sequence number (persisted in ``state_dir/pipeline.json``, so
numbers are never reused across restarts) and returns the last one as the ticket. ``acked(ticket)`` is
true once no required sink still holds a document numbered ``<= ticket``. A clean ``close()`` writes the
memory buffers to the spools, so after a restart the spooled documents keep their numbers and old
tickets become acked when the replay delivers them. After a crash (no ``close()``), documents that were
only in memory are gone: every ticket from the first lost document on is reported by
:meth:`SinkPipeline.abandoned` and never acked; resubmit them (the collector re-reads from its checkpoint,
which never moved past them). Spooled documents of abandoned tickets are still delivered (duplicates, no
gaps).

Routing. New documents go to memory while the sink keeps up; once its memory buffer is full, or the sink
is failing (down or slow), or its spool still holds unread documents, they go to the spool instead, and
the spool is replayed in sequence order before anything newer. A required sink whose spool is full
blocks ``submit`` (backpressure); a best-effort sink drops its oldest spooled documents and counts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import importlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any

import orjson

from exotrace.clock import Clock, SystemClock
from exotrace.errors import AuthError, ConfigError, InputError, PermanentError, SinkError, TransientError
from exotrace.model import Document, observation_version
from exotrace.net.retry import Backoff
from exotrace.sinks.base import Record, Sink
from exotrace.sinks.buffer.spool import Spool
from exotrace.sinks.config import SinkConfig, load_sinks

__all__ = [
    "METRIC_NAMES",
    "SinkPipeline",
    "SyncRunResult",
    "SyncSinkPipeline",
    "build_sink",
    "read_metrics",
    "run_sync",
]

log = logging.getLogger("exotrace.sinks")

#: Cumulative counters per sink (documents): sent (acknowledged), failed (in failed attempts), retried
#: (sent again), spooled (written to the disk spool), dead_lettered, dropped (best-effort sinks only).
METRIC_NAMES = ("sent", "failed", "retried", "spooled", "dead_lettered", "dropped")
#: Gauges per sink, as of the last update: documents waiting (memory + spool + in flight), spool bytes.
GAUGE_NAMES = ("pending", "spool_bytes")
#: Seconds a best-effort sink's request may wait for an answer before flush and close stop waiting for it.
STALL_GRACE = 5.0

_SINK_CLASSES = {
    "elasticsearch": "exotrace.sinks.elasticsearch:ElasticsearchSink",
    "opensearch": "exotrace.sinks.opensearch:OpenSearchSink",
    "splunk_hec": "exotrace.sinks.splunk_hec:SplunkHecSink",
    "sentinel": "exotrace.sinks.sentinel:SentinelSink",
    "http": "exotrace.sinks.http:HttpSink",
    "syslog": "exotrace.sinks.syslog:SyslogSink",
    "file": "exotrace.sinks.file:FileSink",
    "stdout": "exotrace.sinks.stdout:StdoutSink",
}
_RESERVE = 100_000
_STATE_FILE = "pipeline.json"
_METRICS_FILE = "metrics.json"


def build_sink(config: SinkConfig) -> Sink:
    """Instantiate the sink class for ``config.type`` (imported lazily)."""
    module_name, attr = _SINK_CLASSES[config.type].split(":")
    cls = getattr(importlib.import_module(module_name), attr)
    sink: Sink = cls(config)
    return sink


def read_metrics(state_dir: Path | str) -> dict[str, dict[str, int]]:
    """Per-sink metrics persisted by the last pipeline that used ``state_dir`` (empty if none)."""
    path = Path(state_dir) / _METRICS_FILE
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    sinks = data.get("sinks", {}) if isinstance(data, dict) else {}
    return {str(k): {m: int(v) for m, v in vals.items()} for k, vals in sinks.items()}


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class _Worker:
    """Delivery loop of one sink."""

    def __init__(self, sink: Sink, config: SinkConfig, folder: Path, clock: Clock,
                 counters: dict[str, int], notify: Callable[[], None]) -> None:
        self.sink = sink
        self.cfg = config
        self.name = config.name
        self.log = logging.getLogger(f"exotrace.sinks.{config.type}")
        self.clock = clock
        self.counters = counters
        self.notify = notify
        self.spool = Spool(folder / "spool" / config.name)
        self.dead_letter_path = Path(config.dead_letter or folder / "dead-letter" / f"{config.name}.ndjson")
        self.memory: deque[Record] = deque()
        self.mem_bytes = 0
        self.batches: deque[_Batch] = deque()  # in flight, oldest first
        self.inflight_undone: set[int] = set()
        self.down = False
        self.sending: dict[int, float] = {}  # id of a request in flight -> loop time it started
        self.flushing = 0
        self.closing = False
        self.stopping = False  # close() gave up draining: take no new batch, retry nothing
        self.wake = asyncio.Event()
        self.space = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.sends: set[asyncio.Task[None]] = set()  # one per batch in flight
        self.last_error = ""

    # -- state queries -----------------------------------------------------------------------------

    def min_outstanding(self) -> int | None:
        cands = []
        if self.inflight_undone:
            cands.append(min(self.inflight_undone))
        if self.memory:
            cands.append(self.memory[0].seq)
        peek = self.spool.peek_seq()
        if peek is not None:
            cands.append(peek)
        return min(cands) if cands else None

    def unresponsive(self, grace: float = STALL_GRACE) -> bool:
        """Down, or a request has been waiting for an answer longer than ``grace`` seconds."""
        if self.down:
            return True
        now = asyncio.get_running_loop().time()
        return any(now - started > grace for started in self.sending.values())

    def idle(self) -> bool:
        return not self.memory and not self.spool.has_unread() and not self.inflight_undone

    def pending(self) -> int:
        return len(self.memory) + self.spool.unread + len(self.inflight_undone)

    # -- intake ------------------------------------------------------------------------------------

    async def put(self, records: list[Record], nbytes: int) -> None:
        if (not self.spool.has_unread() and not self.down
                and len(self.memory) + len(records) <= self.cfg.buffer_max_events
                and self.mem_bytes + nbytes <= self.cfg.buffer_max_bytes):
            self.memory.extend(records)
            self.mem_bytes += nbytes
        else:
            await self._spool_append(records, nbytes)
        self.wake.set()

    async def _spool_append(self, records: list[Record], nbytes: int) -> None:
        warned = False
        while self.spool.bytes and self.spool.bytes + nbytes > self.cfg.spool_max_bytes:
            if not self.cfg.required:
                dropped = self.spool.drop_oldest()
                self.counters["dropped"] += dropped
                self.log.warning("Sink %s: spool full, dropped %d oldest documents (best effort).",
                                 self.name, dropped)
                continue
            if not warned:
                self.log.warning("Sink %s: spool full (%d bytes); waiting for the sink to catch up.",
                                 self.name, self.spool.bytes)
                warned = True
            self.space.clear()
            await self.space.wait()
        self.spool.append(records)
        self.counters["spooled"] += len(records)

    def _spill_memory(self) -> None:
        """The sink is failing: move the memory buffer to disk, where a crash cannot lose it."""
        if self.memory and not self.spool.has_unread():
            recs = list(self.memory)
            self.memory.clear()
            self.mem_bytes = 0
            self.spool.append(recs)
            self.counters["spooled"] += len(recs)

    # -- delivery loop -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Take batches and deliver up to ``concurrency`` of them at once; commit spool reads in order."""
        slots = asyncio.Semaphore(max(1, self.cfg.concurrency))
        tasks = self.sends
        try:
            while True:
                await slots.acquire()
                records, from_spool = await self._next_batch()
                if records is None:
                    slots.release()
                    break
                batch = _Batch(records, self.spool.position() if from_spool else None)
                self.batches.append(batch)
                self.inflight_undone.update(r.seq for r in records)
                task = asyncio.create_task(self._run_batch(batch, slots))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _run_batch(self, batch: _Batch, slots: asyncio.Semaphore) -> None:
        try:
            if not await self._deliver(batch.records):
                return  # stopping: what is left of the batch goes to the spool (persist)
            batch.done = True
            while self.batches and self.batches[0].done:
                done = self.batches.popleft()
                if done.spool_pos is not None:
                    self.spool.commit(done.spool_pos)
                    self.space.set()
            self.notify()
        finally:
            slots.release()

    async def _next_batch(self) -> tuple[list[Record] | None, bool]:
        cfg = self.cfg
        loop = asyncio.get_running_loop()
        while True:
            if self.stopping:
                return None, False
            if self.memory or self.spool.has_unread():
                if (not self.spool.has_unread() and not self.flushing and not self.closing
                        and cfg.batch_timeout > 0 and len(self.memory) < cfg.batch_max_events
                        and self.mem_bytes < cfg.batch_max_bytes):
                    deadline = loop.time() + cfg.batch_timeout
                    while (len(self.memory) < cfg.batch_max_events and self.mem_bytes < cfg.batch_max_bytes
                           and not self.flushing and not self.closing and not self.spool.has_unread()):
                        remaining = deadline - loop.time()
                        if remaining <= 0:
                            break
                        self.wake.clear()
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(remaining):
                                await self.wake.wait()
                return self._take()
            if self.closing:
                return None, False
            self.wake.clear()
            await self.wake.wait()

    def _take(self) -> tuple[list[Record], bool]:
        cfg = self.cfg
        if self.memory:
            out: list[Record] = []
            total = 0
            while self.memory and len(out) < cfg.batch_max_events:
                size = len(self.memory[0].raw)
                if out and total + size > cfg.batch_max_bytes:
                    break
                out.append(self.memory.popleft())
                total += size
            self.mem_bytes -= total
            return out, False
        return self.spool.read(cfg.batch_max_events, cfg.batch_max_bytes), True

    async def _deliver(self, batch: list[Record]) -> bool:
        """Send ``batch`` until every record is delivered or dead-lettered (True), retrying failures.

        Returns False, with the unresolved records still in ``inflight_undone``, once the worker is
        stopping: no attempt or retry starts then. That check does not rely on cancellation, which
        Python 3.11's ``asyncio.wait_for`` can swallow when the awaited operation fails at the same time."""
        parts: list[list[Record]] = [batch]
        backoff = Backoff(base=self.cfg.retry_initial, cap=self.cfg.retry_max)
        while parts:
            part = parts.pop(0)
            while part:
                if self.stopping:
                    return False
                token = id(part)
                self.sending[token] = asyncio.get_running_loop().time()
                try:
                    result = await self.sink.send(part)
                except SinkError as exc:
                    self.counters["failed"] += len(part)
                    if len(part) > 1:
                        mid = len(part) // 2
                        parts[0:0] = [part[:mid], part[mid:]]
                        self.counters["retried"] += len(part)
                        part = []
                        continue
                    if self._dead_letter(part[0], str(exc)):
                        part = []
                        continue
                    delay = backoff.next()
                    self._failing(part, f"{exc}; dead-letter file not writable", delay, level=logging.ERROR)
                except TransientError as exc:
                    delay = backoff.next(exc.retry_after)
                    self._failing(part, f"{exc}", delay)
                except (AuthError, ConfigError, PermanentError) as exc:
                    delay = self.cfg.retry_max
                    self._failing(part, f"{exc}", delay, level=logging.ERROR)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # a bug or an unmapped library error: keep the data, retry
                    self.log.exception("Sink %s: unexpected error while sending.", self.name)
                    delay = backoff.next()
                    self._failing(part, f"{type(exc).__name__}: {exc}", delay)
                else:
                    retry = set(result.retry)
                    delivered = 0
                    for i, rec in enumerate(part):
                        if i in result.rejected:
                            if not self._dead_letter(rec, result.rejected[i]):
                                retry.add(i)
                        elif i not in retry:
                            self.inflight_undone.discard(rec.seq)
                            delivered += 1
                    self.counters["sent"] += delivered
                    part = [part[i] for i in sorted(retry) if i < len(part)]
                    if not part:
                        backoff.reset()
                        if self.down:
                            self.log.info("Sink %s: delivering again.", self.name)
                        self.down = False
                        self.last_error = ""
                        continue
                    delay = backoff.next(result.retry_after)
                    self._failing(part, f"{len(part)} documents to retry", delay)
                finally:
                    self.sending.pop(token, None)
                if self.stopping:
                    return False
                self.counters["retried"] += len(part)
                await self.clock.sleep(delay)
        return True

    def _failing(self, part: list[Record], reason: str, delay: float, level: int = logging.WARNING) -> None:
        self.counters["failed"] += len(part)
        self.last_error = reason
        self.log.log(level, "Sink %s: %s; retrying %d documents in %.1fs.", self.name, reason, len(part), delay)
        self.down = True
        self._spill_memory()

    def _dead_letter(self, rec: Record, reason: str) -> bool:
        """Write ``rec`` with the reason to the dead-letter file, then count it done. False when the file
        cannot be written: the record stays held (retried), never acknowledged without a trace."""
        line = orjson.dumps({
            "@timestamp": self.clock.now().astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "sink": self.name, "reason": reason, "seq": rec.seq, "key": rec.key,
            "fingerprint": rec.fingerprint, "document": orjson.Fragment(rec.raw),
        }) + b"\n"
        try:
            self.dead_letter_path.parent.mkdir(parents=True, exist_ok=True)
            with self.dead_letter_path.open("ab") as fh:
                fh.write(line)
        except OSError as exc:
            self.log.error("Sink %s rejected document %s: %s; the dead-letter file %s cannot be written (%s): "
                           "the document is kept and retried.", self.name, rec.key or rec.seq, reason,
                           self.dead_letter_path, exc.strerror or exc)
            return False
        self.inflight_undone.discard(rec.seq)
        self.counters["dead_lettered"] += 1
        self.log.error("Sink %s rejected document %s: %s (dead-lettered).", self.name, rec.key or rec.seq,
                       reason)
        return True

    # -- shutdown ----------------------------------------------------------------------------------

    async def stop(self, deadline: float) -> bool:
        """End the delivery loop: no new batch, no retry; cancel what is in flight, again and again (a
        cancellation can be lost, see :meth:`_deliver`) until it ended or the loop time ``deadline``.
        False if something still runs then: :meth:`persist` spools its records anyway."""
        self.stopping = True
        self.wake.set()
        loop = asyncio.get_running_loop()
        while True:
            running = [t for t in (self.task, *self.sends) if t is not None and not t.done()]
            remaining = deadline - loop.time()
            if not running or remaining <= 0:
                return not running
            for t in running:
                t.cancel()
            await asyncio.wait(running, timeout=min(remaining, 0.5))

    def persist(self) -> int:
        """After the loop stopped: write undelivered memory and in-flight records to the spool."""
        recs: list[Record] = []
        for b in self.batches:
            if b.spool_pos is None:  # spool-sourced batches are still in the spool files
                recs.extend(r for r in b.records if r.seq in self.inflight_undone)
        # spool reads not committed (in flight, or done behind an unfinished one) are read again next run
        self.spool.rewind(sum(len(b.records) for b in self.batches if b.spool_pos is not None))
        recs.extend(self.memory)
        recs.sort(key=lambda r: r.seq)
        self.spool.write_older(recs)
        self.counters["spooled"] += len(recs)
        self.memory.clear()
        self.mem_bytes = 0
        self.inflight_undone.clear()
        self.batches.clear()
        self.spool.close()
        return len(recs)


@dataclass(slots=True)
class _Batch:
    records: list[Record]
    spool_pos: tuple[str, int] | None  # spool read position after this batch (None: from memory)
    done: bool = False


class SinkPipeline:
    """Fan-out of document batches to the configured sinks. See the module docstring."""

    def __init__(self, configs: Sequence[SinkConfig], state_dir: Path | str = Path(".exotrace-spool"),
                 clock: Clock | None = None, *, sinks: Sequence[Sink] | None = None,
                 close_timeout: float = 30.0, stop_timeout: float = 10.0) -> None:
        self.state_dir = Path(state_dir)
        self.clock: Clock = clock or SystemClock()
        self.close_timeout = close_timeout
        self.stop_timeout = stop_timeout
        self.configs = list(configs)
        self._sinks = list(sinks) if sinks is not None else None
        if self._sinks is not None and len(self._sinks) != len(self.configs):
            raise ValueError("sinks and configs must pair up")
        self._workers: list[_Worker] = []
        self._metrics: dict[str, dict[str, int]] = {}
        self._next_seq = 1
        self._reserved = 1
        self._abandoned: list[tuple[int, int]] = []
        self._started = False
        self._closed = False
        self._lock_fh: Any = None
        self._progress: asyncio.Event | None = None
        self._saver: asyncio.Task[None] | None = None

    @classmethod
    def from_tables(cls, tables: list[dict[str, Any]], state_dir: Path | str = Path(".exotrace-spool"),
                    clock: Clock | None = None, base: Path | None = None) -> SinkPipeline:
        return cls(load_sinks(tables, base), state_dir, clock)

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._started:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._lock()
        self._progress = asyncio.Event()
        state = self._load_state()
        old_metrics = read_metrics(self.state_dir)
        unclean = bool(state.get("running"))
        self._next_seq = int(state.get("reserved" if unclean else "next_seq", 1)) or 1
        self._reserved = self._next_seq
        self._abandoned = [(int(a), int(b)) for a, b in state.get("abandoned", [])]
        done_upto: dict[str, int] = state.get("done_upto", {})
        for i, cfg in enumerate(self.configs):
            counters = {m: int(old_metrics.get(cfg.name, {}).get(m, 0)) for m in METRIC_NAMES}
            self._metrics[cfg.name] = counters
            sink = self._sinks[i] if self._sinks is not None else build_sink(cfg)
            w = _Worker(sink, cfg, self.state_dir, self.clock, counters, self._notify)
            ranges = w.spool.open()
            if unclean and cfg.required:
                lo = int(done_upto.get(cfg.name, self._next_seq - 1)) + 1
                self._mark_lost(lo, self._next_seq - 1, ranges, cfg.name)
            self._workers.append(w)
        self._reserve(0)
        try:
            for w in self._workers:
                await w.sink.start()
        except BaseException:
            for w in self._workers:
                w.spool.close()
                with contextlib.suppress(Exception):
                    await w.sink.close()
            self._save_state(running=unclean)
            self._workers.clear()
            self._unlock()
            raise
        for w in self._workers:
            w.task = asyncio.create_task(w.run(), name=f"exotrace-sink-{w.name}")
            w.task.add_done_callback(_report_crash)
        self._started = True
        self._saver = asyncio.create_task(self._save_loop(), name="exotrace-sink-metrics")
        replay = sum(w.spool.unread for w in self._workers)
        if replay:
            log.info("Sinks: replaying %d spooled documents before new data.", replay)

    async def submit(self, docs: Sequence[Document]) -> int:
        """Queue documents for every sink; return the ticket (the last sequence number)."""
        if not self._started or self._closed:
            raise RuntimeError("pipeline is not running")
        if not docs:
            return self._next_seq - 1
        n = len(docs)
        first = self._next_seq
        self._reserve(n)
        try:
            records = [Record(first + i, d.json, key=d.key, fingerprint=d.fingerprint,
                              version=observation_version(d.status, d.observed_at)) for i, d in enumerate(docs)]
        except TypeError as exc:  # orjson.JSONEncodeError: a value JSON cannot represent
            bad = next(d for d in docs if not _serializable(d))
            raise InputError(f"document cannot be serialized: {exc}", origin=bad.origin, line=bad.line) from exc
        self._next_seq = first + n
        nbytes = sum(len(r.raw) for r in records)
        for w in self._workers:
            await w.put(records, nbytes)
        return first + n - 1

    def acked(self, ticket: int) -> bool:
        """True once every required sink acknowledged (or dead-lettered) every document up to ``ticket``."""
        if ticket >= self._next_seq or self.abandoned(ticket):
            return False
        for w in self._workers:
            if w.cfg.required:
                m = w.min_outstanding()
                if m is not None and m <= ticket:
                    return False
        return True

    def abandoned(self, ticket: int) -> bool:
        """True if the ticket's documents were lost by a crash before delivery (resubmit them)."""
        return any(lo <= ticket <= hi for lo, hi in self._abandoned)

    async def wait_acked(self, ticket: int, timeout: float | None = None) -> bool:
        return await self._wait(lambda: self.acked(ticket) or self.abandoned(ticket), timeout) and self.acked(ticket)

    async def flush(self, timeout: float | None = None) -> bool:
        """Send everything buffered now; True when every sink is empty.

        Waits for every required sink to empty (or ``timeout``); a best-effort sink that is failing, or
        whose request has waited more than ``STALL_GRACE`` seconds for an answer, is not waited for (its
        documents stay spooled for a later run), so it cannot hold up ``ingest``."""
        if not self._started:
            return True
        for w in self._workers:
            w.flushing += 1
            w.wake.set()
        try:
            await self._wait(lambda: all(w.idle() or (not w.cfg.required and w.unresponsive())
                                         for w in self._workers), timeout)
            return all(w.idle() for w in self._workers)
        finally:
            for w in self._workers:
                w.flushing -= 1

    async def close(self, timeout: float | None = None) -> None:
        """Flush what can be flushed (sinks that are failing are not waited for), spool the rest.

        Bounded: after the drain (up to ``timeout``, default ``close_timeout``), each worker gets up to
        ``stop_timeout`` seconds to stop; whatever it has not delivered by then is written to its spool
        for the next run, never dropped."""
        if not self._started or self._closed:
            return
        self._closed = True
        limit = self.close_timeout if timeout is None else timeout
        for w in self._workers:
            w.flushing += 1
            w.closing = True
            w.wake.set()
        await self._wait(lambda: all(w.idle() or w.down or (not w.cfg.required and w.unresponsive())
                                     for w in self._workers), limit)
        deadline = asyncio.get_running_loop().time() + self.stop_timeout
        stopped = await asyncio.gather(*(w.stop(deadline) for w in self._workers))
        for w, ok in zip(self._workers, stopped, strict=True):
            if not ok:
                log.error("Sink %s: a send did not stop within %gs; its documents stay in the spool (they may "
                          "arrive twice).", w.name, self.stop_timeout)
        if self._saver is not None:
            self._saver.cancel()
            await asyncio.gather(self._saver, return_exceptions=True)
        for w in self._workers:
            kept = w.persist()
            if kept or w.spool.unread:
                log.warning("Sink %s: %d documents kept in the spool for the next run.", w.name, w.spool.unread)
            try:
                await w.sink.close()
            except Exception:  # closing must not lose the state below
                log.exception("Sink %s: error while closing.", w.name)
        self._save_state(running=False)
        self._save_metrics()
        self._unlock()
        self._notify()

    async def __aenter__(self) -> SinkPipeline:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def metrics(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for w in self._workers:
            out[w.name] = dict(w.counters, pending=w.pending(), spool_bytes=w.spool.bytes)
        return out

    def last_errors(self) -> dict[str, str]:
        """The most recent failure reason per sink ("" when healthy)."""
        return {w.name: w.last_error for w in self._workers}

    # -- internals ---------------------------------------------------------------------------------

    def _notify(self) -> None:
        if self._progress is not None:
            ev, self._progress = self._progress, asyncio.Event()
            ev.set()

    async def _wait(self, pred: Callable[[], bool], timeout: float | None) -> bool:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not pred():
            assert self._progress is not None
            ev = self._progress
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return pred()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(None if remaining is None else min(remaining, 0.5)):
                    await ev.wait()
        return True

    def _reserve(self, n: int) -> None:
        if self._next_seq + n > self._reserved or n == 0:
            self._reserved = self._next_seq + n + _RESERVE
            self._save_state(running=True)

    def _mark_lost(self, lo: int, hi: int, present: list[tuple[int, int]], sink: str) -> None:
        """After a crash: seqs in [lo, hi] that are not in the spool were only in memory and are gone.

        A submission can be split between memory (lost) and the spool (kept), so everything from the first
        missing seq up to ``hi`` is abandoned, spooled or not: a ticket is then never acked while part of
        its batch is lost. Spooled documents in that range are still delivered (the resubmission
        duplicates them, which at-least-once allows)."""
        first_missing = lo
        for a, b in present:
            if b < first_missing:
                continue
            if a > first_missing:
                break
            first_missing = b + 1
        if first_missing > hi:
            return
        log.error("Sink %s: the last run stopped without closing; documents from sequence %d on may not have "
                  "been delivered: their tickets are abandoned and must be resubmitted.", sink, first_missing)
        merged = sorted([*self._abandoned, (first_missing, hi)])
        out: list[tuple[int, int]] = []
        for a, b in merged:
            if out and a <= out[-1][1] + 1:
                out[-1] = (out[-1][0], max(out[-1][1], b))
            else:
                out.append((a, b))
        self._abandoned = out

    def _load_state(self) -> dict[str, Any]:
        path = self.state_dir / _STATE_FILE
        try:
            data = orjson.loads(path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, orjson.JSONDecodeError) as exc:
            raise ConfigError(f"sink state {path} is unreadable ({exc}); move it away to start fresh") from exc
        return data if isinstance(data, dict) else {}

    def _save_state(self, *, running: bool) -> None:
        done: dict[str, int] = {}
        for w in self._workers:
            m = w.min_outstanding()
            done[w.name] = (m - 1) if m is not None else self._next_seq - 1
        data = {"version": 1, "next_seq": self._next_seq, "reserved": self._reserved, "running": running,
                "done_upto": done, "abandoned": [list(a) for a in self._abandoned]}
        _atomic_write(self.state_dir / _STATE_FILE, orjson.dumps(data, option=orjson.OPT_INDENT_2))

    def _save_metrics(self) -> None:
        data = {"version": 1, "updated": time.time(), "sinks": self.metrics()}
        _atomic_write(self.state_dir / _METRICS_FILE, orjson.dumps(data, option=orjson.OPT_INDENT_2))

    async def _save_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self._save_metrics()
            self._save_state(running=True)

    def _lock(self) -> None:
        fh = (self.state_dir / ".lock").open("a")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            raise ConfigError(f"sink state folder {self.state_dir} is in use by another exotrace process") from None
        self._lock_fh = fh

    def _unlock(self) -> None:
        if self._lock_fh is not None:
            fcntl.flock(self._lock_fh, fcntl.LOCK_UN)
            self._lock_fh.close()
            self._lock_fh = None


def _serializable(doc: Document) -> bool:
    try:
        doc.json  # noqa: B018 - encodes a document made from a dict
    except TypeError:
        return False
    return True


def _report_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("Sink worker %s stopped on an internal error; its documents stay buffered.",
                  task.get_name(), exc_info=task.exception())


@dataclass
class SyncRunResult:
    """What :func:`run_sync` did: tickets per batch, whether all are acked, metrics per sink."""

    tickets: list[int]
    acked: bool
    metrics: dict[str, dict[str, int]]


class SyncSinkPipeline:
    """Blocking facade over :class:`SinkPipeline` (for synchronous commands such as ``ingest``).

    The pipeline runs on its own event loop in a daemon thread; every method blocks until done.
    """

    def __init__(self, configs: Sequence[SinkConfig], state_dir: Path | str = Path(".exotrace-spool"),
                 clock: Clock | None = None, **kw: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="exotrace-sinks", daemon=True)
        self._thread.start()
        self.pipeline = SinkPipeline(configs, state_dir, clock, **kw)

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def start(self) -> None:
        try:
            self._run(self.pipeline.start())
        except BaseException:
            self._stop_loop()
            raise

    def submit(self, docs: Sequence[Document]) -> int:
        return int(self._run(self.pipeline.submit(docs)))

    def acked(self, ticket: int) -> bool:
        return bool(self._run(_call(self.pipeline.acked, ticket)))

    def wait_acked(self, ticket: int, timeout: float | None = None) -> bool:
        return bool(self._run(self.pipeline.wait_acked(ticket, timeout)))

    def flush(self, timeout: float | None = None) -> bool:
        return bool(self._run(self.pipeline.flush(timeout)))

    def metrics(self) -> dict[str, dict[str, int]]:
        return dict(self._run(_call(self.pipeline.metrics)))

    def close(self, timeout: float | None = None) -> None:
        if self._loop.is_closed():
            return
        try:
            self._run(self.pipeline.close(timeout))
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        if self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> SyncSinkPipeline:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _call(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


def run_sync(pipeline: SinkPipeline, batches: Iterable[Sequence[Document]], *,
             flush_timeout: float | None = 60.0) -> SyncRunResult:
    """Start ``pipeline``, submit every batch, flush (up to ``flush_timeout`` s), close; report."""

    async def _main() -> SyncRunResult:
        tickets: list[int] = []
        await pipeline.start()
        try:
            for batch in batches:
                tickets.append(await pipeline.submit(batch))
            await pipeline.flush(flush_timeout)
            ok = all(pipeline.acked(t) for t in tickets)
            return SyncRunResult(tickets, ok, pipeline.metrics())
        finally:
            await pipeline.close()

    return asyncio.run(_main())
