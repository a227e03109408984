"""Archive benchmark: ingest rate and search latency over a large synthetic archive.

    python bench/archive_bench.py [--rows 1000000] [--queries 200] [--dir DIR]

Generates Graph message-trace rows (many domains, IPv4/IPv6, every status) and normalizes them as the
collector does (GeoIP, public suffixes, direction; not timed), then measures:

* ingest rows/s through ``Archive.upsert`` (batches of ``--batch`` documents, one transaction each), and
  the same rows through a plain ``executemany`` of (key, JSON) into a bare table, as the baseline;
* re-ingest of the same documents (every row unchanged) and an update pass (status changes);
* SQLite's own share: the statements ``Archive.upsert`` sends for the first ``--replay-rows`` rows,
  recorded in an untimed pass and replayed into a fresh archive (no Python work left but the replay loop),
  against the same rows upserted into another fresh archive: the ceiling any Python-side work can reach;
* search latency (median, p95) by recipient address, by sender domain (``*@domain``) and by sender
  domain with subdomains (``domain``), newest 100 rows each, decoded to dicts, compared with the same
  recipient search on the bare table without an index (a scan).

Document generation is not timed. Targets: ingest >= 30k rows/s, searches < 50 ms. Received times
advance through the run (about 30 days per million rows), as they do for collected mail.
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from exotrace.archive import Archive, SearchQuery  # noqa: E402
from exotrace.model import Document, RawRecord  # noqa: E402
from exotrace.normalize import NormalizeOptions, Normalizer  # noqa: E402

STATUSES = ["Delivered"] * 70 + ["GettingStatus"] * 8 + ["Pending"] * 3 + ["Failed"] * 6 + \
    ["FilteredAsSpam"] * 5 + ["Quarantined"] * 3 + ["Expanded"] * 3 + ["Resolved", "Recalled"]
WORDS = "invoice report meeting update password reset quarterly order shipment alert weekly digest".split()


class Corpus:
    """Deterministic synthetic mail flow: local users at a few tenant domains, many external domains."""

    def __init__(self, seed: int = 7) -> None:
        self.rng = random.Random(seed)
        self.local_domains = ["contoso.com", "eu.contoso.com", "fabrikam.onmicrosoft.com", "contoso.co.uk"]
        self.local_users = [f"user{i}@{self.rng.choice(self.local_domains)}" for i in range(20_000)]
        self.external_domains = [f"{self.rng.choice(['mail.', '', 'em.', ''])}partner{i}.{tld}"
                                 for i, tld in enumerate(self.rng.choices(["com", "org", "net", "de", "co.uk",
                                                                           "fr", "io"], k=5_000))]
        self.external = [f"{n}{i}@{self.rng.choice(self.external_domains)}"
                         for i, n in enumerate(self.rng.choices(["news", "info", "j.doe", "sales", "no-reply"],
                                                                k=50_000))]

    def _ip(self) -> str:
        if self.rng.random() < 0.2:
            return f"2a01:111:f400:{self.rng.randrange(0xFFFF):x}::{self.rng.randrange(0xFFFF):x}"
        return f"{self.rng.randrange(1, 224)}.{self.rng.randrange(256)}.{self.rng.randrange(256)}." \
               f"{self.rng.randrange(1, 255)}"

    def records(self, count: int, start: int = 0) -> Iterator[dict[str, object]]:
        """Graph ``messageTrace`` rows, as the collector receives them."""
        base = 1_714_521_600  # 2024-05-01T00:00:00Z
        rng = self.rng
        for n in range(start, start + count):
            kind = rng.random()
            if kind < 0.55:
                sender, recipient = rng.choice(self.external), rng.choice(self.local_users)
            elif kind < 0.85:
                sender, recipient = rng.choice(self.local_users), rng.choice(self.external)
            else:
                sender, recipient = rng.choice(self.local_users), rng.choice(self.local_users)
            ts = base + n * 2.6  # ~30 days per million rows
            received = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"
            guid = f"{rng.getrandbits(128):032x}"  # random, like real MessageTraceIds
            status = rng.choice(STATUSES)
            yield {
                "id": f"{guid[:8]}-{guid[8:12]}-{guid[12:16]}-{guid[16:20]}-{guid[20:]}",
                "messageId": f"<{rng.getrandbits(64):016x}@{sender.partition('@')[2]}>",
                "receivedDateTime": received,
                "senderAddress": "" if rng.random() < 0.01 else sender,
                "recipientAddress": recipient,
                "subject": f"{rng.choice(WORDS)} {rng.choice(WORDS)} #{n}",
                "size": rng.randrange(1_000, 5_000_000),
                "fromIP": self._ip(),
                "toIP": self._ip() if rng.random() < 0.3 else "",
                "status": status[0].lower() + status[1:],
            }

    def documents(self, normalizer: Normalizer, count: int, start: int = 0) -> list[Document]:
        """The rows normalized as the collector does (not timed): JSON-first documents with their summary."""
        return [normalizer.normalize(RawRecord(row, "", "bench", start + i + 1, "graph",
                                               observed_at=str(row["receivedDateTime"])))
                for i, row in enumerate(self.records(count, start))]


class Clock:
    """Wall time and this process's CPU time (the machine may be shared: CPU time is the steadier one)."""

    def __init__(self) -> None:
        self.wall = 0.0
        self.cpu = 0.0

    def run(self, fn: Callable[[], object]) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        self.wall += time.perf_counter() - wall
        self.cpu += time.process_time() - cpu


