"""Token and API calls go through the configured HTTP proxy (CONNECT), with TLS verified end to end."""

from __future__ import annotations

import asyncio
import hashlib
import os
import select
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
from datetime import timedelta
from pathlib import Path

import certifi
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
                await asyncio.sleep(3)
                stop.set()

            task = asyncio.create_task(stopper())
            out = await run_collector(cfg, mode="once", since=timedelta(hours=2), clock=sim.clock, stop=stop)
            task.cancel()
            return out

        reports = asyncio.run(run())
        served = sim.stats()
    assert served.get("tokens_issued", 0) == 0 and served.get("requests_graph_list", 0) == 0
    assert reports[0].windows_read == 0  # type: ignore[attr-defined]


def test_the_token_clients_ca_bundle_is_private_and_removed_at_exit(tmp_path: Path) -> None:
    """MSAL's requests session takes one CA file: ours is made afresh (0600) and never one found in /tmp."""
    ca = tmp_path / "corp-ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    combined = Path(certifi.where()).read_text() + "\n" + ca.read_text()
    planted = Path(tempfile.gettempdir()) / f"exotrace-ca-{hashlib.sha256(combined.encode()).hexdigest()[:16]}.pem"
    planted.write_text("an attacker's CA")  # the name the old code trusted without reading it
    try:
        path = Path(make_requests_session(ca_bundle=ca).verify)  # type: ignore[arg-type]
        assert path != planted and path.read_text() == combined
        assert path.stat().st_mode & 0o777 == 0o600
        assert Path(make_requests_session(ca_bundle=ca).verify) == path  # one file per bundle and process
    finally:
        planted.unlink()
    script = ("import sys; from pathlib import Path; from exotrace.net import make_requests_session; "
              "print(make_requests_session(ca_bundle=Path(sys.argv[1])).verify)")
    out = subprocess.run([sys.executable, "-c", script, str(ca)], capture_output=True, text=True, check=True,
                         env={**os.environ, "TMPDIR": str(tmp_path)})
    made = Path(out.stdout.strip())
    assert made.parent == tmp_path and not made.exists()  # removed when the process ended
