"""Unit tests: skiptoken repair, quota governor, window planning, horizon warnings, Retry-After."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from types import SimpleNamespace

from exotrace.archive import Archive
from exotrace.collect import open_archive
from exotrace.collect.plan import plan
from exotrace.collect.quota import QuotaGovernor
from exotrace.collect.runner import TenantRunner
from exotrace.config import CollectorSettings, parse_config
from exotrace.errors import PermanentError
from exotrace.net import parse_retry_after
from exotrace.sources.base import ApiCaller, Counters
from exotrace.sources.graph import repair_next_link, repair_skiptoken
from exotrace.state.ledger import TICK, Ledger, Window


class ManualClock:
    def __init__(self, start: datetime) -> None:
        self.t = start

    def now(self) -> datetime:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += timedelta(seconds=max(0.0, seconds))
        await asyncio.sleep(0)

    def sleep_sync(self, seconds: float) -> None:
        self.t += timedelta(seconds=seconds)


NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def _token(obj: dict[str, str], pad: bool) -> str:
    text = base64.b64encode(json.dumps(obj).encode()).decode()
    return text if pad else text.rstrip("=")


def test_repair_double_encoded_skiptoken() -> None:
    good = {"StartDate": "2026-03-26T15:43:20.2718704Z", "EndDate": "2026-03-27T00:00:00Z",
            "StartingRecipientAddress": "a@contoso.com", "ResultSize": "5000"}
    poisoned = {k: json.dumps(v) for k, v in good.items()}
    for pad in (True, False):
        fixed = repair_skiptoken(_token(poisoned, pad))
        assert fixed is not None
        body = fixed + "=" * (-len(fixed) % 4)
        assert json.loads(base64.b64decode(body)) == good
        assert fixed.endswith("=") == (pad and _token(poisoned, True).endswith("="))
        assert repair_skiptoken(_token(good, pad)) is None  # healthy tokens are followed as given
    url = ("https://graph.microsoft.com/v1.0/admin/exchange/tracing/messageTraces?$filter=x&$skiptoken="
           + _token(poisoned, True).replace("=", "%3D") + "&$top=5000")
    repaired = repair_next_link(url)
    assert repaired is not None and repaired.endswith("&$top=5000") and "$filter=x" in repaired
    assert repair_next_link(url.split("$skiptoken")[0]) is None


def test_quota_governor_never_exceeds_limit() -> None:
    clock = ManualClock(NOW)
    gov = QuotaGovernor(3, timedelta(seconds=300), clock)  # type: ignore[arg-type]
    stamps: list[datetime] = []

    async def go() -> None:
        for _ in range(10):
            await gov.acquire()
            stamps.append(clock.now())

    asyncio.run(go())
    for s in stamps:
        assert sum(1 for x in stamps if s - timedelta(seconds=300) < x <= s) <= 3
    assert stamps[-1] - stamps[0] >= timedelta(seconds=900)
    gov.pause(120)
    before = clock.now()
    asyncio.run(gov.acquire())
    assert clock.now() - before >= timedelta(seconds=120)


def test_plan_backfill_and_tail() -> None:
    s = CollectorSettings()
    ws = plan("t", None, NOW, s, horizon=timedelta(days=90), since=timedelta(days=30), partial=True)
    assert ws[0].start == NOW - timedelta(days=30)
    assert all(b.start == a.end + TICK for a, b in zip(ws, ws[1:], strict=False))
    assert ws[-1].end == NOW - s.lag - TICK
    assert max(w.span for w in ws) <= timedelta(days=10)
    young = [w for w in ws if w.end > NOW - s.settle_after]
    assert all(w.span <= s.window for w in young)
    # a later daemon pass only adds whole grid windows after the last one; --since extends backwards
    more = plan("t", (ws[0].start, ws[-1].end), NOW + timedelta(minutes=40), s, horizon=timedelta(days=90),
                since=timedelta(days=45), partial=False)
    back = [w for w in more if w.end < ws[0].start]
    assert back[0].start == NOW + timedelta(minutes=40) - timedelta(days=45)
    assert back[-1].end + TICK == ws[0].start
    tail = [w for w in more if w.start > ws[-1].end]
    assert tail[0].start == ws[-1].end + TICK and all((w.end + TICK).minute % 15 == 0 for w in tail)


def test_horizon_warning_and_expiry(tmp_path: Path) -> None:
    runner, ledger, arch = _runner(tmp_path)
    try:
        near = Window("t", NOW - timedelta(days=89), NOW - timedelta(days=88) - TICK, next_read=NOW)
        gone = Window("t", NOW - timedelta(days=95), NOW - timedelta(days=91) - TICK, next_read=NOW)
        with arch.transaction():
            ledger.add([near, gone])
        runner._horizon(NOW)
        states = {w.start: (w.state, w.next_read) for w in ledger.windows("t")}
        assert states[gone.start] == ("failed", None)
        assert states[near.start][0] == "pending"
        assert any("ages past the 90-day horizon" in w for w in runner.report.warnings)
        assert any("aged past" in w for w in runner.report.warnings)
    finally:
        arch.close()


def test_a_window_trimmed_at_the_horizon_pass_after_pass_is_reported_once(tmp_path: Path, caplog) -> None:
    # A window waiting for its read (quota spent, say) is trimmed again on every pass as the horizon moves;
    # the run fails (exit 4) and says so once, not once per pass.
    runner, ledger, arch = _runner(tmp_path, mode="daemon")
    try:
        aging = Window("t", NOW - timedelta(days=90), NOW - timedelta(days=89) - TICK, next_read=NOW)
        with arch.transaction():
            ledger.add([aging])
        starts = []
        with caplog.at_level("DEBUG", logger="exotrace"):
            for minutes in range(0, 50, 10):
                runner._horizon(NOW + timedelta(minutes=minutes))
                (w,) = ledger.windows("t")
                starts.append(w.start)
        limit = NOW - timedelta(days=90) + timedelta(minutes=10)
        assert starts == [limit + timedelta(minutes=m) for m in range(0, 50, 10)]  # trimmed on every pass
        assert runner.report.exit_code == 4 and not runner.report.ok
        assert len([m for m in runner.report.warnings if "aged past" in m]) == 1
        errors = [r for r in caplog.records if r.levelname == "ERROR" and "aged past" in r.getMessage()]
        assert len(errors) == 1
    finally:
        arch.close()


def test_retry_after_forms() -> None:
    assert parse_retry_after("30") == 30.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    when = datetime(2026, 11, 22, 12, 0, 30, tzinfo=UTC)
    assert parse_retry_after("Sun, 22 Nov 2026 12:00:30 GMT", when - timedelta(seconds=10)) == 10.0


def test_rws_envelopes() -> None:
    from exotrace.sources.rws import _rows_and_next

    light = {"odata.metadata": "x", "value": [{"MessageTraceId": "a", "RecipientAddress": "b"}],
             "odata.nextLink": "../../reportingwebservice/reporting.svc/MessageTrace?$skiptoken=2000"}
    rows, nxt = _rows_and_next(light)
    assert rows == light["value"] and nxt and nxt.endswith("$skiptoken=2000")
    verbose = {"d": {"results": [{"__metadata": {"id": "x"}, "MessageTraceId": "a"}], "__next": "https://h/n"}}
    rows, nxt = _rows_and_next(verbose)
    assert rows == [{"MessageTraceId": "a"}] and nxt == "https://h/n"
    assert _rows_and_next({"value": []}) == ([], None)


def test_quota_survives_restart() -> None:
    clock = ManualClock(NOW)
    gov = QuotaGovernor(5, timedelta(seconds=300), clock)  # type: ignore[arg-type]

    async def take(g: QuotaGovernor, n: int) -> None:
        for _ in range(n):
            await g.acquire()

    asyncio.run(take(gov, 5))
    saved = gov.export()
    clock.t += timedelta(seconds=10)
    again = QuotaGovernor(5, timedelta(seconds=300), clock)  # type: ignore[arg-type]
    again.load([*saved, "garbage"])
    assert again.used() == 5
    start = clock.now()
    asyncio.run(take(again, 1))
    assert clock.now() - start >= timedelta(seconds=290)


def _runner(tmp_path: Path, mode: str = "once") -> tuple[TenantRunner, Ledger, Archive]:
    os.environ["EXOTRACE_UNIT_SECRET"] = "unit-secret-value"
    cfg = parse_config({"tenant": [{"name": "t", "tenant_id": "x", "client_id": "y",
                                    "client_secret": "env:EXOTRACE_UNIT_SECRET"}]}, base=tmp_path)
    arch = open_archive(tmp_path / "a.db")
    runner = TenantRunner(cfg.tenants[0], arch, ManualClock(NOW), mode=mode, since=None,  # type: ignore[arg-type]
                          stop=asyncio.Event())
    return runner, Ledger(arch.conn), arch


def test_tail_split_spreads_the_last_backfill_window(tmp_path: Path) -> None:
    """The last unread 10-day window is halved while it holds more than a slot's share of the pages left."""
    runner, ledger, arch = _runner(tmp_path)
    try:
        last = Window("t", NOW - timedelta(days=80), NOW - timedelta(days=70) - TICK, next_read=NOW)
        with arch.transaction():
            ledger.add([last])
        day = 86400.0
        runner._split_tail(NOW, frozenset(), [])  # density unknown yet: nothing is cut
        assert len(ledger.windows("t")) == 1
        runner._seen_rows, runner._seen_span = 10 * 20_000, 10 * day  # 4 pages a day -> 40 pages
        running = [(10 * day, 35 * 5000)] * 3  # three reads with ~5 pages left each
        runner._split_tail(NOW, frozenset(), running)
        pieces = ledger.windows("t")
        assert len(pieces) == 4  # 55 pages left over 4 slots: 40 -> 20 + 20 -> 4 x 10
        assert pieces[0].start == last.start and pieces[-1].end == last.end
        assert all(a.end + TICK == b.start for a, b in zip(pieces, pieces[1:], strict=False))
        assert all(w.state == "pending" and w.attempts == 0 for w in pieces)
        # pieces are read apart (never merged back into one read), newest first
        assert len(runner._groups(runner._due(NOW), NOW)) == 4
        runner._split_tail(NOW, frozenset(), running)  # 10-page pieces: halves would be under 5 pages
        assert len(ledger.windows("t")) == 4
    finally:
        arch.close()


