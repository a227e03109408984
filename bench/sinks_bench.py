"""Sink throughput on loopback, as a ratio to the NDJSON file sink measured in the same run.

Each network sink ships the same documents through the full pipeline (memory buffer, batching, acks)
to its protocol fake (tests/sinks/sink_fakes.py), which runs in a separate process so the two do not
share a GIL, right after the file sink shipped them, and its ratio is taken to that file run. Syslog goes
to a discard server that parses octet-counted frames. Target: Elasticsearch >= 0.5x the file sink.

    python bench/sinks_bench.py            # 50 000 documents per sink
    python bench/sinks_bench.py -n 50000 --repeat 3 --json
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "sinks"))

from sink_fakes import (  # noqa: E402
    FakeAzureMonitor,
    FakeElasticsearch,
    FakeIntake,
    FakeOpenSearch,
    FakeSplunkHec,
    HttpFake,
    make_docs,
    make_tls,
)

from exotrace.sinks import SinkPipeline, load_sinks  # noqa: E402

AZ = {"tenant": "t", "client_id": "app", "client_secret": "s", "dcr": "dcr-1", "stream": "Custom-ExoTraceMessageTrace"}


# -- servers (child process) ------------------------------------------------------------------------


class _Discard(HttpFake):
    """Octet-counted syslog frames over TCP: count them, keep nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.frames = 0

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b" ")
                await reader.readexactly(int(head[:-1]))
                self.frames += 1
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            return
        except asyncio.CancelledError:  # shutdown: end quietly
            writer.transport.abort()


def serve(kind: str, tls_dir: str) -> None:
    tls = make_tls(Path(tls_dir)) if kind == "sentinel" else None
    fake: HttpFake = {
        "elasticsearch": lambda: FakeElasticsearch(),
        "opensearch": lambda: FakeOpenSearch(),
        "splunk_hec": lambda: FakeSplunkHec(),
        "splunk_hec_ack": lambda: FakeSplunkHec(ack_enabled=True),
        "sentinel": lambda: FakeAzureMonitor(tls, **AZ),  # type: ignore[arg-type]
        "http": lambda: FakeIntake(),
        "sekoia": lambda: FakeIntake(intake_key="k"),
        "syslog": lambda: _Discard(),
    }[kind]()
    fake.start()
    print(fake.port, flush=True)
    sys.stdin.read()  # until the parent closes our stdin
    fake.shutdown()


# -- client (parent) --------------------------------------------------------------------------------


def _table(kind: str, port: int, tmp: Path) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}"
    return {
        "file": {"type": "file", "path": str(tmp / "out.ndjson"), "rotate_bytes": 0},
        "elasticsearch": {"type": "elasticsearch", "hosts": [url]},
        "opensearch": {"type": "opensearch", "hosts": [url]},
        "splunk_hec": {"type": "splunk_hec", "url": url, "token": "env:BENCH_HEC"},
        "splunk_hec_ack": {"type": "splunk_hec", "url": url, "token": "env:BENCH_HEC", "ack": True,
                           "ack_poll_interval": 0.005},
        "sentinel": {"type": "sentinel", "endpoint": f"https://127.0.0.1:{port}", "dcr_immutable_id": AZ["dcr"],
                     "stream": AZ["stream"], "tenant_id": AZ["tenant"], "client_id": AZ["client_id"],
                     "client_secret": "env:BENCH_AZ", "authority_host": f"https://127.0.0.1:{port}",
                     "ca_certs": str(tmp / "tls" / "ca.pem")},
        "http": {"type": "http", "url": url + "/in"},
        "sekoia": {"type": "http", "preset": "sekoia", "url": url, "intake_key": "env:BENCH_KEY"},
        "syslog": {"type": "syslog", "host": "127.0.0.1", "port": port, "protocol": "tcp"},
    }[kind]


async def _ship(table: dict[str, Any], state: Path, docs: list[Any], batch: int) -> tuple[float, int]:
    p = SinkPipeline(load_sinks([table]), state)
    await p.start()
    start = time.perf_counter()
    ticket = 0
    for i in range(0, len(docs), batch):
        ticket = await p.submit(docs[i:i + batch])
    if not await p.wait_acked(ticket, timeout=600):
        raise RuntimeError(f"{table['type']}: not acknowledged")
    elapsed = time.perf_counter() - start
    spooled = p.metrics()[p.configs[0].name]["spooled"]
    await p.close()
    return elapsed, spooled


def run(kinds: list[str], n: int, batch: int) -> dict[str, dict[str, float]]:
    """One pass: each network sink is measured right after a file-sink run, and compared with that one
    (pairs taken close together are less exposed to other load on the machine)."""
    os.environ.update(BENCH_HEC="hec-token", BENCH_AZ="s", BENCH_KEY="k")
    docs = make_docs(0, n)
    results: dict[str, dict[str, float]] = {}
    file_rates: list[float] = []
    file_spooled: list[int] = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for i, kind in enumerate(kinds):
            proc = subprocess.Popen([sys.executable, __file__, "--serve", kind, str(tmp / "tls")],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            assert proc.stdout is not None
            port = int(proc.stdout.readline())
            try:
                file_s, f_spooled = asyncio.run(_ship(_table("file", 0, tmp), tmp / f"state-file-{i}", docs, batch))
                elapsed, spooled = asyncio.run(_ship(_table(kind, port, tmp), tmp / f"state-{kind}", docs, batch))
            finally:
                assert proc.stdin is not None
                proc.stdin.close()
                proc.wait(30)
            file_rates.append(n / file_s)
            file_spooled.append(f_spooled)
            results[kind] = {"docs_per_s": n / elapsed, "seconds": elapsed, "spooled": spooled,
                             "ratio_to_file": file_s / elapsed}
    results = {"file": {"docs_per_s": statistics.median(file_rates), "seconds": n / statistics.median(file_rates),
                        "spooled": statistics.median(file_spooled), "ratio_to_file": 1.0}, **results}
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=50_000, help="documents per sink")
    ap.add_argument("--batch", type=int, default=1000, help="documents per submit()")
    ap.add_argument("--sinks", default="elasticsearch,opensearch,splunk_hec,splunk_hec_ack,sentinel,http,sekoia,syslog")
    ap.add_argument("--repeat", type=int, default=1, help="runs; the median ratio per sink is reported")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--serve", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(*args.serve)
        return
    kinds = [k for k in args.sinks.split(",") if k]
    runs = [run(kinds, args.n, args.batch) for _ in range(max(1, args.repeat))]
    results = {k: {m: statistics.median(r[k][m] for r in runs) for m in runs[0][k]} for k in runs[0]}
    if args.json:
        import json

        print(json.dumps(results, indent=2))
        return
    print(f"{args.n} documents per sink, submit() batches of {args.batch}; medians of {len(runs)} run(s) "
          "(each ratio is to a file-sink run just before, then the median)")
    print(f"{'sink':<16}{'docs/s':>10}{'x file':>9}{'spooled':>9}")
    for kind, r in results.items():
        print(f"{kind:<16}{r['docs_per_s']:>10.0f}{r['ratio_to_file']:>9.2f}{r['spooled']:>9.0f}")
    es = results.get("elasticsearch")
    if es is not None:
        verdict = "met" if es["ratio_to_file"] >= 0.5 else "NOT met"
        print(f"target elasticsearch >= 0.5x file: {verdict}")


if __name__ == "__main__":
    main()
