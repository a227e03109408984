"""``exotrace simulate`` as a user runs it: a real process, real HTTPS, Ctrl-C to stop."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from click.testing import CliRunner

from exotrace.cli.simulate import simulate, tenant_names


def test_serves_until_ctrl_c_and_prints_what_a_collector_needs(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "exotrace", "simulate", "--seed", "3", "--tenants", "2", "--speed", "10",
         "--state-dir", str(tmp_path), "--start", "2026-05-01T12:00:00Z"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 60
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("Press Ctrl-C"):
                break
        out = "".join(lines)
        assert "Press Ctrl-C" in out, out
        base = re.search(r"on (https://127\.0\.0\.1:\d+)", out).group(1)  # type: ignore[union-attr]
        ca = re.search(r"CA to trust\s+(\S+)", out).group(1)  # type: ignore[union-attr]
        assert Path(ca).parent == tmp_path
        tid, cid = re.search(r"tenant contoso: tenant_id=(\S+) client_id=(\S+)", out).groups()  # type: ignore[union-attr]
        secret = re.search(r"client_secret=(\S+)", out).group(1)  # type: ignore[union-attr]
        assert "[[tenant]]" in out and 'name = "fabrikam"' in out and f'ca_bundle = "{ca}"' in out
        assert "client_secret = \"env:EXOTRACE_SECRET_CONTOSO\"" in out
        with httpx.Client(verify=__import__("ssl").create_default_context(cafile=ca)) as c:
            r = c.post(f"{base}/{tid}/oauth2/v2.0/token", data={
                "grant_type": "client_credentials", "client_id": cid, "client_secret": secret,
                "scope": "https://graph.microsoft.com/.default"})
            assert r.status_code == 200
            tok = r.json()["access_token"]
            page = c.get(f"{base}/v1.0/admin/exchange/tracing/messageTraces", params={"$top": "5"},
                         headers={"Authorization": f"Bearer {tok}"})
            assert page.status_code == 200 and len(page.json()["value"]) == 5
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, rest
        assert "Stopping." in rest and "requests_graph_list=1" in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_sigterm_stops_cleanly(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "exotrace", "simulate", "--no-tls", "--history-days", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("Press Ctrl-C"):
                break
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0 and "Stopping." in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_usage_errors_exit_2() -> None:
    runner = CliRunner()
    for args in (["--scenario", "nope"], ["--speed", "0"], ["--start", "yesterday"], ["--tenants", "0"],
                 ["--port", "99999"], ["--port", "-1"], ["--speed", "nan"], ["--speed", "inf"]):
        result = runner.invoke(simulate, args)
        assert result.exit_code == 2, (args, result.output)
        assert "Error" in result.output
    help_text = runner.invoke(simulate, ["--help"]).output
    assert "Example:" in help_text and "--scenario" in help_text


def test_tenant_names() -> None:
    assert tenant_names(2) == ["contoso", "fabrikam"]
    assert tenant_names(10)[-1] == "tenant10" and len(set(tenant_names(10))) == 10


def test_config_snippet_loads_with_the_collector_config(tmp_path: Path, monkeypatch: object) -> None:
    from exotrace.cli.simulate import config_snippet
    from exotrace.config import load_config
    from exotrace.simulator import SimTenant, SimulatorConfig, start_simulator

    tenants = [SimTenant.default("contoso"), SimTenant.default("fabrikam")]
    with start_simulator(SimulatorConfig(tenants=tenants, history_days=1)) as sim:
        path = tmp_path / "exotrace.toml"
        path.write_text(config_snippet(sim))
        for t in sim.tenants:
            monkeypatch.setenv(f"EXOTRACE_SECRET_{t.name.upper()}", t.client_secret)  # type: ignore[attr-defined]
        cfg = load_config(path)
        assert [t.name for t in cfg.tenants] == ["contoso", "fabrikam"]
        first = cfg.tenants[0]
        assert (first.tenant_id, first.client_id) == (sim.tenants[0].tenant_id, sim.tenants[0].client_id)
        assert first.graph_url == sim.graph_url and first.rws_url == sim.rws_url
        assert str(first.ca_bundle) == sim.ca_file and "contoso.co.uk" in first.local_domains


def test_set_reaches_broken_tenants_and_unconfirmed_options(tmp_path: Path) -> None:
    """``--set`` breaks tenants on purpose (Graph 401 without the service principal, Graph 403 without the
    permission, RWS 403 without the role) and picks unconfirmed behaviours, from the command line."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "exotrace", "simulate", "--no-tls", "--tenants", "3", "--history-days", "2",
         "--start", "2026-05-01T12:00:00Z", "--set", "fabrikam.graph_permission=false",
         "--set", "northwind.service_principal=false", "--set", "*.rws_role=false",
         "--scenario", "rws_401_body=json", "--set", "quota_requests=50"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("Press Ctrl-C"):
                break
        out = "".join(lines)
        assert "options         quota_requests=50, rws_401_body=json" in out, out
        assert "tenant fabrikam: " in out and "(broken: graph_permission=false, rws_role=false)" in out
        base = re.search(r"on (http://127\.0\.0\.1:\d+)", out).group(1)  # type: ignore[union-attr]
        creds = {m[0]: (m[1], m[2]) for m in re.findall(r"tenant (\w+): tenant_id=(\S+) client_id=(\S+)", out)}
        secrets = dict(zip(creds, re.findall(r"client_secret=(\S+)", out), strict=True))
        with httpx.Client() as c:
            def tok(name: str, scope: str) -> str:
                tid, cid = creds[name]
                r = c.post(f"{base}/{tid}/oauth2/v2.0/token", data={
                    "grant_type": "client_credentials", "client_id": cid, "client_secret": secrets[name],
                    "scope": scope})
                assert r.status_code == 200, r.text
                return str(r.json()["access_token"])

            graph = f"{base}/v1.0/admin/exchange/tracing/messageTraces"
            g = "https://graph.microsoft.com/.default"
            assert c.get(graph, headers={"Authorization": f"Bearer {tok('contoso', g)}"}).status_code == 200
            forbidden = c.get(graph, headers={"Authorization": f"Bearer {tok('fabrikam', g)}"})
            assert forbidden.status_code == 403
            no_sp = c.get(graph, headers={"Authorization": f"Bearer {tok('northwind', g)}"})
            assert no_sp.status_code == 401 and "Service principal-less" in no_sp.json()["error"]["message"]
            rws = c.get(f"{base}/ecp/reportingwebservice/reporting.svc/MessageTrace",
                        headers={"Authorization": f"Bearer {tok('contoso', 'https://outlook.office365.com/.default')}"})
            assert rws.status_code == 403 and rws.json()["Message"].startswith("No permission")
            bad = c.get(f"{base}/ecp/reportingwebservice/reporting.svc/MessageTrace",
                        headers={"Authorization": "Bearer nope", "Accept": "application/json"})
            assert bad.status_code == 401 and bad.json()["odata.error"]["code"] == "Unauthorized"
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0 and "graph_403=1" in rest and "rws_403=1" in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_set_and_list_options_usage() -> None:
    runner = CliRunner()
    listed = runner.invoke(simulate, ["--list-options"])
    assert listed.exit_code == 0
    for text in ("rws_index = absolute", "rws_throttle_status = 503", "graph_beta_status = camel",
                 "quota_requests = 100", "Tenant options", "service_principal"):
        assert text in listed.output
    for args, fragment in [(["--set", "colour=red"], "unknown option 'colour'"),
                           (["--set", "rws_index"], "expected key=value"),
                           (["--set", "rws_index=diagonal"], "must be one of absolute, page"),
                           (["--set", "nobody.rws_role=false"], "no tenant 'nobody'"),
                           (["--scenario", "throttle,quota_window=-1"], "quota_window must be positive"),
                           (["--set", "speed=0"], "speed must be positive")]:
        result = runner.invoke(simulate, args)
        assert result.exit_code == 2, (args, result.output)
        assert fragment in result.output, (args, result.output)
    assert "export" in runner.invoke(simulate, ["--help"]).output


def test_a_port_in_use_is_one_line_and_exit_2() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "exotrace", "simulate", "--port", str(port)],
                              capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "cannot listen on 127.0.0.1" in done.stderr
    assert "Traceback" not in done.stderr
