"""Token and API calls go through the configured HTTP proxy (CONNECT), with TLS verified end to end."""

from __future__ import annotations

import asyncio
import select
import socket
import socketserver
import tempfile
import threading
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from collect_helpers import check_complete, collect, write_config

from exotrace.collect import run_collector
from exotrace.config import load_config
from exotrace.net import make_requests_session
from exotrace.simulator import SimTenant, SimulatorConfig, start_simulator


class _Proxy(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Tunnel)
        self.connects: list[str] = []


class _Tunnel(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.request.recv(4096)
            if not chunk:
                return
            head += chunk
        line = head.split(b"\r\n", 1)[0].decode()
        method, target, _ = line.split(" ", 2)
        if method != "CONNECT":
            self.request.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            return
        self.server.connects.append(target)  # type: ignore[attr-defined]
        host, port = target.rsplit(":", 1)
        upstream = socket.create_connection((host, int(port)))
        self.request.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        socks = [self.request, upstream]
        try:
            while True:
                ready, _, _ = select.select(socks, [], [], 30)
                if not ready:
                    return
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    (upstream if s is self.request else self.request).sendall(data)
        finally:
            upstream.close()


def test_collect_through_proxy(tmp_path: Path) -> None:
    proxy = _Proxy()
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        with start_simulator(SimulatorConfig(seed=13, speed=600.0, rows_per_day=1000,
                                             tenants=[SimTenant.default("contoso", 13)])) as sim:
            port = proxy.server_address[1]
            path = write_config(sim, tmp_path, extra=f'proxy = "http://127.0.0.1:{port}"')
            reports, t0, t_end = collect(sim, path, since=timedelta(days=1))
            assert reports[0].ok, reports[0].error
            check_complete(sim, tmp_path / "archive.db", sim.tenants[0], t0, t_end)
            sim_port = sim.base_url.rsplit(":", 1)[1]
    finally:
        proxy.shutdown()
        proxy.server_close()
    # MSAL (token, discovery) and httpx (Graph) both tunnelled through the proxy
    assert len(proxy.connects) >= 2 and all(c.endswith(f":{sim_port}") for c in proxy.connects)


def test_dead_proxy_is_reported_not_bypassed(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    with start_simulator(SimulatorConfig(seed=13, speed=600.0, rows_per_day=100,
                                         tenants=[SimTenant.default("contoso", 13)])) as sim:
        path = write_config(sim, tmp_path, extra=f'proxy = "http://127.0.0.1:{dead}"')
        cfg = load_config(path)
        stop = asyncio.Event()

        async def run() -> list[object]:
            async def stopper() -> None:
                await asyncio.sleep(1)  # before the windows' retries are used up
                stop.set()

            task = asyncio.create_task(stopper())
            out = await run_collector(cfg, mode="once", since=timedelta(hours=2), clock=sim.clock, stop=stop)
            task.cancel()
            return out

        reports = asyncio.run(run())
        served = sim.stats()
    assert served.get("tokens_issued", 0) == 0 and served.get("requests_graph_list", 0) == 0
    assert reports[0].windows_read == 0  # type: ignore[attr-defined]
    # stopped before done: not a success (exit 4), and the summary says why
    assert not reports[0].ok and reports[0].exit_code == 4  # type: ignore[attr-defined]
    assert "stopped before every window was read" in reports[0].error  # type: ignore[attr-defined]
    assert "cannot reach" in reports[0].error  # type: ignore[attr-defined]


def test_the_token_session_trusts_the_ca_bundle_without_a_file_or_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MSAL's requests session verifies with an in-memory context (certifi's roots plus ``ca_bundle``): no
    CA file in the temp folder that another user could swap, and ``REQUESTS_CA_BUNDLE`` cannot widen it."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    tempfile.tempdir = None  # read TMPDIR again
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "elsewhere.pem"))
    try:
        with start_simulator(SimulatorConfig(seed=13, speed=600.0, rows_per_day=10,
                                             tenants=[SimTenant.default("contoso", 13)])) as sim:
            url = sim.login_url + "/contoso/v2.0/.well-known/openid-configuration"
            trusted = make_requests_session(ca_bundle=sim.ca_file)
            assert trusted.get(url, timeout=10).status_code < 500
            with pytest.raises(requests.exceptions.SSLError):  # without the bundle: the simulator's CA is unknown
                make_requests_session().get(url, timeout=10)
            monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(sim.ca_file))
            with pytest.raises(requests.exceptions.SSLError):  # ... and the environment does not change that
                make_requests_session().get(url, timeout=10)
    finally:
        tempfile.tempdir = None
    assert list(tmp_path.iterdir()) == []