def test_tail_split_leaves_early_and_young_windows(tmp_path: Path) -> None:
    runner, ledger, arch = _runner(tmp_path)
    try:
        old = [Window("t", NOW - timedelta(days=80 - 10 * i), NOW - timedelta(days=70 - 10 * i) - TICK,
                      next_read=NOW) for i in range(5)]
        young = Window("t", NOW - timedelta(hours=2), NOW - timedelta(hours=1) - TICK, next_read=NOW)
        with arch.transaction():
            ledger.add([*old, young])
        runner._seen_rows, runner._seen_span = 10 * 20_000, 10 * 86400.0
        runner._split_tail(NOW, frozenset(), [(10 * 86400.0, 0)] * 3)  # plenty of work for every slot
        assert len(ledger.windows("t")) == 6
    finally:
        arch.close()


def test_once_leaves_rereads_that_fall_due_during_the_run(tmp_path: Path) -> None:
    runner, ledger, arch = _runner(tmp_path)
    try:
        before = Window("t", NOW - timedelta(hours=3), NOW - timedelta(hours=2) - TICK, "complete",
                        next_read=NOW - timedelta(minutes=1))
        during = Window("t", NOW - timedelta(hours=2), NOW - timedelta(hours=1) - TICK, "complete",
                        next_read=NOW + timedelta(minutes=5))
        with arch.transaction():
            ledger.add([before, during])
        later = NOW + timedelta(minutes=10)
        assert [w.start for w in runner._due(later)] == [before.start]
    finally:
        arch.close()
    (tmp_path / "d").mkdir()
    daemon, dledger, darch = _runner(tmp_path / "d", mode="daemon")
    try:
        with darch.transaction():
            dledger.add([before, during])
        assert len(daemon._due(later)) == 2  # the daemon re-reads whenever a re-read is due
    finally:
        darch.close()


