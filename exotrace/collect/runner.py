"""One tenant's collection loop: plan windows, read due ones (live tail, re-reads, backfill), commit.

Each page is normalized and upserted in one archive transaction; changed documents go to the sink
pipeline. A window is marked read (complete/settled) only after every page is committed and every
required sink acknowledged; a failure leaves it due again, so no checkpoint passes unstored data.
The daemon also reads the open live-tail window provisionally (rows stored, ledger untouched). The
tenant's status (last error, quota use, counters) is written to the ledger as it changes, so
``exotrace status`` describes a running collector.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import orjson

from exotrace.archive import Archive, UpsertResult
from exotrace.auth import TokenProvider
from exotrace.clock import Clock
from exotrace.collect.plan import plan
from exotrace.collect.progress import BackfillProgress
from exotrace.collect.quota import QuotaGovernor
from exotrace.collect.shipper import Shipper
from exotrace.collect.stop import Stopped, unless_stopped
from exotrace.config import TenantConfig
from exotrace.errors import AuthError, ExotraceError, PermanentError, TransientError
from exotrace.model import Document, RawRecord
from exotrace.net import Backoff, make_async_client, redact
from exotrace.normalize import NormalizeOptions, Normalizer
from exotrace.sources.base import ApiCaller, ContinuationFailed, Page, Source
from exotrace.sources.graph import GraphSource
from exotrace.sources.rws import RwsSource
from exotrace.state.ledger import TICK, Ledger, Window, fmt_time

log = logging.getLogger("exotrace.collect")

#: progress(tenant, seconds of the backfill span collected, seconds of the span, rows read)
ProgressFn = Callable[[str, float, float, int], None]

#: Rows normalized and upserted at a time (bounds memory for 5000-row pages).
CHUNK = 1000
#: Addresses (and IPs, domains) whose JSON parts the normalizer keeps per tenant: a bound on memory for
#: long backfills (each cache empties when full).
ADDRESS_CACHE = 20_000

#: In ``--once`` mode a window is given up after this many failed attempts.
ONCE_ATTEMPTS = 6
#: In ``--once`` mode a broken tenant (credentials, permission) is tried this many times, with backoff.
ONCE_AUTH_ATTEMPTS = 3
#: Tenant backoff after an auth failure (seconds of the clock): the daemon's, and ``--once``'s shorter one.
TENANT_BACKOFF = (60.0, 1800.0)
ONCE_TENANT_BACKOFF = (15.0, 60.0)
#: Longest real time between two status writes to the ledger while the tenant is active.
STATUS_EVERY = 5.0
#: Near the end of a backfill, unread windows are halved for parallel reads while each half is estimated
#: at this many pages or more (every piece costs one partial last page).
SPLIT_MIN_PAGES = 5
#: Windows are given up this long before the API's horizon (an API stricter than our clock).
HORIZON_MARGIN = timedelta(minutes=10)
#: Shortest head cut off a window near the horizon.
AT_RISK_MIN_SPAN = timedelta(minutes=1)


@dataclass
class TenantReport:
    name: str
    ok: bool = True
    error: str | None = None
    exit_code: int = 0
    windows_read: int = 0
    rows: int = 0
    new: int = 0
    updated: int = 0
    requests: int = 0
    throttled: int = 0
    restarts: int = 0
    repaired: int = 0
    warnings: list[str] = field(default_factory=list)


def _received(row: dict[str, Any]) -> datetime | None:
    text = row.get("receivedDateTime") or row.get("Received")
    if not isinstance(text, str):
        return None
    s = text.strip()
    if s.startswith("/Date("):
        try:
            return datetime.fromtimestamp(int(s[6:].split(")")[0].split("+")[0]) / 1000, UTC)
        except ValueError:
            return None
    s = s.replace("Z", "")
    if "." in s:
        head, frac = s.split(".", 1)
        frac = "".join(ch for ch in frac if ch.isdigit())[:6]
        s = f"{head}.{frac}"
    try:
        t = datetime.fromisoformat(s)
    except ValueError:
        return None
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


class TenantRunner:
    """Collects one tenant until done (``once``/``settle``) or stopped."""

    def __init__(self, tenant: TenantConfig, archive: Archive, clock: Clock, *, mode: str,
                 since: timedelta | None, stop: asyncio.Event, shipper: Shipper | None = None,
                 progress: ProgressFn | None = None,
                 geoip_dir: str | None = None, executor: Executor | None = None, geoip: bool = True,
                 preserve_original: bool = False) -> None:
        self.t = tenant
        self.executor = executor
        self.s = tenant.settings
        self.archive = archive
        self.ledger = Ledger(archive.conn)
        self.clock = clock
        self.mode = mode  # "once", "settle" or "daemon"
        self.since = since
        self.stop = stop
        self.shipper = shipper
        self.progress = progress
        self.report = TenantReport(tenant.name)
        self.normalizer = Normalizer(NormalizeOptions(
            local_domains=tenant.local_domains, geoip_dir=geoip_dir, geoip=geoip,
            preserve_original=preserve_original, tenant=tenant.name, address_cache_size=ADDRESS_CACHE))
        self.quota = QuotaGovernor(self.s.quota, self.s.quota_period, clock)
        self._inflight: dict[asyncio.Task[None], list[Window]] = {}
        #: The running provisional read of the open live-tail window, if any (one of ``_inflight``).
        self._live_task: asyncio.Task[None] | None = None
        self._busy: set[datetime] = set()
        self._warned: set[datetime] = set()
        #: Ends of the windows whose aging data was already reported (a trimmed start moves every pass).
        self._aged: set[datetime] = set()
        base, cap = TENANT_BACKOFF if mode == "daemon" else ONCE_TENANT_BACKOFF
        self._tenant_backoff = Backoff(base=base, cap=cap)
        self._blocked_until: datetime | None = None
        self._auth_failures = 0
        self._gave_up = False
        self._stopped_early = False
        #: tickets of pages committed by reads that then failed: a later read finds those rows unchanged
        #: and submits nothing, so it waits for these before it marks anything read
        self._orphan_tickets: list[Any] = []
        self._t0 = clock.now()
        self._backfill = BackfillProgress()
        #: end of the ledger's last window (set by each planning pass), and the provisional live tail
        self._planned_until: datetime | None = None
        self._live_next = self._t0
        self._live_until: datetime | None = None
        #: status written to the ledger: when (monotonic), and the counters already added there
        self._status_at = 0.0
        self._saved_counts = (0, 0)
        self._status_writes: set[asyncio.Future[Any]] = set()
        # rows and seconds of window span read so far: the tenant's density, to size tail splits
        self._seen_rows = 0
        self._seen_span = 0.0
        #: running reads: group start -> (span in seconds, rows read so far)
        self._reading: dict[datetime, tuple[float, int]] = {}

    # -- setup --------------------------------------------------------------------------------
    def _source(self, caller: ApiCaller) -> Source:
        return GraphSource(caller) if self.t.api == "graph" else RwsSource(caller)

    def _timeout(self) -> float:
        speed = float(getattr(self.clock, "speed", 1.0) or 1.0)
        return max(self.s.timeout / speed, 5.0)

    def _load_quota(self) -> None:
        saved = self.ledger.tenant_info(self.t.name).get("quota_json")
        if saved:
            try:
                self.quota.load(list(orjson.loads(saved)))
            except (orjson.JSONDecodeError, TypeError):
                pass

    async def run(self) -> TenantReport:
        await self._db(self._load_quota)
        client = make_async_client(ca_bundle=self.t.ca_bundle, proxy=self.t.proxy, timeout=self._timeout(),
                                   max_connections=self.s.concurrency + 2)
        tokens = TokenProvider(self.t, self.clock)
        caller = ApiCaller(self.t, client, tokens, self.quota, self.clock, stop=self.stop)
        self.caller = caller
        # each request's time reaches the ledger as it is sent: a collector killed after a burst cannot
        # spend the same quota again when it restarts
        caller.on_request = partial(self._maybe_save_status, True)
        source = self._source(caller)
        try:
            await self._loop(source)
        finally:
            if self._inflight and self.stop.is_set():
                # shutdown: every wait of a read races the stop event, so each read ends after committing
                # the page in hand; the timeout is a safety net only
                await asyncio.wait(list(self._inflight), timeout=self._timeout() * 2)
            for task in list(self._inflight):
                task.cancel()
            if self._inflight:
                await asyncio.gather(*self._inflight, return_exceptions=True)
            await client.aclose()
            tokens.close()
            if self._stopped_early:  # not a success for scripts: exit 4, and the summary says why
                last = f" (last error: {self.report.error})" if self.report.error else ""
                self.report.ok, self.report.exit_code = False, self.report.exit_code or 4
                self.report.error = f"stopped before every window was read{last}; run again to resume"
            c = caller.counters
            self.report.requests, self.report.throttled = c.requests, c.throttled
            self.report.restarts, self.report.repaired = c.restarts, c.repaired
            if self._status_writes:
                await asyncio.gather(*self._status_writes, return_exceptions=True)
            await self._db(self._write_status, self._status_fields())
        return self.report

    async def _db(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run archive work (and normalization) on the collector's single writer thread."""
        if self.executor is None:
            return await asyncio.to_thread(fn, *args)
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    # -- live status ---------------------------------------------------------------------------
    def _status_fields(self) -> dict[str, Any]:
        """The tenant's status now, for the ledger. Taken on the event loop: the governor is not thread-safe."""
        c = self.caller.counters
        fields: dict[str, Any] = {
            "api": self.t.api, "quota_used": self.quota.used(), "quota_limit": self.quota.limit,
            "quota_json": orjson.dumps(self.quota.export()).decode(), "updated_at": fmt_time(self.clock.now()),
            "requests": c.requests - self._saved_counts[0], "throttled": c.throttled - self._saved_counts[1],
            "warning": "; ".join(self.report.warnings[-3:]) or None,
            "retry_at": fmt_time(self._blocked_until) if self._blocked_until and not self._gave_up else None,
        }
        if self._live_until is not None:
            fields["live_until"] = fmt_time(self._live_until)
        self._saved_counts = (c.requests, c.throttled)
        self._status_at = time.monotonic()
        return fields

    def _write_status(self, fields: dict[str, Any]) -> None:
        with self.archive.transaction():
            self.ledger.tenant_update(self.t.name, **fields)

    def _maybe_save_status(self, force: bool = False) -> None:
        """Queue a status write at most every ``STATUS_EVERY`` seconds, or now with ``force`` (one small
        transaction on the writer thread; nobody waits for it, so reads never stall behind it)."""
        if force or time.monotonic() - self._status_at >= STATUS_EVERY:
            fields = self._status_fields()
            fut = asyncio.ensure_future(self._db(self._write_status, fields))
            self._status_writes.add(fut)
            fut.add_done_callback(partial(self._status_written, fields))

    def _status_written(self, fields: dict[str, Any], fut: asyncio.Future[Any]) -> None:
        self._status_writes.discard(fut)
        if fut.cancelled() or fut.exception() is not None:
            # the write carried counts since the last one: hand them to the next write instead of losing them
            requests, throttled = self._saved_counts
            self._saved_counts = (requests - fields["requests"], throttled - fields["throttled"])
            if not fut.cancelled():
                log.warning("status not written tenant=%s error=%s", self.t.name, redact(fut.exception()))

    # -- main loop ----------------------------------------------------------------------------
    async def _loop(self, source: Source) -> None:
        once_until = self._t0
        first = True
        while not self.stop.is_set():
            now = self.clock.now()
            if self._gave_up:
                if not self._inflight:
                    return
            elif self._blocked_until is None or now >= self._blocked_until:
                if first or self.mode == "daemon":
                    await self._db(self._plan, self._t0 if first else now, first)
                if first:
                    await self._db(self._track_backfill, once_until)
                first = False
                await self._db(self._horizon, now, frozenset(self._busy))
                due = await self._db(self._schedule, now, frozenset(self._busy), list(self._reading.values()),
                                     len(self._inflight) < self.s.concurrency)
                live_first = self._live_waited_longest(now, due)
                if live_first:
                    self._launch_live(source, now)
                self._launch(source, now, due)
                if not live_first:
                    self._launch_live(source, now)
            if self.mode in ("once", "settle") and not self._inflight:
                if await self._db(self._finished, once_until):
                    log.info("done tenant=%s mode=%s", self.t.name, self.mode)
                    return
            self._maybe_save_status()
            await self._wait()
        log.info("stopping tenant=%s", self.t.name)
        self._stopped_early = self.mode != "daemon"  # asked to stop before the run was complete

    def _finished(self, until: datetime) -> bool:
        settled = self.mode == "settle"
        # open: not yet complete; with --settle, not yet settled; a re-read that failed is retried too
        open_windows = [w for w in self.ledger.windows(self.t.name, ("pending", "failed", "complete"))
                        if w.end <= until and w.next_read is not None
                        and (settled or w.state != "complete" or w.attempts > 0)]
        if not open_windows:
            return True
        if all(w.attempts >= ONCE_ATTEMPTS for w in open_windows):
            self.report.ok = False
            self.report.exit_code = self.report.exit_code or 4
            return True
        return False

    async def _wait(self) -> None:
        now = self.clock.now()
        # windows due now are running or wait for a slot: a finishing read wakes us, not a timer
        nxt = await self._db(self.ledger.next_due, self.t.name, now)
        delay = self.s.poll.total_seconds()
        if nxt is not None:
            delay = min(delay, max((nxt - now).total_seconds(), 0.0))
        if self._blocked_until is not None and self._blocked_until > now:
            delay = (self._blocked_until - now).total_seconds()  # nothing runs before; then its reads do
        if self.mode == "daemon":
            grid_next = (self.clock.now() - self.s.lag)
            step = self.s.window.total_seconds()
            delay = min(delay, step - (grid_next.timestamp() % step) + 0.001)
            if self.s.tail_poll > timedelta(0) and self._live_next > now:
                delay = min(delay, (self._live_next - now).total_seconds())
        delay = max(delay, 0.001)
        waiters: list[asyncio.Future[Any]] = [asyncio.ensure_future(self.clock.sleep(delay)),
                                              asyncio.ensure_future(self.stop.wait())]
        if self._inflight:
            waiters += list(self._inflight)
        done, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for w in waiters[:2]:
            if w not in done:
                w.cancel()

    def _plan(self, now: datetime, first: bool) -> None:
        bounds = self.ledger.bounds(self.t.name)
        new = plan(self.t.name, bounds, now, self.s, horizon=self.t.horizon,
                   since=self.since if first else None, partial=self.mode != "daemon")
        if new:
            with self.archive.transaction():
                self.ledger.add(new)
            log.info("planned tenant=%s windows=%d from=%s to=%s", self.t.name, len(new),
                     fmt_time(new[0].start), fmt_time(new[-1].end))
            bounds = self.ledger.bounds(self.t.name)
        self._planned_until = bounds[1] if bounds else None

    def _track_backfill(self, until: datetime) -> None:
        """Fix the span progress is measured on: what was not yet collected when the run started."""
        self._backfill = BackfillProgress(
            (w.start, w.end + TICK) for w in self.ledger.windows(self.t.name, ("pending", "failed"))
            if w.next_read is not None and w.end <= until)

    def _report_progress(self) -> None:
        if self.progress is not None and self._backfill.total:
            self.progress(self.t.name, self._backfill.done, self._backfill.total, self._backfill.rows)

    def _horizon(self, now: datetime, busy: frozenset[datetime] = frozenset()) -> None:
        """Warn before an uncollected window ages past the API horizon; give up on what already has.

        A window being read (``busy``) is left alone: its start is its ledger key, and renaming it would
        start a second read of it beside the first. Data that aged out uncollected fails the run (exit 4).
        A window still waiting for its read is trimmed again on every pass; that is reported once.
        """
        limit = self._give_up_at(now)
        warn_at = limit + self.s.horizon_warning
        for w in self.ledger.windows(self.t.name, ("pending", "failed")):
            if w.start >= warn_at or w.next_read is None or w.start in busy:
                continue
            if w.start < limit:
                self.report.ok, self.report.exit_code = False, self.report.exit_code or 4
                self.report.error = f"data of {w.label()} aged past the {self.t.horizon.days}-day horizon uncollected"
                with self.archive.transaction():
                    if w.end < limit:
                        self.ledger.mark_failed(w, error="aged past the API horizon before it was collected",
                                                retry_at=None)
                    else:
                        self.archive.conn.execute(
                            "UPDATE collector_windows SET start = ?, error = ? WHERE tenant = ? AND start = ?",
                            (fmt_time(limit), f"data before {fmt_time(limit)} aged past the API horizon",
                             w.tenant, fmt_time(w.start)))
                msg = f"window {w.label()} aged past the {self.t.horizon.days}-day horizon uncollected"
                if w.end in self._aged:
                    log.debug("horizon tenant=%s %s (again)", self.t.name, msg)
                else:
                    self._aged.add(w.end)
                    log.error("horizon tenant=%s %s", self.t.name, msg)
                    self.report.warnings.append(msg)
            elif w.start not in self._warned:
                self._warned.add(w.start)
                left = w.start - (now - self.t.horizon)
                msg = (f"window {w.label()} is not collected yet and ages past the "
                       f"{self.t.horizon.days}-day horizon in {left}")
                log.warning("horizon tenant=%s %s", self.t.name, msg)
                self.report.warnings.append(msg)

    # -- reads --------------------------------------------------------------------------------
    def _due(self, now: datetime) -> list[Window]:
        """Due windows. ``--once`` does the re-reads due when it started (and retries those that failed);
        later ones are the next run's."""
        due = self.ledger.due(self.t.name, now)
        if self.mode == "once":
            due = [w for w in due if w.state != "complete" or w.attempts > 0
                   or (w.next_read is not None and w.next_read <= self._t0)]
        return due

    def _fresh_edge(self, now: datetime) -> datetime | None:
        """Daemon: windows ending after this are the live tail (the newest two grid windows)."""
        return now - self.s.lag - 2 * self.s.window if self.mode == "daemon" else None

    def _is_bulk(self, group: list[Window], now: datetime) -> bool:
        """A backfill or catch-up read: old windows, or a merged read longer than the live tail's."""
        return (group[-1].end < now - self.s.settle_after
                or group[-1].end + TICK - group[0].start > 2 * self.s.window)

    def _groups(self, due: list[Window], now: datetime) -> list[list[Window]]:
        """Merge contiguous due windows (never-failed ones) into reads of at most ``max_window``.

        Only grid-sized windows (at most ``window``) are added to a read, so backfill windows split for
        parallel reads stay apart; the live tail's windows are never merged with older ones, so a catch-up
        read of the last day cannot hold them back (daemon).
        """
        fresh = self._fresh_edge(now)
        groups: list[list[Window]] = []
        for w in due:
            if w.start in self._busy:
                continue
            g = groups[-1] if groups else None
            if (g and w.attempts == 0 and g[-1].attempts == 0 and g[-1].end + TICK == w.start
                    and w.span <= self.s.window and w.end - g[0].start < self.s.max_window
                    and not self._at_risk(g, now)  # a read near the horizon stays short: its start ages
                    and (fresh is None or (g[-1].end >= fresh) == (w.end >= fresh))):
                g.append(w)
            else:
                groups.append([w])
        return groups

    def _give_up_at(self, now: datetime) -> datetime:
        """Windows starting before this are trimmed or given up: the API horizon, with our margin."""
        return now - self.t.horizon + HORIZON_MARGIN

    def _at_risk(self, group: list[Window], now: datetime) -> bool:
        """The read starts within the horizon warning of aging past the API's horizon."""
        return group[0].start < now - self.t.horizon + self.s.horizon_warning

    def _schedule(self, now: datetime, busy: frozenset[datetime], reading: list[tuple[float, int]],
                  room: bool) -> list[Window]:
        """The due windows, after cutting the tail of a backfill when a slot is free (writer thread)."""
        due = self._due(now)
        if self._cut_at_risk(now, busy, due):
            due = self._due(now)
        if room and self._split_tail(now, busy, reading, due):
            due = self._due(now)
        return due

    def _cut_at_risk(self, now: datetime, busy: frozenset[datetime], due: list[Window]) -> int:
        """Cut a short head off each unread window whose read may outlast the time before its start ages out.

        Pages come newest first, so a long read near the horizon would reach its oldest rows last, after
        they aged past it, and fail again on every retry. Such a window's head, sized to take about a
        quarter of the time left, is read on its own (at-risk reads go first), and the rest later. A read's
        time is estimated from the rows per second of span seen so far (one page per live-tail window before
        any read), each page taking its share of the quota among ``concurrency`` reads.
        """
        limit = self._give_up_at(now)
        page_time = self.s.quota_period.total_seconds() * self.s.concurrency / self.s.quota
        if self._seen_span > 0 and self._seen_rows > 0:
            per_second = self._seen_rows / self._seen_span / self.t.page_size
        else:
            per_second = 1 / self.s.window.total_seconds()
        cut = 0
        for w in due:
            left = (w.start - limit).total_seconds()
            if w.start in busy or w.state not in ("pending", "failed") or not self._at_risk([w], now) or left <= 0:
                continue
            seconds = max(per_second * w.span.total_seconds(), 1.0) * page_time
            if seconds <= left / 2:
                continue
            head = max(w.span * (left / 4 / seconds), AT_RISK_MIN_SPAN)
            if head >= w.span / 2:
                continue
            last = (w.start + head).replace(microsecond=0) - TICK
            with self.archive.transaction():
                self.ledger.cut(w, last)
            log.info("cut at-risk window tenant=%s window=%s head_ends=%s left=%ds", self.t.name, w.label(),
                     fmt_time(last), left)
            cut += 1
        return cut

    def _launch(self, source: Source, now: datetime, due: list[Window]) -> None:
        free = self.s.concurrency - len(self._inflight)
        if free <= 0:
            return
        # newest first, but what is about to age past the horizon before anything else
        groups = sorted(self._groups(due, now), key=lambda g: (self._at_risk(g, now), g[-1].end), reverse=True)
        bulk_running = sum(1 for task, ws in self._inflight.items()
                           if task is not self._live_task and self._is_bulk(ws, now))
        for g in groups:
            if free <= 0:
                break
            is_bulk = self._is_bulk(g, now)
            if is_bulk and bulk_running >= self._backfill_slots():
                continue  # keep a slot for the live tail and short re-reads
            task = asyncio.create_task(self._read_group(source, g))
            self._inflight[task] = g
            self._busy.update(w.start for w in g)
            task.add_done_callback(self._done)
            free -= 1
            bulk_running += is_bulk

    def _launch_live(self, source: Source, now: datetime) -> None:
        """Daemon: every ``tail_poll``, read the open live-tail window (after the last planned window, up to
        ``now - lag``) provisionally: its rows are stored, the ledger is not touched, and the window is read
        in full once it closes on the grid."""
        if (self.mode != "daemon" or self.s.tail_poll <= timedelta(0) or now < self._live_next
                or self._planned_until is None or len(self._inflight) >= self.s.concurrency
                or self._live_task is not None):
            return
        start = self._planned_until + TICK
        end = (now - self.s.lag).replace(microsecond=0) - TICK
        if end - start < timedelta(seconds=1):
            return
        self._live_next = now + self.s.tail_poll
        w = Window(self.t.name, start, end, "provisional")
        task = asyncio.create_task(self._read_group(source, [w], provisional=True))
        self._inflight[task] = [w]
        self._live_task = task
        self._busy.add(start)
        task.add_done_callback(self._done)

    def _live_waited_longest(self, now: datetime, due: list[Window]) -> bool:
        """Whether the live tail has been due longer than every waiting short read (a fresh window or a
        re-read): the two share the slot the daemon keeps, so the one due first goes first and neither
        waits for the other more than once in a row when the quota makes every read slow."""
        waiting = [w.next_read for w in due if w.next_read is not None and w.start not in self._busy
                   and not self._is_bulk([w], now)]
        return not waiting or self._live_next <= min(waiting)

    def _backfill_slots(self) -> int:
        """Slots backfill and catch-up reads may use: the daemon keeps one for the live tail."""
        keep = 1 if self.mode == "daemon" and self.s.concurrency > 1 else 0
        return self.s.concurrency - keep

    def _split_tail(self, now: datetime, busy: frozenset[datetime], reading: list[tuple[float, int]],
                    due: list[Window] | None = None) -> int:
        """Near the end of a backfill, halve the largest unread old windows so the last reads end together.

        A window's pages are sequential (each follows the previous ``nextLink``), so a backfill whose last
        window runs alone reads one page per 2-4 s while the quota sits unused. While the largest waiting
        window holds more than one slot's share of the pages left (in running and waiting reads), it is
        halved. Pages are estimated from the rows per second of window span read so far (``reading``: span
        and rows so far of each running read); only never-read windows older than the settle horizon are
        cut, and only into halves of ``SPLIT_MIN_PAGES`` pages or more (each piece costs a partial page).
        """
        if self._seen_span <= 0 or self._seen_rows <= 0:
            return
        per_second = self._seen_rows / self._seen_span / self.t.page_size  # pages per second of window span
        groups = self._groups([w for w in self._due(now) if w.start not in busy], now)
        if not groups:
            return
        left = sum(max(per_second * span - rows / self.t.page_size, 1.0) for span, rows in reading)
        left += sum(per_second * (g[-1].end - g[0].start).total_seconds() for g in groups)
        share = left / self._backfill_slots()
        old_edge = now - self.s.settle_after

        def pages(w: Window) -> float:
            return per_second * w.span.total_seconds()

        def splittable(w: Window) -> bool:
            return (w.state == "pending" and w.attempts == 0 and w.end < old_edge and w.span / 2 > self.s.window
                    and pages(w) >= 2 * SPLIT_MIN_PAGES)

        singles = [g[0] for g in groups if len(g) == 1 and splittable(g[0])]
        cut = 0
        while singles:
            w = max(singles, key=lambda x: x.span)
            if pages(w) <= share:
                break
            singles.remove(w)
            with self.archive.transaction():
                halves = self.ledger.split(w)
            singles += [h for h in halves if splittable(h)]
            cut += 1
        if cut:
            log.info("split backfill tenant=%s windows=%d pages_left=%.0f share=%.0f", self.t.name, cut, left,
                     share)
        return cut

    def _done(self, task: asyncio.Task[None]) -> None:
        g = self._inflight.pop(task, [])
        if task is self._live_task:
            self._live_task = None
        if g:
            self._reading.pop(g[0].start, None)
        for w in g:
            self._busy.discard(w.start)

    async def _read_group(self, source: Source, group: list[Window], *, provisional: bool = False) -> None:
        """Read ``group`` (contiguous windows) page by page, committing each page; then mark it read.

        ``provisional``: the open live-tail window; its rows are stored but no ledger window is marked.
        """
        start, end = group[0].start, group[-1].end
        label = f"{fmt_time(start)}..{fmt_time(end)}"
        counts = [0] * len(group)
        new = updated = 0
        tickets: list[Any] = []
        succeeded = False
        span = (end - start).total_seconds()
        read = (start, end + TICK)
        oldest: datetime | None = None
        self._reading[start] = (span, 0)
        try:
            async for page in source.pages(start, end):
                if page.first:
                    counts, oldest = [0] * len(group), None
                if page.rows:  # rows come newest first: the last one shows how far the read has come
                    t = _received(page.rows[-1])
                    oldest = t if oldest is None or (t is not None and t < oldest) else oldest
                if len(group) == 1:
                    counts[0] += len(page.rows)
                else:
                    for row in page.rows:
                        counts[_slot(group, _received(row))] += 1
                self._reading[start] = (span, sum(counts))
                n_rows = len(page.rows)
                if self.shipper is not None:
                    res, ticket = await self.shipper.commit(lambda p=page: self._commit_page(p), self._db)
                    if ticket is not None:
                        tickets.append(ticket)
                else:
                    res, _, _ = await self._db(self._commit_page, page)
                new += res.new
                updated += res.updated
                log.info("page tenant=%s window=%s offset=%d rows=%d new=%d updated=%d%s", self.t.name, label,
                         page.offset, n_rows, res.new, res.updated, " provisional=1" if provisional else "")
                del page
                if not provisional:
                    self._backfill.paged(read, oldest)
                    self._report_progress()
                self._maybe_save_status()
                if self.stop.is_set():
                    raise Stopped()
            for ticket in tickets:
                await self._wait_acked(ticket)
            await self._wait_orphans()
            succeeded = True
            if self.shipper is not None:
                await self.shipper.checkpoint()
            if provisional:
                self._live_until = end
                log.info("live tail tenant=%s until=%s rows=%d new=%d updated=%d (provisional)", self.t.name,
                         fmt_time(end), sum(counts), new, updated)
            else:
                now = self.clock.now()
                await self._db(self._mark_read, group, counts, now, new, updated)
                self.report.windows_read += len(group)
                self.report.rows += sum(counts)
                self._seen_rows += sum(counts)
                self._seen_span += span
                self.report.new += new
                self.report.updated += updated
                self._backfill.completed(read, [(w.start, w.end + TICK) for w in group], sum(counts))
            self._tenant_ok()
        except Stopped:
            log.info("stopped mid-window tenant=%s window=%s (committed pages kept; window stays due)",
                     self.t.name, label)
        except asyncio.CancelledError:
            raise
        except AuthError as exc:
            await self._tenant_failed(exc)
        except ExotraceError as exc:
            if provisional:
                log.warning("live tail read failed tenant=%s window=%s error=%s (read again later)", self.t.name,
                            label, redact(exc)[:300])
            elif isinstance(exc, ContinuationFailed):
                await self._db(self._continuation_failed, group, str(exc))
            else:
                await self._db(self._window_failed, group, exc)
        except Exception as exc:  # noqa: BLE001 - a bug must not stop the other tenants
            log.exception("unexpected error tenant=%s window=%s", self.t.name, label)
            if not provisional:
                await self._db(self._window_failed, group, TransientError(f"internal error: {exc!r}"))
        finally:
            if not succeeded:
                self._orphan_tickets.extend(tickets)
            self._backfill.ended(read)
            if not provisional:
                self._report_progress()

    async def _wait_orphans(self) -> None:
        """Wait until the sinks acknowledged the pages of earlier failed reads (see ``_orphan_tickets``)."""
        while self._orphan_tickets:
            ticket = self._orphan_tickets[0]
            try:
                await self._wait_acked(ticket)
            except TransientError:  # lost by the sinks: the next start replays from the acknowledged seq
                log.warning("sinks lost the rows of a failed read tenant=%s (replayed at the next start)",
                            self.t.name)
            if self._orphan_tickets and self._orphan_tickets[0] is ticket:
                self._orphan_tickets.pop(0)

    async def _wait_acked(self, ticket: Any) -> None:
        assert self.shipper is not None
        while not await unless_stopped(self.shipper.pipeline.wait_acked(ticket, 30.0), self.stop):
            if self.shipper.pipeline.abandoned(ticket):
                raise TransientError("the sinks lost a batch; the window will be read again")

    def _commit_page(self, page: Page) -> tuple[Any, list[Document], tuple[int, int]]:
        observed = page.fetched_at.astimezone(UTC).isoformat().replace("+00:00", "Z")
        origin = f"{self.t.api}:{self.t.name}"
        rows = page.rows
        res = UpsertResult()
        changed: list[Document] = []
        with self.archive.transaction():
            # normalize and upsert in chunks: a 5000-row page never holds 5000 documents at once
            for lo in range(0, len(rows), CHUNK):
                docs = [self.normalizer.normalize(RawRecord(
                    fields=row, original=orjson.dumps(row).decode(), origin=origin, line=page.offset + lo + i + 1,
                    shape=self.t.api, tenant=self.t.name, observed_at=observed))
                    for i, row in enumerate(rows[lo:lo + CHUNK])]
                part = self.archive.upsert(docs, source=origin)
                if self.shipper is not None:
                    changed.extend(part.changed)
                part.changed = []
                res += part
                del docs
            self.ledger.tenant_update(self.t.name, requests=0, rows=len(rows))
        rows.clear()
        return res, changed, res.seqs  # one transaction: the chunks' changes are contiguous

    def _mark_read(self, group: list[Window], counts: list[int], now: datetime, new: int, updated: int) -> None:
        with self.archive.transaction():
            for w, n in zip(group, counts, strict=True):
                self.ledger.mark_read(w, now=now, rows=n, rereads=self.s.rereads,
                                      new=new if w is group[0] else 0, updated=updated if w is group[0] else 0)
            self.ledger.tenant_update(self.t.name, last_success=fmt_time(now), last_error=None, retry_at=None)

    def _retry_at(self, attempts: int, exc: ExotraceError) -> datetime:
        delay = Backoff(base=30.0, cap=3600.0).next() * (2 ** min(attempts, 7))
        delay = min(delay, 3600.0)
        ra = getattr(exc, "retry_after", None)
        return self.clock.now() + timedelta(seconds=max(delay, ra or 0.0))

    def _window_failed(self, group: list[Window], exc: ExotraceError) -> None:
        msg = redact(exc)
        aged = isinstance(exc, PermanentError) and ("90 days" in msg or "10 days" in msg) and "older" in msg
        now = self.clock.now()
        # the API refused the read's start as too old: only windows wholly past the horizon are lost; the
        # others of a merged read are due again at once (the horizon check trims the oldest one first)
        past = now - self.t.horizon
        with self.archive.transaction():
            for w in group:
                if aged:
                    retry = None if w.end < past else now
                else:
                    retry = self._retry_at(w.attempts, exc)
                self.ledger.mark_failed(w, error=msg, retry_at=retry)
            self.ledger.tenant_update(self.t.name, last_error=msg[:500],
                                      last_error_at=fmt_time(self.clock.now()))
        log.warning("window failed tenant=%s window=%s..%s error=%s", self.t.name, fmt_time(group[0].start),
                    fmt_time(group[-1].end), msg[:300])
        self.report.error = msg

    def _continuation_failed(self, group: list[Window], msg: str) -> None:
        with self.archive.transaction():
            if len(group) == 1 and group[0].span > timedelta(minutes=1):
                halves = self.ledger.split(group[0])
                for h in halves:
                    h.attempts = 1
                self.archive.conn.executemany(
                    "UPDATE collector_windows SET attempts = 1, error = ? WHERE tenant = ? AND start = ?",
                    [(redact(msg)[:500], h.tenant, fmt_time(h.start)) for h in halves])
                log.warning("split window tenant=%s window=%s reason=%s", self.t.name, group[0].label(),
                            msg[:200])
                return
            for w in group:
                self.ledger.mark_failed(w, error=redact(msg), retry_at=self._retry_at(w.attempts,
                                                                                      TransientError(msg)))
        log.warning("continuation failed tenant=%s window=%s..%s windows=%d reason=%s (each window is read "
                    "on its own)", self.t.name, fmt_time(group[0].start), fmt_time(group[-1].end), len(group),
                    redact(msg)[:200])

    async def _tenant_failed(self, exc: AuthError) -> None:
        """Credentials or permission broken: hold the tenant's reads and retry with backoff.

        Reads failing together count as one failure episode (the backoff grows once). ``--once`` gives up
        after ``ONCE_AUTH_ATTEMPTS`` episodes (exit 3). The cached token is dropped: a permission granted
        meanwhile only shows in a new token's roles.
        """
        msg = redact(exc)
        now = self.clock.now()
        self.report.ok, self.report.exit_code = False, 3
        self.report.error = msg
        if self._gave_up or (self._blocked_until is not None and now < self._blocked_until):
            return
        self._auth_failures += 1
        self.caller.tokens.invalidate()
        wait = None
        if self.mode != "daemon" and self._auth_failures >= ONCE_AUTH_ATTEMPTS:
            self._gave_up = True
            self.report.error = f"{msg} (gave up after {self._auth_failures} attempts)"
        else:
            wait = self._tenant_backoff.next()
            self._blocked_until = now + timedelta(seconds=wait)
        fields = self._status_fields()
        fields.update(last_error=msg[:1000], last_error_at=fmt_time(now))
        await self._db(self._write_status, fields)  # in the ledger (for `status`) before it is logged
        if wait is None:
            log.error("tenant unavailable tenant=%s attempt=%d error=%s; giving up for this run", self.t.name,
                      self._auth_failures, msg)
        else:
            log.error("tenant unavailable tenant=%s attempt=%d error=%s retry_in=%.0fs", self.t.name,
                      self._auth_failures, msg, wait)

    def _tenant_ok(self) -> None:
        if self._auth_failures:
            log.info("tenant recovered tenant=%s after=%d failures", self.t.name, self._auth_failures)
        self._auth_failures = 0
        self._tenant_backoff.reset()
        self._blocked_until = None
        if self.report.exit_code == 3:
            self.report.ok, self.report.error, self.report.exit_code = True, None, 0


def _slot(group: list[Window], t: datetime | None) -> int:
    if t is None or len(group) == 1:
        return 0
    for i, w in enumerate(group):
        if t <= w.end:
            return i
    return len(group) - 1
