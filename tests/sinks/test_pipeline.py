"""The delivery machinery with an in-process scripted sink: tickets, spool, restart, dead letters, metrics."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from sink_helpers import FAST, ScriptedSink, eventually, make_docs, numbers

from exotrace.errors import ConfigError, SinkError, TransientError
from exotrace.sinks import SinkPipeline, SyncSinkPipeline, read_metrics, run_sync
from exotrace.sinks.base import Record, SendResult
from exotrace.sinks.config import StdoutSinkConfig


def cfg(name: str = "scripted", **kw: Any) -> StdoutSinkConfig:
    return StdoutSinkConfig(type="stdout", name=name, **{**FAST, **kw})


def delivered_numbers(sink: ScriptedSink) -> list[int]:
    return numbers([r.doc for r in sink.delivered])


def test_ticket_acked_only_after_the_sink_acknowledged(state_dir: Path) -> None:
    async def main() -> None:
        sink = ScriptedSink()
        gate = asyncio.Event()
        release: list[int] = []

        async def slow_send(records: list[Record]) -> SendResult:
            release.append(len(records))
            await gate.wait()
            return SendResult()

        sink.send_orig = sink.send  # type: ignore[attr-defined]

        async def send(records: Any) -> SendResult:
            await slow_send(records)
            return await sink.send_orig(records)  # type: ignore[attr-defined]

        sink.send = send  # type: ignore[method-assign]
        p = SinkPipeline([cfg()], state_dir, sinks=[sink])
        await p.start()
        t = await p.submit(make_docs(0, 10))
        assert t == 10
        await eventually(lambda: release == [10])  # the batch is in flight
        assert not p.acked(t)
        assert not await p.wait_acked(t, timeout=0.05)
        gate.set()
        assert await p.wait_acked(t, timeout=5)
        assert p.acked(t) and p.acked(5)
        assert not p.acked(11)  # a ticket that was never issued
        await p.close()

    asyncio.run(main())


def test_required_vs_best_effort(state_dir: Path) -> None:
    async def main() -> None:
        good, broken = ScriptedSink("good"), ScriptedSink("broken")
        broken.down = True
        p = SinkPipeline([cfg("good"), cfg("broken", required=False)], state_dir, sinks=[good, broken])
        await p.start()
        t = await p.submit(make_docs(0, 5))
        assert await p.wait_acked(t, timeout=5)  # the best-effort sink does not hold the ticket
        await p.close(timeout=0.1)
        assert read_metrics(state_dir)["broken"]["spooled"] == 5

        good2, broken2 = ScriptedSink("good"), ScriptedSink("broken")
        broken2.down = True
        p = SinkPipeline([cfg("good"), cfg("broken", required=True)], state_dir, sinks=[good2, broken2])
        await p.start()
        t2 = await p.submit(make_docs(5, 10))
        assert not await p.wait_acked(t2, timeout=0.2)  # now it must wait
        assert not p.acked(t)  # the old ticket's documents are still in the spool of a required sink
        await p.close(timeout=0.1)

    asyncio.run(main())


def test_down_then_up_spools_and_delivers_everything_in_order(state_dir: Path) -> None:
    async def main() -> None:
        sink = ScriptedSink()
        sink.down = True
        p = SinkPipeline([cfg(buffer_max_events=20, batch_max_events=7)], state_dir, sinks=[sink])
        await p.start()
        tickets = [await p.submit(make_docs(i, i + 10)) for i in range(0, 100, 10)]
        await eventually(lambda: p.metrics()["scripted"]["failed"] > 0)
        assert not any(p.acked(t) for t in tickets)
        m = p.metrics()["scripted"]
        assert m["spooled"] >= 80 and m["failed"] > 0 and m["pending"] == 100
        sink.down = False
        assert await p.wait_acked(tickets[-1], timeout=10)
        assert delivered_numbers(sink) == list(range(100))
        await p.close()
        assert not any((state_dir / "spool" / "scripted").glob("*.seg"))

    asyncio.run(main())


def test_spool_survives_restart_and_is_replayed_before_new_data(state_dir: Path) -> None:
    async def first() -> list[int]:
        sink = ScriptedSink()
        sink.down = True
        p = SinkPipeline([cfg(buffer_max_events=15)], state_dir, sinks=[sink])
        await p.start()
        tickets = [await p.submit(make_docs(i, i + 10)) for i in range(0, 50, 10)]
        await p.close(timeout=0.2)
        return tickets

    tickets = asyncio.run(first())

    async def second() -> None:
        sink = ScriptedSink()
        p = SinkPipeline([cfg(batch_max_events=4)], state_dir, sinks=[sink])
        await p.start()
        assert not p.acked(tickets[0])  # still in the spool
        new = await p.submit(make_docs(50, 60))
        assert new > tickets[-1]  # sequence numbers are never reused
        assert await p.wait_acked(new, timeout=10)
        assert all(p.acked(t) for t in tickets)  # old tickets stay meaningful across the restart
        assert delivered_numbers(sink) == list(range(60))  # spool first, in order, then new data
        await p.close()

    asyncio.run(second())


def test_crash_abandons_tickets_from_the_first_lost_document(state_dir: Path) -> None:
    """No close(): documents only in memory are lost. Every ticket from the first lost document on is
    abandoned (never acked), even if its documents were spooled; spooled ones are still delivered."""
    loop = asyncio.new_event_loop()
    sink = ScriptedSink()
    sink.down = True
    p = SinkPipeline([cfg(buffer_max_events=1000)], state_dir, sinks=[sink])

    async def crash() -> tuple[int, int]:
        await p.start()
        # the sink has not failed yet: this batch stays in memory
        gate = asyncio.Event()
        orig = sink.send

        async def blocked(records: Any) -> SendResult:
            await gate.wait()
            return await orig(records)

        sink.send = blocked  # type: ignore[method-assign]
        t1 = await p.submit(make_docs(0, 10))
        await eventually(lambda: bool(p._workers[0].batches))  # taken: in flight, only in memory
        sink.send = orig  # type: ignore[method-assign]
        p._workers[0].down = True  # failing from now on: new data goes straight to the spool
        t2 = await p.submit(make_docs(10, 20))
        return t1, t2

    t1, t2 = loop.run_until_complete(crash())
    p._unlock()  # the process "dies": nothing is flushed or persisted
    for task in asyncio.all_tasks(loop):
        task.cancel()
    loop.run_until_complete(asyncio.sleep(0))
    loop.close()

    async def restart() -> None:
        sink2 = ScriptedSink()
        p2 = SinkPipeline([cfg()], state_dir, sinks=[sink2])
        await p2.start()
        assert p2.abandoned(t1) and p2.abandoned(t2)
        await eventually(lambda: delivered_numbers(sink2) == list(range(10, 20)))  # the spool is replayed
        assert not p2.acked(t1) and not p2.acked(t2)
        t3 = await p2.submit(make_docs(0, 20))  # the collector resubmits what the abandoned tickets held
        assert t3 > t2 and not p2.abandoned(t3)
        assert await p2.wait_acked(t3, timeout=10)
        assert not p2.acked(t1)
        await p2.close()

    asyncio.run(restart())


def test_dead_letter_per_item_and_by_bisection(state_dir: Path) -> None:
    async def main() -> None:
        sink = ScriptedSink()

        def reject_third(records: list[Record]) -> SendResult:
            return SendResult(rejected={2: "mapper_parsing_exception: bad field"})

        sink.script = [reject_third, SinkError("HTTP 400 body rejected")]
        p = SinkPipeline([cfg(batch_max_events=8)], state_dir, sinks=[sink])
        await p.start()
        t1 = await p.submit(make_docs(0, 8))
        assert await p.wait_acked(t1, timeout=5)
        # second batch: whole request refused once -> split in halves, each half accepted
        t2 = await p.submit(make_docs(8, 16))
        assert await p.wait_acked(t2, timeout=5)
        await p.close()
        lines = [orjson.loads(x) for x in (state_dir / "dead-letter" / "scripted.ndjson").read_bytes().splitlines()]
        assert len(lines) == 1
        assert lines[0]["reason"] == "mapper_parsing_exception: bad field"
        assert lines[0]["document"]["microsoft"]["online_message_trace"]["n"] == 2
        assert lines[0]["sink"] == "scripted" and lines[0]["key"] and lines[0]["fingerprint"]
        assert sorted(delivered_numbers(sink)) == [n for n in range(16) if n != 2]
        m = read_metrics(state_dir)["scripted"]
        assert m["dead_lettered"] == 1 and m["sent"] == 15

    asyncio.run(main())


def test_a_rejected_document_is_held_while_the_dead_letter_file_cannot_be_written(state_dir: Path) -> None:
    """Neither delivered nor dead-lettered means not acknowledged: the document waits until the dead-letter
    file can be written (here its folder is a file at first)."""
    dead_letters = state_dir / "dl" / "scripted.ndjson"
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "dl").write_text("a file where the dead-letter folder should be")

    async def main() -> None:
        sink = ScriptedSink()

        def reject_n2(records: list[Record]) -> SendResult:
            return SendResult(rejected={i: "mapper_parsing_exception" for i, r in enumerate(records)
                                        if orjson.loads(r.raw)["microsoft"]["online_message_trace"]["n"] == 2})

        sink.script = [reject_n2] * 1000
        p = SinkPipeline([cfg(batch_max_events=8, dead_letter=str(dead_letters))], state_dir, sinks=[sink])
        await p.start()
        ticket = await p.submit(make_docs(0, 4))
        await eventually(lambda: len(sink.calls) >= 3)  # refused and retried, not given up
        assert not p.acked(ticket) and p.metrics()["scripted"]["pending"] == 1
        assert sorted(delivered_numbers(sink)) == [0, 1, 3]
        (state_dir / "dl").unlink()  # the folder can be made now
        assert await p.wait_acked(ticket, timeout=10)
        await p.close()
        assert [orjson.loads(x)["document"]["microsoft"]["online_message_trace"]["n"]
                for x in dead_letters.read_bytes().splitlines()] == [2]

    asyncio.run(main())


def test_single_poison_document_is_isolated(state_dir: Path) -> None:
    async def main() -> None:
        sink = ScriptedSink()
        poison = 5

        def check(records: list[Record]) -> SendResult:
            if any(r.doc["microsoft"]["online_message_trace"]["n"] == poison for r in records):
                raise SinkError("HTTP 400 invalid event")
            return SendResult()

        sink.script = [check] * 20
        p = SinkPipeline([cfg(batch_max_events=16)], state_dir, sinks=[sink])
        await p.start()
        t = await p.submit(make_docs(0, 16))
        assert await p.wait_acked(t, timeout=5)
        await p.close()
        assert sorted(delivered_numbers(sink)) == [n for n in range(16) if n != poison]
        dead = (state_dir / "dead-letter" / "scripted.ndjson").read_bytes().splitlines()
        assert len(dead) == 1 and b'"n":5' in dead[0]

    asyncio.run(main())


def test_partial_retry_resends_only_failed_items_and_honours_retry_after(state_dir: Path) -> None:
    async def main() -> None:
        sink = ScriptedSink()
        sink.script = [lambda recs: SendResult(retry=[1, 3], retry_after=0.0),
                       lambda recs: SendResult(retry=[0], retry_after=0.0)]
        p = SinkPipeline([cfg(batch_max_events=5)], state_dir, sinks=[sink])
        await p.start()
        t = await p.submit(make_docs(0, 5))
        assert await p.wait_acked(t, timeout=5)
        await p.close()
        assert [len(c) for c in sink.calls] == [5, 2, 1]
        assert sorted(delivered_numbers(sink)) == list(range(5))
        m = read_metrics(state_dir)["scripted"]
        assert m["retried"] == 3 and m["failed"] == 3 and m["sent"] == 5

    asyncio.run(main())


def test_backpressure_blocks_submit_when_spool_full(state_dir: Path) -> None:
    async def main() -> None:
        sink = ScriptedSink()
        sink.down = True
        p = SinkPipeline([cfg(buffer_max_events=1, spool_max_bytes=20_000)], state_dir, sinks=[sink])
        await p.start()
        await p.submit(make_docs(0, 1))
        await eventually(lambda: p.metrics()["scripted"]["failed"] > 0)  # failing: new data goes to the spool
        for i in range(1, 100):
            try:
                await asyncio.wait_for(p.submit(make_docs(i, i + 1)), 0.2)
            except TimeoutError:
                break
        else:
            pytest.fail("submit never blocked")
        assert p.metrics()["scripted"]["spool_bytes"] <= 20_000 + 3000
        blocked = asyncio.create_task(p.submit(make_docs(500, 501)))
        await asyncio.sleep(0.05)
        assert not blocked.done()
        sink.down = False  # the sink recovers: space frees up, submit proceeds
        t = await asyncio.wait_for(blocked, 10)
        assert await p.wait_acked(t, timeout=10)
        await p.close()

    asyncio.run(main())


def test_best_effort_sink_drops_oldest_when_spool_full(state_dir: Path) -> None:
    async def main() -> None:
        sink = ScriptedSink()
        sink.down = True
        p = SinkPipeline([cfg(required=False, buffer_max_events=1, spool_max_bytes=20_000)], state_dir,
                         sinks=[sink])
        await p.start()
        await p.submit(make_docs(0, 1))
        await eventually(lambda: p.metrics()["scripted"]["failed"] > 0)
        for i in range(1, 200):
            await asyncio.wait_for(p.submit(make_docs(i, i + 1)), 2)  # never blocks
        m = p.metrics()["scripted"]
        assert m["dropped"] > 0
        await p.close(timeout=0.1)

    asyncio.run(main())


def test_transient_errors_never_lose_data_and_metrics_persist(state_dir: Path) -> None:
    async def main() -> None:
        sink = ScriptedSink()
        sink.script = [TransientError("boom", retry_after=0), RuntimeError("bug"), TransientError("again")]
        p = SinkPipeline([cfg()], state_dir, sinks=[sink])
        await p.start()
        t = await p.submit(make_docs(0, 3))
        assert await p.wait_acked(t, timeout=5)
        assert p.last_errors()["scripted"] == ""
        await p.close()
        m = read_metrics(state_dir)["scripted"]
        assert m == {"sent": 3, "failed": 9, "retried": 9, "spooled": 0, "dead_lettered": 0, "dropped": 0,
                     "pending": 0, "spool_bytes": 0}

    asyncio.run(main())
    # counters are cumulative across runs
    asyncio.run(_one_more(state_dir))
    assert read_metrics(state_dir)["scripted"]["sent"] == 4


async def _one_more(state_dir: Path) -> None:
    async with SinkPipeline([cfg()], state_dir, sinks=[ScriptedSink()]) as p:
        t = await p.submit(make_docs(0, 1))
        assert await p.wait_acked(t, timeout=5)


def test_state_dir_is_locked(state_dir: Path) -> None:
    async def main() -> None:
        p = SinkPipeline([cfg()], state_dir, sinks=[ScriptedSink()])
        await p.start()
        with pytest.raises(ConfigError, match="in use"):
            await SinkPipeline([cfg()], state_dir, sinks=[ScriptedSink()]).start()
        await p.close()

    asyncio.run(main())


def test_sync_wrappers(state_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.ndjson"
    from exotrace.sinks import load_sinks

    configs = load_sinks([{"type": "file", "path": str(out)}])
    with SyncSinkPipeline(configs, state_dir) as sp:
        t = sp.submit(make_docs(0, 5))
        assert sp.wait_acked(t, timeout=5) and sp.acked(t)
        assert sp.flush(timeout=5)
        assert sp.metrics()["file"]["sent"] == 5
    res = run_sync(SinkPipeline(configs, state_dir), [make_docs(5, 10), make_docs(10, 12)])
    assert res.acked and res.tickets == [10, 12]
    assert numbers([orjson.loads(x) for x in out.read_bytes().splitlines()]) == list(range(12))
    assert read_metrics(state_dir)["file"]["sent"] == 12


def test_start_failure_releases_the_state_folder(state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from exotrace.sinks import load_sinks

    monkeypatch.delenv("EXO_MISSING_TOKEN", raising=False)
    tables = [{"type": "splunk_hec", "url": "https://127.0.0.1:9", "token": "env:EXO_MISSING_TOKEN"}]

    async def main() -> None:
        with pytest.raises(ConfigError, match="EXO_MISSING_TOKEN is not set"):
            await SinkPipeline(load_sinks(tables), state_dir).start()
        async with SinkPipeline([cfg()], state_dir, sinks=[ScriptedSink()]) as p:  # not locked any more
            assert await p.wait_acked(await p.submit(make_docs(0, 1)), timeout=5)

    asyncio.run(main())


def test_unserializable_document_is_an_input_error(state_dir: Path) -> None:
    from exotrace.errors import InputError

    async def main() -> None:
        async with SinkPipeline([cfg()], state_dir, sinks=[ScriptedSink()]) as p:
            bad = make_docs(0, 2)
            bad[1].doc["oops"] = {1, 2}
            bad[1].origin, bad[1].line = "export.json", 7
            with pytest.raises(InputError, match="cannot be serialized") as e:
                await p.submit(bad)
            assert (e.value.origin, e.value.line) == ("export.json", 7)

    asyncio.run(main())


def test_check_sinks_reports_reachability(tmp_path: Path) -> None:
    from exotrace.sinks import check_sinks, load_sinks

    configs = load_sinks([{"type": "file", "path": str(tmp_path / "ok.ndjson")},
                          {"type": "syslog", "host": "127.0.0.1", "port": 9, "timeout": 2}])
    result = asyncio.run(check_sinks(configs))
    assert result["file"] == ""
    assert "cannot connect" in result["syslog"]


def test_sync_start_failure_stops_its_thread(state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from exotrace.sinks import load_sinks

    monkeypatch.delenv("EXO_MISSING_TOKEN", raising=False)
    sp = SyncSinkPipeline(load_sinks([{"type": "splunk_hec", "url": "https://127.0.0.1:9",
                                       "token": "env:EXO_MISSING_TOKEN"}]), state_dir)
    with pytest.raises(ConfigError):
        sp.start()
    assert not sp._thread.is_alive()
    sp.close()  # harmless after a failed start


def test_random_faults_concurrency_restarts_and_crashes_lose_nothing(state_dir: Path) -> None:
    """Seeded chaos: transient failures, partial retries, 3 batches in flight, forced shutdowns that spool
    in-flight data, and crashes (no close). A ticket is acked only once its documents were delivered,
    abandoned tickets are never acked, and after resubmitting the abandoned ones everything arrives."""
    import random

    rng = random.Random(int(os.environ.get("EXOTRACE_CHAOS_SEED", "1234")))
    delivered: set[int] = set()
    batches: dict[int, range] = {}  # ticket -> document numbers
    submitted = 0

    def flaky(records: list[Record]) -> SendResult:
        r = rng.random()
        if r < 0.2:
            raise TransientError("injected")
        if r < 0.45:
            return SendResult(retry=[i for i in range(len(records)) if rng.random() < 0.4], retry_after=0)
        if r < 0.5:
            return SendResult(rejected={rng.randrange(len(records)): "injected rejection"})
        return SendResult()

    def check(p: SinkPipeline, sink: ScriptedSink) -> None:
        delivered.update(delivered_numbers(sink))
        dead = state_dir / "dead-letter" / "scripted.ndjson"
        if dead.exists():  # dead-lettered documents count as handled
            delivered.update(orjson.loads(x)["document"]["microsoft"]["online_message_trace"]["n"]
                             for x in dead.read_bytes().splitlines())
        for ticket, nums in batches.items():
            if p.acked(ticket):
                assert not p.abandoned(ticket)
                assert set(nums) <= delivered, f"ticket {ticket} acked before delivery"

    async def one_run(mode: str) -> None:
        nonlocal submitted
        sink = ScriptedSink()
        sink.script = [flaky] * 10_000
        p = SinkPipeline([cfg(concurrency=3, buffer_max_events=40, batch_max_events=15)], state_dir, sinks=[sink])
        await p.start()
        check(p, sink)
        work = [(t, nums) for t, nums in batches.items() if p.abandoned(t)]  # the collector resubmits these
        for t, _ in work:
            del batches[t]
        for _ in range(8):
            n = rng.randint(1, 30)
            work.append((0, range(submitted, submitted + n)))
            submitted += n
        for _, nums in work:
            t = await p.submit(make_docs(nums.start, nums.stop))
            batches[t] = nums
            await asyncio.sleep(rng.random() * 0.01)
            check(p, sink)
        if mode == "crash":
            p._unlock()  # the process dies: nothing is flushed or persisted
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()
            return
        if mode == "clean":
            await p.flush(timeout=10)
        await p.close(timeout=0 if mode == "forced" else 10)
        check(p, sink)

    for mode in ["forced", "clean", "crash", "forced", "crash", "clean", "forced"]:
        asyncio.run(one_run(mode))

    async def final() -> None:
        sink = ScriptedSink()
        async with SinkPipeline([cfg(concurrency=3)], state_dir, sinks=[sink]) as p:
            lost = [(t, nums) for t, nums in batches.items() if p.abandoned(t)]
            for t, nums in lost:
                del batches[t]
                batches[await p.submit(make_docs(nums.start, nums.stop))] = nums
            assert await p.wait_acked(max(batches), timeout=20)
            assert all(p.acked(t) for t in batches)
            check(p, sink)

    asyncio.run(final())
    assert delivered == set(range(submitted))


def test_batches_close_on_count_bytes_and_time(state_dir: Path) -> None:
    async def main() -> None:
        # count: 10 documents, at most 4 per batch (the last 2 go when batch_timeout expires)
        sink = ScriptedSink()
        async with SinkPipeline([cfg(batch_max_events=4, batch_timeout=0.05)], state_dir, sinks=[sink]) as p:
            assert await p.wait_acked(await p.submit(make_docs(0, 10)), timeout=5)
        assert [len(c) for c in sink.calls] == [4, 4, 2]

        # bytes: any two documents fit, no three do
        docs = make_docs(10, 20)
        sizes = [len(orjson.dumps(d.doc)) for d in docs]
        limit = 2 * max(sizes) + min(sizes) // 2
        assert 3 * min(sizes) > limit
        sink = ScriptedSink()
        async with SinkPipeline([cfg(batch_max_bytes=limit, batch_timeout=0.05)], state_dir, sinks=[sink]) as p:
            assert await p.wait_acked(await p.submit(docs), timeout=5)
        assert [len(c) for c in sink.calls] == [2] * 5
        assert all(sum(len(r.raw) for r in batch) <= limit for batch in
                   [sink.delivered[i:i + 2] for i in range(0, 10, 2)])

        # time: documents submitted apart, within batch_timeout, travel together; nothing waits longer
        sink = ScriptedSink()
        async with SinkPipeline([cfg(batch_timeout=0.5)], state_dir, sinks=[sink]) as p:
            await p.submit(make_docs(20, 22))
            await asyncio.sleep(0.01)
            t = await p.submit(make_docs(22, 23))
            assert await p.wait_acked(t, timeout=5)  # sent by the timer: no flush, no full batch
        assert [len(c) for c in sink.calls] == [3]

    asyncio.run(main())


class _RecordingClock:
    """The pipeline's retry waits, recorded and skipped."""

    def __init__(self) -> None:
        from exotrace.clock import SystemClock

        self._real = SystemClock()
        self.sleeps: list[float] = []

    def now(self) -> Any:
        return self._real.now()

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await asyncio.sleep(0)

    def sleep_sync(self, seconds: float) -> None:
        self.sleeps.append(seconds)