class StatementLog:
    """Stands in for an archive's connection and keeps every ``executemany`` it forwards (rows copied)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self.upserts: list[list[tuple[str, list[Any]]]] = []

    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        if sql.startswith("BEGIN"):
            self.upserts.append([])
        return self._conn.execute(sql, params)

    def executemany(self, sql: str, rows: Any) -> sqlite3.Cursor:
        rows = [tuple(row) for row in rows]
        self.upserts[-1].append((sql, rows))
        return self._conn.executemany(sql, rows)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def sqlite_share(batches: list[list[Document]], workdir: Path) -> tuple[Clock, Clock]:
    """(upsert of ``batches`` into a fresh archive, replay of the statements it sends into another)."""
    paths = [workdir / f"share-{name}.db" for name in ("upsert", "record", "replay")]
    for path in paths:
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
    upsert, replay = Clock(), Clock()
    target = Archive.open(paths[0])
    for docs in batches:
        upsert.run(lambda docs=docs: target.upsert(docs, source="bench"))
    target.close()
    recorded = Archive.open(paths[1])
    log = StatementLog(recorded.conn)
    recorded._conn = log  # type: ignore[assignment]  # the bench looks inside on purpose
    for docs in batches:
        recorded.upsert(docs, source="bench")
    recorded._conn = log._conn
    recorded.close()
    conn = Archive.open(paths[2]).conn

    def run_statements(statements: list[tuple[str, list[Any]]]) -> None:
        conn.execute("BEGIN IMMEDIATE")
        for sql, rows in statements:
            conn.executemany(sql, rows)
        conn.execute("COMMIT")

    for statements in log.upserts:
        replay.run(lambda statements=statements: run_statements(statements))
    conn.close()
    for path in paths:
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
    return upsert, replay


def _latency(fn: Callable[[str], object], values: list[str]) -> tuple[float, float]:
    times = []
    for value in values:
        start = time.perf_counter()
        fn(value)
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.95))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=5_000,
                        help="documents per upsert (one transaction; ingest and a collector page commit 5000)")
    parser.add_argument("--replay-rows", type=int, default=100_000,
                        help="rows whose SQL statements are replayed to measure SQLite's own share (0: skip)")
    parser.add_argument("--queries", type=int, default=200, help="searches per kind")
    parser.add_argument("--dir", type=Path, help="where to put the databases (default: a temporary folder)")
    args = parser.parse_args(argv)

    workdir = args.dir or Path(tempfile.mkdtemp(prefix="exotrace-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    archive_path, bare_path = workdir / "archive.db", workdir / "bare.db"
    for path in (archive_path, bare_path):
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)

    corpus = Corpus()
    geoip = Path(__file__).resolve().parents[1] / "tests" / "data" / "geoip"
    options = NormalizeOptions(local_domains=tuple(corpus.local_domains), tenant="contoso", geoip_dir=geoip)
    normalizer = Normalizer(options)
    arch = Archive.open(archive_path)
    bare = sqlite3.connect(bare_path, isolation_level=None)
    bare.execute("PRAGMA journal_mode = WAL")
    bare.execute("PRAGMA synchronous = NORMAL")
    bare.execute("CREATE TABLE rows (key TEXT, recipient TEXT, doc TEXT)")

    ingest, baseline, reingest, update = Clock(), Clock(), Clock(), Clock()
    recipients: list[str] = []
    sender_domains: list[str] = []
    share_batches: list[list[Document]] = []
    done = 0
    print(f"Generating and ingesting {args.rows:,} documents into {archive_path} ...", file=sys.stderr)
    while done < args.rows:
        count = min(args.batch, args.rows - done)
        docs = corpus.documents(normalizer, count, start=done)
        done += count

        def bare_insert(docs: list[Document] = docs) -> None:
            bare.execute("BEGIN")
            bare.executemany(
                "INSERT INTO rows VALUES (?, ?, CAST(? AS TEXT))",
                ((d.key, d.summary.recipient.lower(), d.json) for d in docs),  # type: ignore[union-attr]
            )
            bare.execute("COMMIT")

        baseline.run(bare_insert)
        if done <= args.replay_rows:
            share_batches.append(docs)
        ingest.run(lambda docs=docs: arch.upsert(docs, source="bench"))
        if len(recipients) < args.queries:
            sample = random.Random(done).sample(docs, min(len(docs), args.queries))
            recipients += [d.summary.recipient for d in sample]  # type: ignore[union-attr]
            sender_domains += [d.summary.sender.partition("@")[2] for d in sample  # type: ignore[union-attr]
                               if d.summary.sender]  # type: ignore[union-attr]
        if done == args.batch:  # second passes on the first batch: unchanged rows, then status changes
            reingest.run(lambda docs=docs: arch.upsert(docs, source="bench"))
            changed = [normalizer.normalize(RawRecord({**row, "status": "failed"}, "", "bench", i + 1, "graph",
                                                      observed_at="2030-01-01T00:00:00Z"))
                       for i, row in enumerate(Corpus().records(count))]
            update.run(lambda changed=changed: arch.upsert(changed, source="bench"))
        print(f"  {done:,} rows", file=sys.stderr, end="\r")
    print(file=sys.stderr)
    arch.close()  # refreshes planner statistics, as any writer's close does
    share = sqlite_share(share_batches, workdir) if share_batches else None
    share_rows = sum(map(len, share_batches))
    share_batches.clear()
    arch = Archive.open(archive_path)
    rows = arch.count()
    recipients, sender_domains = recipients[: args.queries], sender_domains[: args.queries]

    def by_recipient(value: str) -> object:
        return arch.search(SearchQuery(recipient=value, limit=100))

    def by_sender_domain(value: str) -> object:
        return arch.search(SearchQuery(sender="*@" + value, limit=100))

    def by_sender_suffix(value: str) -> object:
        return arch.search(SearchQuery(sender=value.removeprefix("mail.").removeprefix("em."), limit=100))

    def bare_scan(value: str) -> object:
        return [orjson.loads(doc) for (doc,) in bare.execute(
            "SELECT doc FROM rows WHERE recipient = ? LIMIT 100", (value.lower(),))]

    by_recipient(recipients[0])  # warm the page cache like a second search would
    rec_med, rec_p95 = _latency(by_recipient, recipients)
    dom_med, dom_p95 = _latency(by_sender_domain, sender_domains)
    suf_med, suf_p95 = _latency(by_sender_suffix, sender_domains)
    scan_med, scan_p95 = _latency(bare_scan, recipients[:5])
    stats_clock = Clock()
    stats_clock.run(lambda: arch.stats())
    arch.close()
    bare.close()

    first = min(args.batch, args.rows)
    size_mb = sum(Path(str(archive_path) + s).stat().st_size for s in ("", "-wal")
                  if Path(str(archive_path) + s).exists()) / 1e6
    load = os.getloadavg()[0]
    print(f"\nexotrace archive benchmark: {rows:,} rows, {size_mb:,.0f} MB, SQLite {sqlite3.sqlite_version}, "
          f"{os.cpu_count()} CPUs, load average {load:.1f}")
    print(f"{'measure':44} {'wall':>14} {'CPU time':>14} {'target':>10} {'vs baseline':>12}")
    print("-" * 98)

    def rate(label: str, n: int, clock: Clock, target: str = "", base: Clock | None = None) -> None:
        ratio = f"{(n / clock.cpu) / (args.rows / base.cpu):>11.2f}x" if base else ""
        print(f"{label:44} {n / clock.wall:>10,.0f} r/s {n / clock.cpu:>10,.0f} r/s {target:>10} {ratio:>12}")

    rate("ingest (upsert, new rows)", args.rows, ingest, ">= 30,000", baseline)
    rate("baseline: executemany into a bare table", args.rows, baseline, "", baseline)
    if share is not None:
        rate(f"upsert, first {share_rows:,} rows, fresh archive", share_rows, share[0])
        rate("  SQLite alone: its statements replayed", share_rows, share[1])
        print(f"{'  Python share of the upsert (CPU)':44} {1 - share[1].cpu / share[0].cpu:>13.0%}")
    rate(f"re-ingest, all unchanged ({first:,} rows)", first, reingest)
    rate(f"status update pass ({first:,} rows)", first, update)
    for label, med, p95 in (
        ("search by recipient address", rec_med, rec_p95),
        ("search by sender domain (*@domain)", dom_med, dom_p95),
        ("search by sender domain + subdomains", suf_med, suf_p95),
    ):
        print(f"{label + ' median':44} {med:>11.2f} ms {'':>14} {'< 50 ms':>10} {scan_med / med:>6,.0f}x less")
        print(f"{label + ' p95':44} {p95:>11.2f} ms {'':>14} {'< 50 ms':>10}")
    print(f"{'baseline: recipient scan of the bare table':44} {scan_med:>11.2f} ms")
    print(f"{'stats over all rows':44} {stats_clock.wall * 1000:>11.0f} ms")
    print(f"({len(recipients)} queries per search kind; 5 for the scan; newest 100 rows per query)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