def test_rws_paging_limit_is_told_from_a_fault_by_the_offset() -> None:
    """RWS answers 500 UnknownError from $skiptoken=999999 on (a window too large: split it); a 500 at a
    small offset is a server fault (retried)."""
    from exotrace.sources.base import RWS_OFFSET_LIMIT, _rws_offset

    base = "https://h/ecp/reportingwebservice/reporting.svc/MessageTrace?$filter=x&$top=2000"
    assert _rws_offset(base) == -1
    assert _rws_offset(base + "&$skiptoken=1500") == 1500 < RWS_OFFSET_LIMIT
    assert _rws_offset(base.replace("$", "%24") + "&%24skiptoken=999999") == 999999 >= RWS_OFFSET_LIMIT
    assert _rws_offset("https://graph/v1.0/x?$skiptoken=eyJTdGFydERhdGUiOi") == -1  # Graph's base64 tokens


def test_a_failed_status_write_hands_its_counts_to_the_next(tmp_path: Path) -> None:
    """Status counts are written as increments: one that fails must not lose the requests it carried."""
    runner, ledger, arch = _runner(tmp_path)
    try:
        runner.caller = SimpleNamespace(counters=Counters())  # type: ignore[assignment]
        writes = iter([RuntimeError("database is locked"), None])
        real = runner._write_status

        def flaky(fields: dict) -> None:
            failure = next(writes)
            if failure is not None:
                raise failure
            real(fields)

        runner._write_status = flaky  # type: ignore[method-assign]

        async def main() -> None:
            runner.caller.counters.requests, runner.caller.counters.throttled = 7, 2
            runner._status_at = 0.0
            runner._maybe_save_status()  # fails
            await asyncio.gather(*runner._status_writes, return_exceptions=True)
            await asyncio.sleep(0)
            runner.caller.counters.requests = 10
            runner._status_at = 0.0
            runner._maybe_save_status()  # carries the 7 + 2 as well as the 3 new requests
            await asyncio.gather(*runner._status_writes, return_exceptions=True)

        asyncio.run(main())
        info = ledger.tenant_info("t")
        assert (info["requests"], info["throttled"]) == (10, 2)
    finally:
        arch.close()