def test_retry_delays_grow_exponentially_with_jitter_up_to_the_cap(state_dir: Path) -> None:
    async def main() -> None:
        sink = ScriptedSink()
        sink.script = [TransientError("down")] * 6 + [TransientError("throttled", retry_after=3.0), None,
                                                      TransientError("down again")]
        clock = _RecordingClock()
        p = SinkPipeline([cfg(retry_initial=1.0, retry_max=8.0)], state_dir, clock, sinks=[sink])
        await p.start()
        assert await p.wait_acked(await p.submit(make_docs(0, 3)), timeout=5)
        assert await p.wait_acked(await p.submit(make_docs(3, 4)), timeout=5)
        await p.close()
        steps = [1, 2, 4, 8, 8, 8]  # doubling from retry_initial, capped at retry_max
        waits = clock.sleeps
        assert len(waits) == 8
        for d, got in zip(steps, waits[:6], strict=True):
            assert d / 2 <= got <= d  # jitter: between half and all of the step
        assert len({round(w / d, 6) for d, w in zip(steps, waits, strict=False)}) > 1  # not a fixed delay
        assert waits[6] == 3.0  # the server's Retry-After wins
        assert 0.5 <= waits[7] <= 1.0  # a success resets the backoff
        assert delivered_numbers(sink) == [0, 1, 2, 3]

    asyncio.run(main())


