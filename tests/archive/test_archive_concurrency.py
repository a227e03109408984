"""WAL readers in another process, transaction nesting and rollback."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

import pytest

from exotrace.archive import Archive, SearchQuery
from exotrace.archive.testing import make_document as doc

WRITER = textwrap.dedent(
    """
    import sys
    from exotrace.archive import Archive, SearchQuery
    from exotrace.archive.testing import make_document as doc

    arch = Archive.open(sys.argv[1])
    batch, rounds = int(sys.argv[2]), int(sys.argv[3])
    for r in range(rounds):
        with arch.transaction():
            arch.upsert([doc(f"r{r}-{i}") for i in range(batch)])
            print(f"writing {r}", flush=True)  # the transaction is open and not committed
            sys.stdin.readline()               # wait until the reader has looked
        print(f"committed {r}", flush=True)
        sys.stdin.readline()
    arch.close()
    """
)


def test_another_process_reads_while_one_writes(db_path) -> None:
    batch, rounds = 500, 4
    Archive.open(db_path).close()
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db_path), str(batch), str(rounds)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert writer.stdin and writer.stdout
    try:
        with Archive.open(db_path, busy_timeout=2) as reader:
            for r in range(rounds):
                assert writer.stdout.readline().strip() == f"writing {r}"
                # The writer holds an open write transaction: we read without waiting, and see
                # exactly the committed rounds.
                assert reader.count() == r * batch
                with Archive.open(db_path, busy_timeout=0.5) as late:  # opening does not need the lock
                    assert late.count() == r * batch
                writer.stdin.write("\n")
                writer.stdin.flush()
                assert writer.stdout.readline().strip() == f"committed {r}"
                assert reader.count() == (r + 1) * batch
                writer.stdin.write("\n")
                writer.stdin.flush()
        assert writer.wait(timeout=30) == 0
    finally:
        if writer.poll() is None:
            writer.kill()


def test_upsert_inside_outer_transaction_commits_with_it(arch: Archive, db_path) -> None:
    arch.ensure_schema("ledger", ["CREATE TABLE ledger (window TEXT PRIMARY KEY, state TEXT)"])
    other = Archive.open(db_path)
    try:
        with arch.transaction() as conn:
            arch.upsert([doc("t1")])
            conn.execute("INSERT INTO ledger VALUES ('w1', 'complete')")
            assert arch.count() == 1  # visible inside
            assert other.count() == 0  # not committed yet
        assert other.count() == 1
        assert other.conn.execute("SELECT state FROM ledger").fetchone() == ("complete",)
    finally:
        other.close()


def test_error_in_outer_transaction_rolls_back_the_upsert(arch: Archive) -> None:
    arch.ensure_schema("ledger", ["CREATE TABLE ledger (window TEXT PRIMARY KEY, state TEXT)"])
    with pytest.raises(RuntimeError), arch.transaction() as conn:
        arch.upsert([doc("t1"), doc("t2")])
        conn.execute("INSERT INTO ledger VALUES ('w1', 'complete')")
        raise RuntimeError("crash before commit")
    assert arch.count() == 0
    assert arch.conn.execute("SELECT count(*) FROM ledger").fetchone() == (0,)
    assert not arch.conn.in_transaction
    assert arch.last_seq() == 0


def test_failed_inner_block_rolls_back_only_itself(arch: Archive) -> None:
    with arch.transaction():
        arch.upsert([doc("t1")])
        with pytest.raises(ValueError), arch.transaction():
            arch.upsert([doc("t2")])
            raise ValueError("inner")
        arch.upsert([doc("t3")])
    assert sorted(k.split("|")[0] for k in arch.snapshot()) == ["t1", "t3"]


def test_threads_share_one_archive(arch: Archive) -> None:
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for b in range(5):
                arch.upsert([doc(f"th{n}-{b}-{i}") for i in range(50)])
                arch.search(SearchQuery(recipient="linus@contoso.com", limit=5))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert arch.count() == 4 * 5 * 50
    assert arch.last_seq() == 4 * 5 * 50
