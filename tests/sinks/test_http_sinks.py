"""Splunk HEC, Sentinel (Logs Ingestion API) and generic HTTP / Sekoia sinks against their fakes."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from sink_fakes import RESET, FakeAzureMonitor, FakeIntake, FakeSplunkHec, TlsFiles
from sink_helpers import FAST, eventually, make_doc, make_docs, numbers

from exotrace.model import Document
from exotrace.sinks import SinkPipeline, load_sinks, read_metrics


@pytest.fixture(autouse=True)
def _secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEC_TOKEN", "hec-token")
    monkeypatch.setenv("AZ_SECRET", "az-secret")
    monkeypatch.setenv("INTAKE_KEY", "intake-123")
    monkeypatch.setenv("HTTP_AUTH", "Bearer tok-9")


async def _deliver(tables: list[dict[str, Any]], state_dir: Path, batches: list[list[Any]],
                   timeout: float = 20) -> SinkPipeline:
    p = SinkPipeline(load_sinks(tables), state_dir)
    await p.start()
    tickets = [await p.submit(b) for b in batches]
    assert await p.wait_acked(tickets[-1], timeout=timeout)
    await p.close()
    return p


# -- Splunk HEC -------------------------------------------------------------------------------------


def test_hec_envelopes_and_faults(state_dir: Path, tls: TlsFiles) -> None:
    docs = make_docs(0, 40)
    with FakeSplunkHec(tls) as hec:
        hec.script = [503, RESET, 429]
        hec.invalid_markers = {"Report 13"}
        table = {"type": "splunk_hec", "url": hec.url, "token": "env:HEC_TOKEN", "index": "o365",
                 "host": "collector1", "ca_certs": str(tls.ca), "batch_max_events": 16, **FAST}
        asyncio.run(_deliver([table], state_dir, [docs]))
        assert hec.errors == []
        got = {e["event"]["microsoft"]["online_message_trace"]["n"]: e for e in hec.events}
        assert set(got) == set(range(40)) - {13}
        ev = got[0]
        assert ev["sourcetype"] == "o365:reporting:messagetrace"
        assert ev["index"] == "o365" and ev["host"] == "collector1" and ev["source"] == "exotrace"
        assert ev["time"] == 1772323200.0  # 2026-03-01T00:00:00.000Z
        assert got[61 % 40]["time"] == pytest.approx(1772323200 + 21 + 0.021)
        assert ev["event"] == docs[0].doc
        first = next(r for r in hec.requests if r.path == "/services/collector/event")
        assert first.headers["authorization"] == "Splunk hec-token"
        assert first.headers["content-type"] == "application/json"
        dead = (state_dir / "dead-letter" / "splunk_hec.ndjson").read_bytes().splitlines()
        assert len(dead) == 1 and b"Invalid data format" in dead[0]


def test_hec_indexer_acknowledgement(state_dir: Path) -> None:
    docs = make_docs(0, 30)
    with FakeSplunkHec(ack_enabled=True, ack_after_polls=2) as hec:
        table = {"type": "splunk_hec", "url": hec.url, "token": "env:HEC_TOKEN", "ack": True,
                 "ack_poll_interval": 0.01, "batch_max_events": 10, **FAST}

        async def main() -> None:
            p = SinkPipeline(load_sinks([table]), state_dir)
            await p.start()
            hec.lose_unacked = True  # indexer never confirms: not acked, data kept
            t = await p.submit(docs[:10])
            assert not await p.wait_acked(t, timeout=0.3)
            hec.lose_unacked = False
            assert await p.wait_acked(t, timeout=20)
            t2 = await p.submit(docs[10:])
            assert await p.wait_acked(t2, timeout=20)
            await p.close()

        # a short ack timeout makes the unconfirmed batch be resent
        table["ack_timeout"] = 0.05
        asyncio.run(main())
        assert hec.errors == []
        assert sorted(set(numbers([e["event"] for e in hec.events]))) == list(range(30))
        channels = {r.headers.get("x-splunk-request-channel") for r in hec.requests}
        assert len(channels) == 1 and None not in channels
        assert any(r.path == "/services/collector/ack" and r.json() == {"acks": [0]} for r in hec.requests)


# -- Sentinel ---------------------------------------------------------------------------------------


def _sentinel_table(az: FakeAzureMonitor, tls: TlsFiles, **kw: Any) -> dict[str, Any]:
    return {"type": "sentinel", "endpoint": az.url, "dcr_immutable_id": az.dcr, "stream": az.stream,
            "tenant_id": az.tenant, "client_id": az.client_id, "client_secret": "env:AZ_SECRET",
            "authority_host": az.url, "ca_certs": str(tls.ca), **FAST, **kw}


def test_sentinel_logs_ingestion(state_dir: Path, tls: TlsFiles) -> None:
    docs = make_docs(0, 400, pad=4000)  # ~5 KB each: needs several requests under 1 MB
    az = FakeAzureMonitor(tls, tenant="contoso-tenant", client_id="app-1", client_secret="az-secret",
                          dcr="dcr-0123456789abcdef", stream="Custom-ExoTraceMessageTrace")
    with az:
        az.script = [429, RESET, 503]
        asyncio.run(_deliver([_sentinel_table(az, tls, batch_max_events=400)], state_dir, [docs]))
        assert sorted(numbers([r["Ecs"] for r in az.rows])) == list(range(400))
        assert az.errors == []  # after reading rows: that checks TimeGenerated in each
        assert max(az.body_sizes) < 1_000_000 and len(az.body_sizes) >= 3
        assert az.token_requests == 1  # cached by MSAL
        row = next(r for r in az.rows if r["Ecs"]["microsoft"]["online_message_trace"]["n"] == 0)
        assert row["TimeGenerated"] == "2026-03-01T00:00:00.000Z"
        assert row["SenderAddress"] == "sender@fabrikam.com" and row["RecipientAddress"] == "user0@contoso.com"
        assert row["Status"] == "Delivered" and row["Size"] == 1000 and row["EventId"] == docs[0].fingerprint
        assert row["RowKey"] == docs[0].key and row["Direction"] == "inbound"
        ingest = next(r for r in az.requests if "/dataCollectionRules/" in r.path)
        assert ingest.target == ("/dataCollectionRules/dcr-0123456789abcdef/streams/Custom-ExoTraceMessageTrace"
                                 "?api-version=2023-01-01")


def test_sentinel_pipeline_error_document_gets_a_time_generated(state_dir: Path, tls: TlsFiles) -> None:
    """An error document has no @timestamp; the table still needs TimeGenerated (the fake checks it)."""
    error = Document(doc={"event": {"kind": "pipeline_error", "original": "x"}, "error": {"message": ["bad"]}})
    az = FakeAzureMonitor(tls, tenant="contoso-tenant", client_id="app-1", client_secret="az-secret",
                          dcr="dcr-0123456789abcdef", stream="Custom-ExoTraceMessageTrace")
    with az:
        asyncio.run(_deliver([_sentinel_table(az, tls)], state_dir, [[error, *make_docs(0, 2)]]))
        rows = az.rows
        assert az.errors == [] and len(rows) == 3
        assert all(r["TimeGenerated"].endswith("Z") for r in rows)


def test_sentinel_bad_secret_keeps_data(state_dir: Path, tls: TlsFiles, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZ_SECRET", "wrong")
    az = FakeAzureMonitor(tls, tenant="t1", client_id="app-1", client_secret="az-secret", dcr="dcr-1",
                          stream="Custom-X")

    async def main() -> None:
        p = SinkPipeline(load_sinks([_sentinel_table(az, tls)]), state_dir)
        await p.start()
        t = await p.submit(make_docs(0, 3))
        await eventually(lambda: "invalid_client" in p.last_errors()["sentinel"])
        assert not p.acked(t)
        assert "wrong" not in p.last_errors()["sentinel"]
        await p.close(timeout=0.1)

    with az:
        asyncio.run(main())
    assert az.rows == []
    assert read_metrics(state_dir)["sentinel"]["spooled"] == 3


# -- generic HTTP and Sekoia ------------------------------------------------------------------------


def test_http_ndjson_and_json_with_auth_header(state_dir: Path) -> None:
    with FakeIntake(auth=("Authorization", "Bearer tok-9")) as web:
        web.script = [RESET, 500]
        tables = [
            {"type": "http", "name": "nd", "url": web.url + "/in", "auth_header": "env:HTTP_AUTH",
             "headers": {"X-Source": "exotrace"}, **FAST},
            {"type": "http", "name": "arr", "url": web.url + "/in", "format": "json", "gzip": True,
             "auth_header": "env:HTTP_AUTH", **FAST},
        ]
        asyncio.run(_deliver(tables, state_dir, [make_docs(0, 20)]))
        assert web.errors == []
        assert sorted(numbers(web.docs)) == sorted(list(range(20)) * 2)
        cts = {r.headers["content-type"] for r in web.requests}
        assert cts == {"application/x-ndjson", "application/json"}
        nd = next(r for r in web.requests if r.headers["content-type"] == "application/x-ndjson")
        assert nd.headers["x-source"] == "exotrace" and nd.headers["authorization"] == "Bearer tok-9"


def test_http_rejected_document_is_isolated(state_dir: Path) -> None:
    with FakeIntake(reject=lambda d: d["email"]["subject"] == "Report 6") as web:
        asyncio.run(_deliver([{"type": "http", "url": web.url, "batch_max_events": 10, **FAST}], state_dir,
                             [make_docs(0, 10)]))
        assert sorted(numbers(web.docs)) == [n for n in range(10) if n != 6]
        dead = [orjson.loads(x) for x in (state_dir / "dead-letter" / "http.ndjson").read_bytes().splitlines()]
        assert [d["document"]["email"]["subject"] for d in dead] == ["Report 6"]
        assert "HTTP 400" in dead[0]["reason"]


def test_sekoia_preset(state_dir: Path) -> None:
    with FakeIntake(intake_key="intake-123") as web:
        web.script = [429]
        table = {"type": "http", "preset": "sekoia", "url": web.url, "intake_key": "env:INTAKE_KEY", **FAST}
        asyncio.run(_deliver([table], state_dir, [make_docs(0, 12)]))
        assert web.errors == []
        assert sorted(numbers(web.docs)) == list(range(12))
        batch = [r for r in web.requests if r.path == "/batch"]
        assert batch and batch[-1].json()["intake_key"] == "intake-123"
        assert isinstance(batch[-1].json()["jsons"][0], str)


def test_hec_wrong_index_keeps_data(state_dir: Path) -> None:
    with FakeSplunkHec() as hec:
        hec.indexes = {"o365"}
        table = {"type": "splunk_hec", "url": hec.url, "token": "env:HEC_TOKEN", "index": "typo", **FAST}

        async def main() -> None:
            p = SinkPipeline(load_sinks([table]), state_dir)
            await p.start()
            t = await p.submit(make_docs(0, 5))
            await eventually(lambda: "Incorrect index" in p.last_errors()["splunk_hec"])
            assert not p.acked(t)
            assert p.metrics()["splunk_hec"]["dead_lettered"] == 0
            await p.close(timeout=0.1)

        asyncio.run(main())
        assert hec.events == []


def test_sentinel_document_over_the_request_limit_is_dead_lettered(state_dir: Path, tls: TlsFiles) -> None:
    az = FakeAzureMonitor(tls, tenant="t1", client_id="app-1", client_secret="az-secret", dcr="dcr-1",
                          stream="Custom-X")
    docs = make_docs(0, 6, pad=3000) + [make_doc(6, pad=30_000)] + make_docs(7, 12, pad=3000)
    with az:
        asyncio.run(_deliver([_sentinel_table(az, tls, max_request_bytes=20_000)], state_dir, [docs]))
        assert az.errors == []
        assert sorted(numbers([r["Ecs"] for r in az.rows])) == [n for n in range(12) if n != 6]
        assert max(az.body_sizes) <= 20_000 and len(az.body_sizes) >= 3
    dead = [orjson.loads(x) for x in (state_dir / "dead-letter" / "sentinel.ndjson").read_bytes().splitlines()]
    assert [d["document"]["microsoft"]["online_message_trace"]["n"] for d in dead] == [6]
    assert "over the 20000-byte request limit" in dead[0]["reason"]


def test_hec_gzip_and_source(state_dir: Path) -> None:
    with FakeSplunkHec() as hec:
        table = {"type": "splunk_hec", "url": hec.url, "token": "env:HEC_TOKEN", "gzip": True,
                 "source": "m365:tenant1", "sourcetype": "custom:trace", **FAST}
        asyncio.run(_deliver([table], state_dir, [make_docs(0, 8)]))
        assert hec.errors == []
        assert sorted(numbers([e["event"] for e in hec.events])) == list(range(8))
        assert {(e["source"], e["sourcetype"]) for e in hec.events} == {("m365:tenant1", "custom:trace")}
        assert "index" not in hec.events[0] and "host" not in hec.events[0]  # the token's defaults apply
        ev = next(r for r in hec.requests if r.path == "/services/collector/event")
        assert ev.headers["content-encoding"] == "gzip"


class _SlowIntake(FakeIntake):
    def handle(self, req: Any) -> Any:
        time.sleep(0.5)
        return super().handle(req)


def test_a_full_best_effort_spool_counts_only_what_it_really_dropped(state_dir: Path) -> None:
    """Spool segments already read (their documents in flight) can be deleted to make room, but their
    documents are still delivered: each document is either received or counted dropped, and a flush that
    says "empty" leaves nothing behind in the spool."""
    async def main() -> None:
        with _SlowIntake() as web:
            line = len(make_doc(1).json) + 40
            p = SinkPipeline(load_sinks([{"type": "http", "url": web.url + "/in", "required": False,
                                          "buffer_max_events": 1, "batch_max_events": 10,
                                          "spool_max_bytes": 32 * line, **FAST}]), state_dir)
            await p.start()
            for i in range(0, 40, 10):
                await p.submit(make_docs(i, i + 10))
                await asyncio.sleep(0.1)
            assert await p.flush(30)
            dropped = p.metrics()["http"]["dropped"]
            await p.close()
            got = numbers(web.docs)
        assert len(got) == len(set(got)) and len(got) + dropped == 40
        left = sum(len(f.read_bytes().splitlines()) for f in (state_dir / "spool" / "http").glob("*.seg"))
        assert left == 0

    asyncio.run(main())


def test_a_best_effort_sink_that_never_answers_does_not_hold_up_flush(state_dir: Path, tmp_path: Path) -> None:
    """A best-effort intake that accepts the connection and never answers: flush stops waiting for it after
    the stall grace, not its 60 s request timeout; the required file sink has every document."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # connections complete in the kernel; nothing ever reads or answers
        port = silent.getsockname()[1]

        async def main() -> tuple[bool, float]:
            p = SinkPipeline(load_sinks([
                {"type": "file", "name": "copy", "path": str(tmp_path / "out.ndjson")},
                {"type": "http", "name": "silent", "url": f"http://127.0.0.1:{port}/in", "required": False,
                 "timeout": 60, **FAST},
            ]), state_dir)
            await p.start()
            await p.submit(make_docs(0, 20))
            loop = asyncio.get_running_loop()
            began = loop.time()
            done = await p.flush(45)
            waited = loop.time() - began
            await p.close(timeout=1)
            return done, waited

        done, waited = asyncio.run(main())
    assert not done and waited < 30  # gave up on the silent sink well before its request timeout
    assert len((tmp_path / "out.ndjson").read_bytes().splitlines()) == 20
    assert read_metrics(state_dir)["silent"]["pending"] == 20  # kept for the next run