def test_flush_does_not_wait_for_a_failing_best_effort_sink(state_dir: Path) -> None:
    """`ingest` flushes before exiting: a best-effort sink that is down must not hold it up."""

    async def main() -> None:
        good, broken = ScriptedSink("good"), ScriptedSink("broken")
        broken.down = True
        p = SinkPipeline([cfg("good"), cfg("broken", required=False)], state_dir, sinks=[good, broken])
        await p.start()
        t = await p.submit(make_docs(0, 5))
        assert not await asyncio.wait_for(p.flush(), 10)  # returns (not everything is out), never hangs
        assert p.acked(t) and delivered_numbers(good) == list(range(5))
        assert p.metrics()["broken"]["pending"] == 5
        await p.close(timeout=0.1)
        assert read_metrics(state_dir)["broken"]["spooled"] == 5  # kept for the next run

        required = ScriptedSink("required")
        required.down = True
        p = SinkPipeline([cfg("required")], state_dir / "2", sinks=[required])
        await p.start()
        t = await p.submit(make_docs(0, 2))
        assert not await p.flush(timeout=0.2)  # a required sink is waited for, up to the timeout
        assert not p.acked(t)
        await p.close(timeout=0.1)

    asyncio.run(main())


def run_bounded(main: Any, limit: float = 30.0) -> None:
    """Run ``asyncio.run(main())`` in a thread and fail if it has not returned after ``limit`` seconds.

    A liveness guard for shutdown (close() used to hang forever), not a speed assertion."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # re-raised in the test's thread
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True, name="bounded-asyncio-run")
    thread.start()
    thread.join(limit)
    assert not thread.is_alive(), f"still running after {limit:g}s: close() hangs"
    if errors:
        raise errors[0]


class _LosesCancellation(ScriptedSink):
    """Each send fails (like a TLS handshake refused by certificate verification) and swallows a
    cancellation that lands meanwhile, as Python 3.11's ``asyncio.wait_for`` does when the awaited
    operation has already failed. Before the fix, close() cancelled once and waited forever."""

    async def send(self, records: Sequence[Record]) -> SendResult:
        self.calls.append([r.seq for r in records])
        try:
            await asyncio.sleep(0.2)
        except asyncio.CancelledError:
            pass
        raise TransientError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")


def test_close_returns_when_a_failing_send_swallows_the_cancellation(state_dir: Path) -> None:
    async def main() -> None:
        sink = _LosesCancellation()
        p = SinkPipeline([cfg(retry_initial=0.0, retry_max=0.0)], state_dir, sinks=[sink])
        await p.start()
        t = await p.submit(make_docs(0, 5))
        await eventually(lambda: len(sink.calls) >= 2)  # failing and retrying
        await p.close(timeout=0.1)
        assert not p.acked(t)

    run_bounded(main)
    assert read_metrics(state_dir)["scripted"]["pending"] == 5

    async def replay() -> None:
        sink = ScriptedSink()
        async with SinkPipeline([cfg()], state_dir, sinks=[sink]) as p:
            assert await p.wait_acked(5, timeout=10)
            assert delivered_numbers(sink) == list(range(5))

    run_bounded(replay)


def test_close_is_bounded_when_a_send_ignores_cancellation_and_keeps_its_documents(state_dir: Path) -> None:
    """A send that will not stop: close() gives up after stop_timeout; the batch stays in the spool."""
    release = threading.Event()

    class Stubborn(ScriptedSink):
        async def send(self, records: Sequence[Record]) -> SendResult:
            self.calls.append([r.seq for r in records])
            while not release.is_set():
                try:
                    await asyncio.sleep(0.02)
                except asyncio.CancelledError:
                    pass
            return SendResult()

    async def main() -> None:
        sink = Stubborn()
        p = SinkPipeline([cfg()], state_dir, sinks=[sink], stop_timeout=0.3)
        await p.start()
        t = await p.submit(make_docs(0, 4))
        await eventually(lambda: sink.calls != [])
        await p.close(timeout=0.1)
        assert not p.acked(t)
        release.set()  # let the stray send end, so that asyncio.run can finish

    run_bounded(main)

    async def replay() -> None:
        sink = ScriptedSink()
        async with SinkPipeline([cfg()], state_dir, sinks=[sink]) as p:
            assert await p.wait_acked(4, timeout=10)
            assert delivered_numbers(sink) == list(range(4))

    run_bounded(replay)


@pytest.mark.parametrize("damage", ["seq", "key", "zeros"])
def test_a_damaged_spool_line_is_set_aside_and_the_rest_delivered(state_dir: Path, damage: str) -> None:
    """A line a disk or power failure damaged (unreadable fields, a zeroed block) must not stop the sink:
    it is copied to damaged.ndjson and skipped; every other spooled and new document is delivered."""
    async def spool_twenty() -> None:
        sink = ScriptedSink()
        sink.down = True
        p = SinkPipeline([sink.config], state_dir, sinks=[sink])
        await p.start()
        await p.submit(make_docs(0, 20))
        await eventually(lambda: p.metrics()["scripted"]["spooled"] == 20 or len(sink.calls) > 0)
        await p.close(timeout=0.1)

    asyncio.run(spool_twenty())
    folder = state_dir / "spool" / "scripted"
    segment = next(folder.glob("*.seg"))
    lines = segment.read_bytes().splitlines(keepends=True)
    assert len(lines) == 20
    lines[5] = {"seq": b"garbage line\n", "key": lines[5].replace(b'\t"', b"\t{", 1),
                "zeros": b"\x00" * (len(lines[5]) - 1) + b"\n"}[damage]
    segment.write_bytes(b"".join(lines))

    async def restart() -> ScriptedSink:
        sink = ScriptedSink()
        p = SinkPipeline([sink.config], state_dir, sinks=[sink])
        await p.start()
        ticket = await p.submit(make_docs(20, 25))
        assert await p.wait_acked(ticket, timeout=10)
        await p.close()
        return sink

    sink = asyncio.run(restart())
    assert sorted(delivered_numbers(sink)) == [n for n in range(25) if n != 5]
    kept = [orjson.loads(x) for x in (folder / "damaged.ndjson").read_bytes().splitlines()]
    assert len(kept) == 1 and kept[0]["segment"] == segment.name
