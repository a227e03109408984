"""Elasticsearch and OpenSearch sinks against protocol-faithful bulk API fakes, with faults and restarts."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
from sink_fakes import RESET, FakeElasticsearch, FakeOpenSearch, Response, TlsFiles
from sink_helpers import FAST, eventually, make_doc, make_docs, numbers

from exotrace.sinks import SinkPipeline, load_sinks, read_metrics
from exotrace.sinks._bulk import content_id

DS = "logs-microsoft_exchange_online_message_trace.log-default"


@pytest.fixture(autouse=True)
def _secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ES_KEY", "a2V5aWQ6c2VjcmV0")
    monkeypatch.setenv("ES_PASS", "s3cret")


def es_table(url: str, **kw: Any) -> dict[str, Any]:
    return {"type": "elasticsearch", "hosts": [url], "api_key": "env:ES_KEY", **FAST, **kw}


def test_data_stream_request_shape(state_dir: Path) -> None:
    async def main() -> None:
        with FakeElasticsearch(api_key="a2V5aWQ6c2VjcmV0") as es:
            p = SinkPipeline(load_sinks([es_table(es.url)]), state_dir)
            await p.start()
            docs = make_docs(0, 25)
            t = await p.submit(docs)
            assert await p.wait_acked(t, timeout=10)
            await p.close()
            assert es.errors == []
            bulk = [r for r in es.requests if r.path.endswith("/_bulk")]
            assert bulk[0].path == f"/{DS}/_bulk"
            assert bulk[0].headers["content-type"] == "application/vnd.elasticsearch+x-ndjson; compatible-with=8"
            assert bulk[0].headers["authorization"] == "ApiKey a2V5aWQ6c2VjcmV0"
            lines = bulk[0].body.split(b"\n")
            assert orjson.loads(lines[0]) == {"create": {"_id": docs[0].fingerprint}}
            assert orjson.loads(lines[1]) == docs[0].doc
            assert set(es.indices[DS]) == {d.fingerprint for d in docs}

    asyncio.run(main())


def test_faults_and_restart_deliver_everything_once(state_dir: Path) -> None:
    """Partial bulk failures, whole-request 429/5xx, resets, a down period and a restart."""
    docs = make_docs(0, 300)
    fp = [d.fingerprint for d in docs]
    with FakeElasticsearch(api_key="a2V5aWQ6c2VjcmV0") as es:
        es.preload(DS, fp[7], docs[7].doc)  # already indexed by Elastic's own integration: 409
        es.item_faults = {fp[1]: [429], fp[2]: [500, 503], fp[3]: [429, 429, 429]}
        es.reject_ids = {fp[4], fp[150]}
        es.script = [Response.json({"error": "too many"}, 429, {"Retry-After": "0"}), 503, RESET]

        async def first() -> list[int]:
            p = SinkPipeline(load_sinks([es_table(es.url, batch_max_events=50)]), state_dir)
            await p.start()
            t1 = await p.submit(docs[:100])
            assert await p.wait_acked(t1, timeout=20)
            es.down = True  # connections reset from now on
            t2 = await p.submit(docs[100:200])
            t3 = await p.submit(docs[200:250])
            await asyncio.sleep(0.1)
            assert not p.acked(t2) and not p.acked(t3)
            await p.close(timeout=0.2)  # the sink is down: spool the rest
            return [t1, t2, t3]

        tickets = asyncio.run(first())
        es.down = False

        async def second() -> None:
            p = SinkPipeline(load_sinks([es_table(es.url, batch_max_events=50)]), state_dir)
            await p.start()
            t4 = await p.submit(docs[250:300])
            assert await p.wait_acked(t4, timeout=20)
            assert all(p.acked(t) for t in tickets)
            await p.close()

        asyncio.run(second())
        assert es.errors == []
        indexed = es.indices[DS]
        assert set(indexed) == set(fp) - {fp[4], fp[150]}
        assert len(indexed) == 298  # none twice: _id = fingerprint
        assert sorted(numbers(indexed.values())) == [n for n in range(300) if n not in (4, 150)]
    dead = [orjson.loads(x) for x in (state_dir / "dead-letter" / "elasticsearch.ndjson").read_bytes().splitlines()]
    assert sorted(d["document"]["microsoft"]["online_message_trace"]["n"] for d in dead) == [4, 150]
    assert all(d["reason"].startswith("HTTP 400 document_parsing_exception") for d in dead)
    m = read_metrics(state_dir)["elasticsearch"]
    assert m["sent"] == 298 and m["dead_lettered"] == 2 and m["retried"] > 0 and m["spooled"] >= 150


def test_index_mode_keeps_latest_state_per_row(state_dir: Path) -> None:
    async def main() -> None:
        with FakeElasticsearch(basic=("elastic", "s3cret")) as es:
            table = {"type": "elasticsearch", "hosts": [es.url], "username": "elastic", "password": "env:ES_PASS",
                     "mode": "index", "index": "exo-latest", **FAST}
            p = SinkPipeline(load_sinks([table]), state_dir)
            await p.start()
            await p.submit([make_doc(1, status="Pending"), make_doc(2, status="Pending")])
            t = await p.submit([make_doc(1, status="Delivered")])
            assert await p.wait_acked(t, timeout=10)
            await p.close()
            latest = es.indices["exo-latest"]
            assert set(latest) == {make_doc(1).key, make_doc(2).key}
            assert latest[make_doc(1).key]["microsoft"]["online_message_trace"]["Status"] == "Delivered"
            bulk = next(r for r in es.requests if r.path.endswith("/_bulk"))
            assert orjson.loads(bulk.body.split(b"\n")[0]) == {
                "index": {"_id": make_doc(1).key, "version": 1, "version_type": "external_gte"}}
            assert es.errors == []

    asyncio.run(main())


def test_tls_with_ca_and_auth_failure_keeps_data(state_dir: Path, tls: TlsFiles) -> None:
    async def main() -> None:
        with FakeElasticsearch(tls, api_key="a2V5aWQ6c2VjcmV0") as es:
            ok = es_table(es.url, name="tls", ca_certs=str(tls.ca))
            no_ca = es_table(es.url, name="untrusted")
            p = SinkPipeline(load_sinks([ok, no_ca]), state_dir)
            await p.start()
            t = await p.submit(make_docs(0, 5))
            await eventually(lambda: p.metrics()["tls"]["sent"] == 5
                             and "CERTIFICATE_VERIFY_FAILED" in p.last_errors()["untrusted"])
            assert not p.acked(t)  # the sink without the CA cannot verify the certificate
            await p.close(timeout=0.1)

        with FakeElasticsearch(api_key="other") as es:
            p = SinkPipeline(load_sinks([es_table(es.url, name="badkey")]), state_dir / "2")
            await p.start()
            t = await p.submit(make_docs(0, 3))
            await eventually(lambda: "401" in p.last_errors()["badkey"])
            assert not p.acked(t)
            m = p.metrics()["badkey"]
            assert m["dead_lettered"] == 0 and m["pending"] == 3  # operator must act; nothing dropped
            await p.close(timeout=0.1)

    asyncio.run(main())


def test_opensearch_partial_failures_and_dedupe(state_dir: Path) -> None:
    docs = make_docs(0, 60)
    with FakeOpenSearch(basic=("admin", "s3cret")) as osr:
        osr.item_faults = {docs[3].fingerprint: [429], docs[10].fingerprint: [503]}
        osr.reject_ids = {docs[20].fingerprint}
        osr.script = [RESET, 500]
        table = {"type": "opensearch", "hosts": [osr.url], "username": "admin", "password": "env:ES_PASS", **FAST}

        async def main() -> None:
            p = SinkPipeline(load_sinks([table]), state_dir)
            await p.start()
            t = await p.submit(docs)
            assert await p.wait_acked(t, timeout=20)
            t2 = await p.submit(docs[:30])  # sent again: 409 each, delivered, not duplicated
            assert await p.wait_acked(t2, timeout=20)
            await p.close()

        asyncio.run(main())
        assert osr.errors == []
        assert len(osr.indices[DS]) == 59
        assert read_metrics(state_dir)["opensearch"]["dead_lettered"] == 2  # sent twice, rejected twice
        bulk = next(r for r in osr.requests if r.path.endswith("/_bulk"))
        assert bulk.headers["content-type"] == "application/x-ndjson"


class _AnswerLost(FakeElasticsearch):
    """Indexes a bulk request, then resets the connection instead of answering (``lose`` times)."""

    lose = 2

    def handle(self, req: Any) -> Any:
        resp = super().handle(req)
        if req.path.endswith("/_bulk") and self.lose:
            self.lose -= 1
            return RESET
        return resp


def test_pipeline_error_documents_get_an_id_so_a_lost_answer_cannot_duplicate_them(state_dir: Path) -> None:
    """No fingerprint (a pipeline error): the ``_id`` is the SHA-1 of the document, so the retry after an
    answer lost once the documents were indexed is a 409, not a second copy."""
    from exotrace.model import Document

    async def main() -> None:
        with _AnswerLost(api_key="a2V5aWQ6c2VjcmV0") as es:
            p = SinkPipeline(load_sinks([es_table(es.url)]), state_dir)
            await p.start()
            errors = [Document(doc={"event": {"kind": "pipeline_error"}, "error": {"message": f"bad date {i}"}},
                               key="", fingerprint="", status="") for i in range(3)]
            t = await p.submit([*make_docs(0, 5), *errors])
            assert await p.wait_acked(t, timeout=30)
            await p.close()
            bulks = [r for r in es.requests if r.path.endswith("/_bulk")]
            assert len(bulks) == 3  # two answers lost, the third seen
            first_op = orjson.loads(bulks[0].body.split(b"\n")[10])["create"]
            assert first_op["_id"] == content_id(errors[0].json)
            assert es.errors == [] and len(es.indices[DS]) == 8

    asyncio.run(main())


def test_operator_item_errors_are_retried_not_dead_lettered(state_dir: Path) -> None:
    """A read-only index (403 cluster_block_exception per item) must not dead-letter anything."""
    docs = make_docs(0, 10)
    with FakeElasticsearch(api_key="a2V5aWQ6c2VjcmV0") as es:
        es.item_faults = {d.fingerprint: [403, 403] for d in docs}

        async def main() -> None:
            p = SinkPipeline(load_sinks([es_table(es.url)]), state_dir)
            await p.start()
            t = await p.submit(docs)
            assert await p.wait_acked(t, timeout=10)
            await p.close()

        asyncio.run(main())
        assert len(es.indices[DS]) == 10
    m = read_metrics(state_dir)["elasticsearch"]
    assert m["dead_lettered"] == 0 and m["retried"] == 20


def test_cloud_id_resolves_to_the_deployment_host() -> None:
    import base64

    from exotrace.sinks.elasticsearch import ElasticsearchSink

    cloud_id = "exo:" + base64.b64encode(b"westeurope.azure.elastic-cloud.com:443$abc123$kib456").decode()
    (cfg,) = load_sinks([{"type": "elasticsearch", "cloud_id": cloud_id, "api_key": "env:ES_KEY"}])
    sink = ElasticsearchSink(cfg)
    asyncio.run(sink.start())
    node = sink._client.transport.node_pool.all()[0].config
    assert (node.scheme, node.host, node.port) == ("https", "abc123.westeurope.azure.elastic-cloud.com", 443)
    asyncio.run(sink.close())


def test_opensearch_tls_api_key_index_mode_and_healthcheck(state_dir: Path, tls: TlsFiles) -> None:
    from exotrace.sinks import check_sinks

    with FakeOpenSearch(tls, api_key="a2V5aWQ6c2VjcmV0") as osr:
        table = {"type": "opensearch", "hosts": [osr.url], "api_key": "env:ES_KEY", "ca_certs": str(tls.ca),
                 "mode": "index", "index": "exo-latest", **FAST}

        async def main() -> None:
            p = SinkPipeline(load_sinks([table]), state_dir)
            await p.start()
            await p.submit([make_doc(1, status="Pending"), make_doc(2, status="Pending")])
            t = await p.submit([make_doc(1, status="Delivered")])
            assert await p.wait_acked(t, timeout=10)
            await p.close()

        asyncio.run(main())
        assert osr.errors == []
        latest = osr.indices["exo-latest"]
        assert set(latest) == {make_doc(1).key, make_doc(2).key}
        assert latest[make_doc(1).key]["microsoft"]["online_message_trace"]["Status"] == "Delivered"
        bulk = next(r for r in osr.requests if r.path.endswith("/_bulk"))
        assert bulk.path == "/exo-latest/_bulk" and bulk.headers["authorization"] == "ApiKey a2V5aWQ6c2VjcmV0"
        assert asyncio.run(check_sinks(load_sinks([table]))) == {"opensearch": ""}
        untrusted = {k: v for k, v in table.items() if k != "ca_certs"}
        assert "CERTIFICATE_VERIFY_FAILED" in asyncio.run(check_sinks(load_sinks([untrusted])))["opensearch"]


@pytest.mark.parametrize("fake", [FakeElasticsearch, FakeOpenSearch])
def test_index_mode_newest_state_wins_over_a_retried_older_one(state_dir: Path, fake: type) -> None:
    """An older state whose item is retried (429) after a newer one was indexed must not overwrite it:
    the observation version goes with each ``index`` op and the older one gets a 409."""
    async def main() -> None:
        with fake() as es:
            table = {"type": "opensearch" if fake is FakeOpenSearch else "elasticsearch", "hosts": [es.url],
                     "mode": "index", "index": "exo-latest", "concurrency": 2, **FAST}
            p = SinkPipeline(load_sinks([table]), state_dir)
            await p.start()
            key = make_doc(1).key
            es.item_faults[key] = [429]  # the first attempt of the Pending state is refused
            pending = make_doc(1, status="Pending")
            pending.observed_at = "2026-03-01T00:05:00Z"
            delivered = make_doc(1, status="Delivered")
            delivered.observed_at = "2026-03-01T00:10:00Z"
            await p.submit([pending])
            t = await p.submit([delivered])
            assert await p.wait_acked(t, timeout=10)
            # the same row twice in one batch, the older item failing once: still the newest state
            es.item_faults[make_doc(2).key] = [503]
            older = make_doc(2, status="Quarantined")
            older.observed_at = "2026-03-01T00:01:00Z"
            newer = make_doc(2, status="Delivered")
            newer.observed_at = "2026-03-01T00:02:00Z"
            t = await p.submit([older, newer])
            assert await p.wait_acked(t, timeout=10)
            await p.close()
            latest = es.indices["exo-latest"]
            assert latest[key]["microsoft"]["online_message_trace"]["Status"] == "Delivered"
            assert latest[make_doc(2).key]["microsoft"]["online_message_trace"]["Status"] == "Delivered"
            bulk = next(r for r in es.requests if r.path.endswith("/_bulk"))
            meta = orjson.loads(bulk.body.split(b"\n")[0])["index"]
            assert meta["version_type"] == "external_gte" and meta["version"] > 1
            assert es.errors == []
            assert p.metrics()["elasticsearch" if fake is FakeElasticsearch else "opensearch"]["dead_lettered"] == 0

    asyncio.run(main())
