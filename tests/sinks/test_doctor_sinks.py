"""`exotrace doctor` checks the configured sinks without sending data: reachable, credentials accepted
(Elasticsearch: the index privileges), each failure with its fix and doctor's exit code."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sink_fakes import FakeAzureMonitor, FakeElasticsearch, FakeIntake, FakeOpenSearch, FakeSplunkHec, TlsFiles

from exotrace.sinks import SinkHealth, check_sink_health, load_sinks

DS = "logs-microsoft_exchange_online_message_trace.log-default"
SECRETS = {"ES_KEY": "a2V5aWQ6c2VjcmV0", "ES_PASS": "s3cret-pass", "HEC_TOKEN": "hec-token-1",
           "AZ_SECRET": "az-secret-1", "INTAKE_KEY": "intake-key-1", "HTTP_AUTH": "Bearer tok-1"}


@pytest.fixture(autouse=True)
def _secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in SECRETS.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("EXO_UNSET_SECRET", raising=False)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def health(tables: list[dict[str, Any]]) -> dict[str, SinkHealth]:
    return {h.name: h for h in asyncio.run(check_sink_health(load_sinks(tables)))}


def test_elasticsearch_checks_the_privileges_writing_needs() -> None:
    with FakeElasticsearch(api_key=SECRETS["ES_KEY"]) as es:
        es.monitor = False  # a least-privilege key: GET / is forbidden, writing is not
        base = {"type": "elasticsearch", "hosts": [es.url], "api_key": "env:ES_KEY"}
        tables = [{**base, "name": "ok"}, {**base, "name": "latest", "mode": "index", "index": "exo-latest"}]
        res = health(tables)
        assert res["ok"].ok, res["ok"]
        assert f"create_doc, auto_configure on {DS}: granted" in res["ok"].detail
        assert res["latest"].ok and "index, create_index on exo-latest" in res["latest"].detail

        es.index_privileges = {"create_doc"}
        bad = health(tables)["ok"]
        assert not bad.ok and bad.kind == "auth"
        assert f"lacks auto_configure on {DS}" in bad.detail and "grant the missing privileges" in bad.fix

        es.security = False  # security off: the cluster answering is all there is to check
        es.monitor = True
        off = health(tables)["ok"]
        assert off.ok and "privileges not checked" in off.detail
        assert es.errors == []
    with FakeElasticsearch(api_key="another-key") as es:
        wrong = health([{"type": "elasticsearch", "hosts": [es.url], "api_key": "env:ES_KEY"}])["elasticsearch"]
        assert not wrong.ok and wrong.kind == "auth" and "HTTP 401" in wrong.detail
        assert "api_key" in wrong.fix


def test_opensearch_splunk_sentinel_http_and_syslog(tls: TlsFiles) -> None:
    az = FakeAzureMonitor(tls, tenant="t1", client_id="app-1", client_secret=SECRETS["AZ_SECRET"], dcr="dcr-1",
                          stream="Custom-X")
    with (FakeOpenSearch(basic=("admin", SECRETS["ES_PASS"])) as osr, FakeSplunkHec(token="hec-token-1") as hec,
          FakeIntake(auth=("Authorization", SECRETS["HTTP_AUTH"])) as web, FakeIntake(intake_key="k") as sek, az):
        osr.monitor = False
        sentinel = {"type": "sentinel", "endpoint": az.url, "dcr_immutable_id": "dcr-1", "stream": "Custom-X",
                    "tenant_id": "t1", "client_id": "app-1", "client_secret": "env:AZ_SECRET",
                    "authority_host": az.url, "ca_certs": str(tls.ca)}
        res = health([
            {"type": "opensearch", "hosts": [osr.url], "username": "admin", "password": "env:ES_PASS"},
            {"type": "splunk_hec", "url": hec.url, "token": "env:HEC_TOKEN"},
            {"type": "splunk_hec", "name": "hec-bad", "url": hec.url, "token": "env:INTAKE_KEY"},
            sentinel,
            {**sentinel, "name": "az-bad", "client_secret": "env:HEC_TOKEN"},
            {"type": "http", "url": web.url + "/in", "auth_header": "env:HTTP_AUTH"},
            {"type": "http", "name": "http-bad", "url": web.url + "/in", "auth_header": "env:HEC_TOKEN"},
            {"type": "http", "name": "sekoia", "preset": "sekoia", "url": sek.url, "intake_key": "env:INTAKE_KEY"},
            {"type": "syslog", "host": "127.0.0.1", "port": _closed_port(), "timeout": 5},
            {"type": "syslog", "name": "udp", "host": "127.0.0.1", "port": _closed_port(), "protocol": "udp"},
            {"type": "stdout"},
        ])
        assert hec.events == [] and web.docs == [] and az.rows == []  # nothing was sent
        assert osr.errors == hec.errors == web.errors == sek.errors == az.errors == []
    assert res["opensearch"].ok and "authenticated" in res["opensearch"].detail
    assert res["splunk_hec"].ok and "accepts the token" in res["splunk_hec"].detail
    assert not res["hec-bad"].ok and res["hec-bad"].kind == "auth" and "Invalid token" in res["hec-bad"].detail
    assert "HEC token" in res["hec-bad"].fix
    assert res["sentinel"].ok and "token for https://monitor.azure.com/.default issued" in res["sentinel"].detail
    assert not res["az-bad"].ok and res["az-bad"].kind == "auth" and "invalid_client" in res["az-bad"].detail
    assert "client_secret" in res["az-bad"].fix
    assert res["http"].ok and "HTTP 405" in res["http"].detail
    assert not res["http-bad"].ok and res["http-bad"].kind == "auth" and "auth_header" in res["http-bad"].fix
    assert res["sekoia"].ok
    assert not res["syslog"].ok and res["syslog"].kind == "network" and "cannot connect" in res["syslog"].detail
    assert "is up and reachable" in res["syslog"].fix
    assert res["udp"].ok and "cannot be checked" in res["udp"].detail
    assert res["stdout"].ok
    text = " ".join(f"{h.detail} {h.fix}" for h in res.values())
    assert not any(v in text for v in SECRETS.values())  # secrets never appear


def test_tls_failures_say_which_option_fixes_them(tls: TlsFiles) -> None:
    with FakeElasticsearch(tls, api_key=SECRETS["ES_KEY"]) as es:
        res = health([{"type": "elasticsearch", "hosts": [es.url], "api_key": "env:ES_KEY"},
                      {"type": "elasticsearch", "name": "missing", "hosts": [es.url],
                       "api_key": "env:EXO_UNSET_SECRET"}])
    assert not res["elasticsearch"].ok and "CERTIFICATE_VERIFY_FAILED" in res["elasticsearch"].detail
    assert "set ca_certs" in res["elasticsearch"].fix and res["elasticsearch"].kind == "network"
    assert not res["missing"].ok and res["missing"].kind == "config"
    assert "EXO_UNSET_SECRET is not set" in res["missing"].detail and "[[sink]] table 'missing'" in res["missing"].fix


def _doctor(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "exotrace", "doctor", "--config", str(config)],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})


def test_doctor_command_reports_each_sink_with_a_fix(tmp_path: Path) -> None:
    with FakeElasticsearch(api_key=SECRETS["ES_KEY"]) as es, FakeSplunkHec(token="hec-token-1") as hec:
        good = (f'[archive]\npath = "{tmp_path / "a.db"}"\n\n'
                f'[[sink]]\ntype = "elasticsearch"\nhosts = ["{es.url}"]\napi_key = "env:ES_KEY"\n\n'
                f'[[sink]]\ntype = "file"\npath = "{tmp_path / "out.ndjson"}"\n')
        config = tmp_path / "exotrace.toml"
        config.write_text(good, encoding="utf-8")
        ok = _doctor(config)
        assert ok.returncode == 0, ok.stderr
        assert "ok   sink elasticsearch:" in ok.stderr and "ok   sink file:" in ok.stderr
        assert "all checks passed" in ok.stderr

        config.write_text(good + f'\n[[sink]]\ntype = "splunk_hec"\nurl = "{hec.url}"\ntoken = "env:INTAKE_KEY"\n\n'
                          f'[[sink]]\ntype = "syslog"\nhost = "127.0.0.1"\nport = {_closed_port()}\n', encoding="utf-8")
        bad = _doctor(config)
    out = " ".join(bad.stderr.split())
    assert bad.returncode == 3, bad.stderr  # a credential problem wins over an unreachable endpoint
    assert "FAIL sink splunk_hec:" in out and "Invalid token" in out and "fix: check token" in out
    assert "FAIL sink syslog:" in out and "cannot connect" in out and "is up and reachable" in out
    assert "some checks failed" in out
    assert not any(v in bad.stderr for v in SECRETS.values())