def test_each_counted_request_is_saved_for_a_restart(tmp_path: Path) -> None:
    """The quota's request times reach the ledger as requests are sent, not only with the periodic
    status write: a collector killed right after a burst cannot spend the same quota again on restart."""
    runner, ledger, arch = _runner(tmp_path)
    try:
        runner.executor = ThreadPoolExecutor(max_workers=1)  # the collector's one writer thread: writes in order
        caller = ApiCaller(runner.t, None, None, runner.quota, runner.clock)  # type: ignore[arg-type]
        runner.caller = caller
        caller.on_request = partial(runner._maybe_save_status, True)

        async def burst() -> None:
            for _ in range(3):  # what get_json does for each request, up to sending it
                await runner.quota.acquire()
                caller.counters.requests += 1
                caller.on_request()
            await asyncio.gather(*runner._status_writes)

        runner._status_at = time.monotonic()  # the periodic write is not due
        asyncio.run(burst())
        info = ledger.tenant_info("t")
        assert len(json.loads(info["quota_json"])) == 3 and info["requests"] == 3
        restarted = QuotaGovernor(runner.s.quota, runner.s.quota_period, runner.clock)
        restarted.load(json.loads(info["quota_json"]))
        assert restarted.used() == 3
    finally:
        if runner.executor is not None:
            runner.executor.shutdown(wait=True)
        arch.close()


