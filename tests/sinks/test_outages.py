"""Every network sink through an outage and a restart: the destination is down for a while (connection
refused, open connections cut), the process stops with documents spooled, starts again while the
destination is still down, and then the destination comes back. Every document must arrive; with
connection refused nothing can be half-delivered, so each arrives exactly once (for Elasticsearch and
OpenSearch that also follows from the fingerprint ``_id``). Syslog's equivalent, with a real rsyslogd
restarted mid-stream, is in ``test_syslog.py``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sink_fakes import (
    FakeAzureMonitor,
    FakeElasticsearch,
    FakeIntake,
    FakeOpenSearch,
    FakeSplunkHec,
    HttpFake,
    TlsFiles,
)
from sink_helpers import FAST, eventually, make_docs, numbers

from exotrace.sinks import SinkPipeline, load_sinks, read_metrics

DS = "logs-microsoft_exchange_online_message_trace.log-default"
KEY = "a2V5aWQ6c2VjcmV0"


@dataclass
class Destination:
    fake: HttpFake
    table: dict[str, Any]
    received: Callable[[], list[dict[str, Any]]]  # the documents the destination stored


def _destination(kind: str, tls: TlsFiles) -> Destination:
    """Start the fake for a sink kind; the sink table pointing at it; how to read what it stored."""
    if kind in ("elasticsearch", "opensearch"):
        es = (FakeElasticsearch(api_key=KEY) if kind == "elasticsearch" else FakeOpenSearch(basic=("admin", "s3cret")))
        es.start()
        auth = ({"api_key": "env:ES_KEY"} if kind == "elasticsearch"
                else {"username": "admin", "password": "env:ES_PASS"})
        return Destination(es, {"type": kind, "hosts": [es.url], **auth},
                           lambda: list(es.indices.get(DS, {}).values()))
    if kind in ("splunk_hec", "splunk_hec_ack"):
        hec = FakeSplunkHec(ack_enabled=kind == "splunk_hec_ack")
        hec.start()
        table = {"type": "splunk_hec", "url": hec.url, "token": "env:HEC_TOKEN"}
        if hec.ack_enabled:
            table |= {"ack": True, "ack_poll_interval": 0.01}
        return Destination(hec, table, lambda: [e["event"] for e in hec.events])
    if kind == "sentinel":
        az = FakeAzureMonitor(tls, tenant="contoso-tenant", client_id="app-1", client_secret="az-secret",
                              dcr="dcr-0123456789abcdef", stream="Custom-ExoTraceMessageTrace")
        az.start()
        table = {"type": "sentinel", "endpoint": az.url, "dcr_immutable_id": az.dcr, "stream": az.stream,
                 "tenant_id": az.tenant, "client_id": az.client_id, "client_secret": "env:AZ_SECRET",
                 "authority_host": az.url, "ca_certs": str(tls.ca)}
        return Destination(az, table, lambda: [r["Ecs"] for r in az.rows])
    if kind == "sekoia":
        web = FakeIntake(intake_key="intake-123")
        web.start()
        return Destination(web, {"type": "http", "preset": "sekoia", "url": web.url, "intake_key": "env:INTAKE_KEY"},
                           lambda: web.docs)
    web = FakeIntake(auth=("Authorization", "Bearer t"))
    web.start()
    return Destination(web, {"type": "http", "url": web.url + "/in", "auth_header": "env:HTTP_AUTH"},
                       lambda: web.docs)


@pytest.fixture
def destination(request: pytest.FixtureRequest, tls: TlsFiles,
                monkeypatch: pytest.MonkeyPatch) -> Iterator[Destination]:
    for name, value in {"ES_KEY": KEY, "ES_PASS": "s3cret", "HEC_TOKEN": "hec-token", "AZ_SECRET": "az-secret",
                        "INTAKE_KEY": "intake-123", "HTTP_AUTH": "Bearer t"}.items():
        monkeypatch.setenv(name, value)
    dest = _destination(request.param, tls)
    try:
        yield dest
    finally:
        dest.fake.shutdown()


KINDS = ["elasticsearch", "opensearch", "splunk_hec", "splunk_hec_ack", "sentinel", "http", "sekoia"]


@pytest.mark.parametrize("destination", KINDS, indirect=True)
def test_down_for_a_while_with_a_restart_in_between_delivers_everything_once(destination: Destination,
                                                                              state_dir: Path) -> None:
    dest = destination
    table = {**dest.table, "batch_max_events": 20, **FAST}
    name = table["type"]
    tickets: list[int] = []

    async def before_restart() -> None:
        p = SinkPipeline(load_sinks([table]), state_dir)
        await p.start()
        assert await p.wait_acked(await p.submit(make_docs(0, 40)), timeout=20)
        dest.fake.stop()  # down: connection refused
        tickets.append(await p.submit(make_docs(40, 80)))
        tickets.append(await p.submit(make_docs(80, 120)))
        await eventually(lambda: p.last_errors()[name] != "" and p.metrics()[name]["failed"] > 0)
        assert not p.acked(tickets[0])
        await p.close(timeout=0.2)  # the sink is down: everything left goes to the spool

    async def after_restart() -> None:
        p = SinkPipeline(load_sinks([table]), state_dir)
        await p.start()
        new = await p.submit(make_docs(120, 160))
        await eventually(lambda: p.metrics()[name]["failed"] > failed_before)  # still down after the restart
        assert not p.acked(tickets[0]) and not p.acked(new)
        dest.fake.restart()  # back
        assert await p.wait_acked(new, timeout=30)
        assert all(p.acked(t) for t in tickets)  # the spooled documents were replayed
        await p.close()

    asyncio.run(before_restart())
    m = read_metrics(state_dir)[name]
    assert m["sent"] == 40 and m["pending"] == 80 and m["spooled"] >= 80
    failed_before = m["failed"]
    asyncio.run(after_restart())
    assert sorted(numbers(dest.received())) == list(range(160))  # every document, none twice
    assert dest.fake.errors == []
    m = read_metrics(state_dir)[name]
    assert m["sent"] == 160 and m["pending"] == 0 and m["dead_lettered"] == 0
