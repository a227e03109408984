"""The collector's shipper and the changes other processes archive between its own."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import orjson
import pytest

from exotrace.archive import Archive
from exotrace.archive.testing import make_document
from exotrace.collect import shipper as shipper_module
from exotrace.collect.shipper import Coverage, Shipper, read_cursor
from exotrace.sinks import SinkPipeline, load_sinks
from exotrace.state.ledger import MIGRATIONS


def _docs(prefix: str) -> list:
    return [make_document(f"{prefix}-0000-0000-0000-{i:012d}", f"u{i}@contoso.com") for i in range(5)]


@asynccontextmanager
async def _shipper(tmp_path: Path, out: Path) -> AsyncIterator[tuple[SinkPipeline, Archive, Archive, Shipper]]:
    """A shipper over a file sink writing ``out``, its archive, and a second handle on the archive: the
    other process."""
    pipeline = SinkPipeline(load_sinks([{"type": "file", "name": "copy", "path": str(out)}], tmp_path),
                            state_dir=tmp_path / "a.db.spool")
    await pipeline.start()
    try:
        with Archive.open(tmp_path / "a.db") as mine, Archive.open(tmp_path / "a.db") as other:
            mine.ensure_schema("collector", MIGRATIONS)
            shipper = Shipper(pipeline, mine)
            await shipper.replay()
            yield pipeline, mine, other, shipper
    finally:
        await pipeline.close(30)


def _page(archive: Archive, prefix: str):
    """What TenantRunner._commit_page returns, for five new rows."""
    def commit():
        res = archive.upsert(_docs(prefix))
        return res, res.changed, res.seqs
    return commit


async def _in_thread(fn):
    return await asyncio.to_thread(fn)


def test_coverage_gaps() -> None:
    cover = Coverage()
    cover.add(0, 5)
    cover.add(10, 15)
    cover.add(5, 7)
    assert cover.gaps(0, 20) == [(7, 10), (15, 20)]
    assert cover.gaps(2, 6) == [] and cover.gaps(12, 15) == [] and cover.high() == 15
    cover.forget(12)
    assert cover.gaps(0, 15) == [(0, 12)]


@pytest.mark.parametrize("batch", [None, 2])
def test_the_cursor_waits_for_changes_another_process_archived_in_between(tmp_path: Path, monkeypatch,
                                                                            batch: int | None) -> None:
    """``ingest`` without sinks beside the daemon: its rows fall between the daemon's pages. The daemon
    hands them to the sinks before its cursor passes them (it passed them, and they were never sent).
    With ``batch``, they come two at a time and one batch a checkpoint: the cursor gets there in steps."""
    out = tmp_path / "ship" / "docs.ndjson"
    if batch:
        monkeypatch.setattr(shipper_module, "FOREIGN_BATCHES", 1)
        monkeypatch.setattr(shipper_module, "foreign_changes",
                            partial(shipper_module.foreign_changes, limit=batch))

    async def main() -> int:
        async with _shipper(tmp_path, out) as (pipeline, mine, other, shipper):
            _, first = await shipper.commit(_page(mine, "aaaaaaaa"), _in_thread)
            other.upsert(_docs("bbbbbbbb"))
            _, last = await shipper.commit(_page(mine, "cccccccc"), _in_thread)
            assert first is not None and last is not None and await pipeline.wait_acked(last, 30)
            await shipper.checkpoint()  # hands over bbbbbbbb; the cursor waits for it
            assert shipper.foreign == (batch or 5) and read_cursor(mine) == 0
            for _ in range(5):
                await pipeline.flush(30)
                await shipper.checkpoint()
            assert shipper.foreign == 5
            return read_cursor(mine)

    assert asyncio.run(main()) == 15
    shipped = sorted(orjson.loads(line)["email"]["local_id"][:8] for f in out.parent.rglob("docs*.ndjson*")
                     for line in f.read_text().splitlines())
    assert shipped == ["aaaaaaaa"] * 5 + ["bbbbbbbb"] * 5 + ["cccccccc"] * 5


def test_two_reads_checkpointing_at_once_wait_for_the_other_process_changes(tmp_path: Path, monkeypatch) -> None:
    """Two tenants' reads checkpoint together: the second must not pass the other process's changes that
    the first has just submitted and the sinks have not acknowledged (it saved the cursor past them)."""
    out = tmp_path / "ship" / "docs.ndjson"
    read_foreign = shipper_module.foreign_changes

    def slow_foreign(*args, **kwargs):  # reading the other process's changes takes a while
        time.sleep(0.5)
        yield from read_foreign(*args, **kwargs)

    monkeypatch.setattr(shipper_module, "foreign_changes", slow_foreign)

    async def main() -> tuple[int, int]:
        async with _shipper(tmp_path, out) as (pipeline, mine, other, shipper):
            await shipper.commit(_page(mine, "aaaaaaaa"), _in_thread)
            other.upsert(_docs("bbbbbbbb"))
            _, last = await shipper.commit(_page(mine, "cccccccc"), _in_thread)
            assert last is not None and await pipeline.wait_acked(last, 30)
            submitted, acked = pipeline.submit, pipeline.acked
            held: list[int] = []

            async def held_submit(docs):  # the sinks take their time with the other process's changes
                ticket = await submitted(docs)
                if docs[0].doc["email"]["local_id"].startswith("bbbbbbbb"):
                    held.append(ticket)
                return ticket

            pipeline.submit = held_submit  # type: ignore[method-assign]
            pipeline.acked = lambda t: acked(t) and not any(h <= t for h in held)  # type: ignore[method-assign]

            async def slow_run(fn):
                await asyncio.sleep(0.2)
                return await asyncio.to_thread(fn)

            # another page commits (holding the lock) while the first read's checkpoint begins; the
            # second read's checkpoint starts once that page is acknowledged
            commit = asyncio.create_task(shipper.commit(_page(mine, "dddddddd"), slow_run))
            await asyncio.sleep(0.05)
            first_checkpoint = asyncio.create_task(shipper.checkpoint())
            _, fourth = await commit
            assert fourth is not None and await pipeline.wait_acked(fourth, 30)
            await asyncio.gather(first_checkpoint, shipper.checkpoint())
            during = read_cursor(mine)
            assert held, "the other process's changes were submitted"
            pipeline.submit, pipeline.acked = submitted, acked  # type: ignore[method-assign]
            await pipeline.flush(30)
            await shipper.checkpoint()
            return during, read_cursor(mine)

    during, after = asyncio.run(main())
    assert during == 0 and after == 20