def test_a_start_refused_as_too_old_gives_up_only_what_is_past_the_horizon(tmp_path: Path) -> None:
    runner, ledger, arch = _runner(tmp_path)
    try:
        past = NOW - runner.t.horizon
        old = Window("t", past - timedelta(days=1), past - timedelta(hours=1) - TICK, next_read=NOW)
        young = Window("t", past - timedelta(hours=1), NOW - timedelta(days=1) - TICK, next_read=NOW)
        with arch.transaction():
            ledger.add([old, young])
        runner._window_failed([old, young], PermanentError("400: StartDate is older than 90 days"))
        after = {w.start: w.next_read for w in ledger.windows("t")}
        assert after[old.start] is None  # wholly past the horizon: lost
        assert after[young.start] == NOW  # straddles it: due again at once, the horizon check trims it
    finally:
        arch.close()


def test_windows_near_the_horizon_are_read_alone_and_first(tmp_path: Path) -> None:
    runner, ledger, arch = _runner(tmp_path)
    try:
        grid = timedelta(minutes=15)
        near = NOW - runner.t.horizon + timedelta(hours=1)  # inside horizon_warning (2 days)
        at_risk = [Window("t", near + i * grid, near + (i + 1) * grid - TICK, next_read=NOW) for i in range(3)]
        recent = [Window("t", NOW - 4 * grid + i * grid, NOW - 3 * grid + i * grid - TICK, next_read=NOW)
                  for i in range(3)]
        groups = runner._groups([*at_risk, *recent], NOW)
        assert [len(g) for g in groups] == [1, 1, 1, 3]  # the at-risk ones unmerged, the recent ones merged
        assert runner._at_risk(groups[0], NOW) and not runner._at_risk(groups[-1], NOW)
    finally:
        arch.close()


def test_a_long_unread_window_near_the_horizon_has_a_short_head_cut_off(tmp_path: Path) -> None:
    # Pages come newest first: a 9-day read starting 1 h before the horizon would reach its oldest rows after
    # they aged out. Its head, estimated at a quarter of the time left, is cut off to be read on its own.
    runner, ledger, arch = _runner(tmp_path)
    try:
        start = NOW - runner.t.horizon + timedelta(hours=1)
        long = Window("t", start, start + timedelta(days=9) - TICK, next_read=NOW)
        short = Window("t", start + timedelta(days=9), start + timedelta(days=9, minutes=15) - TICK,
                       next_read=NOW, state="failed", attempts=1)
        with arch.transaction():
            ledger.add([long, short])
        runner._seen_rows, runner._seen_span = 500_000, 86400.0  # 500k rows a day: 100 pages a day
        assert runner._cut_at_risk(NOW, frozenset({long.start}), ledger.due("t", NOW)) == 0  # being read
        assert runner._cut_at_risk(NOW, frozenset(), ledger.due("t", NOW)) == 1
        head, rest, untouched = ledger.windows("t")
        assert (head.start, rest.end) == (long.start, long.end) and rest.start == head.end + TICK
        left = (start - (NOW - runner.t.horizon + timedelta(minutes=10))).total_seconds()  # 50 min
        page_time = runner.s.quota_period.total_seconds() * runner.s.concurrency / runner.s.quota
        head_pages = 100 * head.span.total_seconds() / 86400
        assert timedelta(minutes=1) <= head.span and head_pages * page_time <= left / 4 + page_time
        assert head.next_read == NOW and rest.next_read == NOW and head.state == rest.state == "pending"
        assert (untouched.start, untouched.end, untouched.state) == (short.start, short.end, "failed")
        # the head is now short enough, the rest starts later; nothing more is cut in this pass
        assert runner._cut_at_risk(NOW, frozenset(), ledger.due("t", NOW)) == 0
        groups = runner._groups(ledger.due("t", NOW), NOW)
        assert runner._at_risk(groups[0], NOW) and groups[0] == [head]
        # half an hour later the rest is as near as the whole was; for a tenant whose 9 days fit in a few
        # pages it stays whole, for the busy one its head is cut off in turn
        later = NOW + timedelta(minutes=30) + (rest.start - start)
        runner._seen_rows = 10_000
        assert runner._cut_at_risk(later, frozenset(), ledger.due("t", later)) == 0
        runner._seen_rows = 500_000
        assert runner._cut_at_risk(later, frozenset(), ledger.due("t", later)) == 1
    finally:
        arch.close()


