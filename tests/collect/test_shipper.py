"""The collector's shipper and the changes other processes archive between its own."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson

from exotrace.archive import Archive
from exotrace.archive.testing import make_document
from exotrace.collect.shipper import Coverage, Shipper, read_cursor
from exotrace.sinks import SinkPipeline, load_sinks
from exotrace.state.ledger import MIGRATIONS


def _docs(prefix: str) -> list:
    return [make_document(f"{prefix}-0000-0000-0000-{i:012d}", f"u{i}@contoso.com") for i in range(5)]


def test_coverage_gaps() -> None:
    cover = Coverage()
    cover.add(0, 5)
    cover.add(10, 15)
    cover.add(5, 7)
    assert cover.gaps(0, 20) == [(7, 10), (15, 20)]
    assert cover.gaps(2, 6) == [] and cover.gaps(12, 15) == [] and cover.high() == 15
    cover.forget(12)
    assert cover.gaps(0, 15) == [(0, 12)]


def test_the_cursor_waits_for_changes_another_process_archived_in_between(tmp_path: Path) -> None:
    """``ingest`` without sinks beside the daemon: its rows fall between the daemon's pages. The daemon
    hands them to the sinks before its cursor passes them (it passed them, and they were never sent)."""
    out = tmp_path / "ship" / "docs.ndjson"

    async def main() -> int:
        pipeline = SinkPipeline(load_sinks([{"type": "file", "name": "copy", "path": str(out)}], tmp_path),
                                state_dir=tmp_path / "a.db.spool")
        await pipeline.start()
        try:
            with Archive.open(tmp_path / "a.db") as mine, Archive.open(tmp_path / "a.db") as other:
                mine.ensure_schema("collector", MIGRATIONS)
                shipper = Shipper(pipeline, mine)
                await shipper.replay()

                def page(prefix: str):  # what TenantRunner._commit_page returns
                    def commit():
                        res = mine.upsert(_docs(prefix))
                        return res, res.changed, res.seqs
                    return commit

                async def run(fn):
                    return await asyncio.to_thread(fn)

                _, first = await shipper.commit(page("aaaaaaaa"), run)
                other.upsert(_docs("bbbbbbbb"))
                _, last = await shipper.commit(page("cccccccc"), run)
                assert first is not None and last is not None and await pipeline.wait_acked(last, 30)
                await shipper.checkpoint()  # hands over bbbbbbbb; the cursor waits for it
                assert shipper.foreign == 5 and read_cursor(mine) == 0
                await pipeline.flush(30)
                await shipper.checkpoint()
                return read_cursor(mine)
        finally:
            await pipeline.close(30)

    assert asyncio.run(main()) == 15
    shipped = sorted(orjson.loads(line)["email"]["local_id"][:8] for f in out.parent.rglob("docs*.ndjson*")
                     for line in f.read_text().splitlines())
    assert shipped == ["aaaaaaaa"] * 5 + ["bbbbbbbb"] * 5 + ["cccccccc"] * 5