def _ticks(bound: str) -> int:
    """A query bound as 100 ns ticks since the epoch (Microsoft's resolution of Received)."""
    whole, _, frac = bound.rstrip("Z").partition(".")
    seconds = int(datetime.fromisoformat(whole).replace(tzinfo=UTC).timestamp())
    return seconds * 10_000_000 + int(frac.ljust(7, "0")[:7])


def test_window_bounds_leave_no_100ns_tick_between_windows() -> None:
    # Received has 100 ns ticks; windows meet one microsecond apart. A row at ...59.9999995 must fall in a
    # window: each end bound reaches the tick just before the next window's start.
    from exotrace.sources.base import api_time

    s = CollectorSettings()
    ws = plan("t", None, NOW, s, horizon=timedelta(days=90), since=timedelta(days=12), partial=True)
    assert len(ws) > 10
    for a, b in zip(ws, ws[1:], strict=False):
        assert _ticks(api_time(a.end, end=True)) + 1 == _ticks(api_time(b.start)), (a.label(), b.label())
        assert _ticks(api_time(a.start)) <= _ticks(api_time(a.end, end=True))
    assert api_time(datetime(2026, 5, 1, 12, 14, 59, 999999, tzinfo=UTC), end=True) == "2026-05-01T12:14:59.9999999Z"
    assert api_time(datetime(2026, 5, 1, 12, 15, tzinfo=UTC)) == "2026-05-01T12:15:00Z"


def test_a_blocked_tenant_is_tried_again_when_its_backoff_ends_not_at_the_next_poll(tmp_path: Path) -> None:
    # --once backs off 15 s then 30 s after an auth failure; the 1-minute poll must not stretch that
    runner, ledger, arch = _runner(tmp_path)
    try:
        with arch.transaction():
            ledger.add([Window("t", NOW - timedelta(hours=2), NOW - timedelta(hours=1) - TICK, next_read=NOW,
                               state="complete"),
                        Window("t", NOW - timedelta(hours=1), NOW - TICK, next_read=NOW + timedelta(hours=3))])
        runner._blocked_until = NOW + timedelta(seconds=12)
        asyncio.run(runner._wait())
        assert runner.clock.now() == NOW + timedelta(seconds=12)
    finally:
        arch.close()


def test_live_tail_and_short_rereads_take_turns_in_the_kept_slot(tmp_path: Path) -> None:
    """The daemon's kept slot goes to whichever waited longer: the live tail or the oldest due short read.
    (It went to short reads first, so under a tight quota a queue of re-reads held the live tail back.)"""
    runner, ledger, arch = _runner(tmp_path, mode="daemon")
    try:
        reread = Window("t", NOW - timedelta(hours=2), NOW - timedelta(hours=2) + timedelta(minutes=15) - TICK,
                        "complete", next_read=NOW - timedelta(minutes=3))
        old = Window("t", NOW - timedelta(days=20), NOW - timedelta(days=10) - TICK, next_read=NOW - timedelta(days=1))
        with arch.transaction():
            ledger.add([old, reread])
        due = runner._due(NOW)
        runner._live_next = NOW - timedelta(minutes=5)  # due before the re-read: it goes first
        assert runner._live_waited_longest(NOW, due)
        runner._live_next = NOW - timedelta(minutes=1)  # due after it: the re-read goes first
        assert not runner._live_waited_longest(NOW, due)
        runner._busy.add(reread.start)  # the re-read runs: nothing short waits, so the live tail goes
        assert runner._live_waited_longest(NOW, due)
        # a bulk backfill window never counts (it has its own slots), however long it has waited
        assert runner._live_waited_longest(NOW, [old])
    finally:
        arch.close()
