"""CLI paths: `collect --tenant`, progress bars (terminal or not), `status` output, doctor clock skew."""

from __future__ import annotations

import asyncio
import email.utils
import os
import pty
import re
import select
import ssl
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson
from click.testing import CliRunner
from collect_helpers import collect, run_cli, write_config

from exotrace.archive import Archive
from exotrace.auth import TokenProvider, decode_claims
from exotrace.cli import cli
from exotrace.collect import open_archive
from exotrace.collect.clockenv import ENV, clock_to_env
from exotrace.collect.progress import BackfillProgress
from exotrace.config import load_config
from exotrace.simulator import SimTenant, SimulatorConfig, start_simulator
from exotrace.state.ledger import Ledger, Window

T0 = datetime(2026, 11, 20, tzinfo=UTC)


def test_collect_tenant_option_collects_only_that_tenant(tmp_path: Path) -> None:
    tenants = [SimTenant.default("contoso", 41), SimTenant.default("fabrikam", 41)]
    with start_simulator(SimulatorConfig(seed=41, speed=600.0, rows_per_day=500, tenants=tenants)) as sim:
        path = write_config(sim, tmp_path, collector="page_size = 500")
        res = run_cli(sim, "collect", "--config", str(path), "--once", "--since", "6h", "--tenant", "fabrikam")
        assert res.returncode == 0, res.stderr[-2000:]
        assert "fabrikam: ok" in res.stderr and "contoso" not in res.stderr
        with Archive.open(tmp_path / "archive.db") as arch:
            assert Ledger(arch.conn).tenants() == ["fabrikam"]
            assert {t for (t,) in arch.conn.execute("SELECT DISTINCT tenant FROM messages")} == {"fabrikam"}
        bad = run_cli(sim, "collect", "--config", str(path), "--once", "--tenant", "nope")
    assert bad.returncode == 2 and "'nope' is not in the configuration (tenants: contoso, fabrikam)" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_backfill_progress_counts_the_start_span_once() -> None:
    h = timedelta(hours=1)
    prog = BackfillProgress([(T0, T0 + 10 * h), (T0 + 10 * h, T0 + 12 * h)])
    assert prog.total == 12 * 3600 and prog.done == 0
    read = (T0 + 2 * h, T0 + 10 * h)
    prog.paged(read, T0 + 6 * h)  # newest first: [6 h, 10 h] of that read is covered
    assert prog.done == 4 * 3600
    prog.paged(read, T0 + 1 * h)  # rows before the read's start do not count
    assert prog.done == 8 * 3600
    prog.completed(read, [read], rows=500)
    assert prog.done == 8 * 3600 and prog.rows == 500
    prog.completed(read, [read], rows=500)  # a re-read of the same window does not move the bar
    live = (T0 + 12 * h, T0 + 13 * h)  # nor does the live tail, after the span
    prog.completed(live, [live], rows=99)
    assert prog.done == 8 * 3600 and prog.rows == 500
    prog.paged((T0, T0 + 2 * h), T0 + h)
    prog.ended((T0, T0 + 2 * h))  # a read that stopped no longer counts its pages
    assert prog.done == 8 * 3600
    for span in [(T0, T0 + 2 * h), (T0 + 10 * h, T0 + 12 * h)]:
        prog.completed(span, [span])
    assert prog.done == prog.total  # never more than the span


def _pty_run(args: list[str], env: dict[str, str], timeout: float = 120) -> tuple[int, str]:
    """Run ``args`` with stdin/stdout/stderr on a pseudo-terminal; return (exit code, everything shown)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    out = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
        return proc.wait(timeout=30), out.decode("utf-8", "replace")
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()


def test_progress_bar_on_a_terminal_only(tmp_path: Path) -> None:
    """A first run (default 1-day look-back) on a terminal shows a bar per tenant that ends at 100% and
    never passes it; with stderr not a terminal, no bar is drawn."""
    with start_simulator(SimulatorConfig(seed=42, speed=600.0, rows_per_day=3000,
                                         tenants=[SimTenant.default("contoso", 42)])) as sim:
        path = write_config(sim, tmp_path, collector="page_size = 100")
        env = dict(os.environ, TERM="xterm-256color", COLUMNS="140")
        env[ENV] = clock_to_env(sim.clock)
        code, shown = _pty_run([sys.executable, "-m", "exotrace", "collect", "--config", str(path), "--once",
                                "--log-format", "json"], env)
        assert code == 0, shown[-2000:]
        plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown)
        assert "backfill contoso" in plain
        percents = [int(p) for p in re.findall(r"backfill contoso\s*\S*\s+(\d+)%", plain)]
        assert percents and percents[-1] == 100 and max(percents) <= 100
        assert re.search(r"\d+\.\d/2\d\.\d hours, [\d,]+ rows", plain)  # 1 day = 24 h (+ the window to now)
        again = run_cli(sim, "collect", "--config", str(path), "--once", "--since", "2d")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "backfill contoso" not in again.stderr and "━" not in again.stderr


def test_status_shows_coverage_lag_quota_and_horizon_risk(tmp_path: Path) -> None:
    with start_simulator(SimulatorConfig(seed=43, speed=60.0, rows_per_day=800,
                                         tenants=[SimTenant.default("contoso", 43)])) as sim:
        path = write_config(sim, tmp_path, collector="page_size = 100")
        reports, _, _ = collect(sim, path, since=timedelta(days=1))
        assert reports[0].ok
        now = sim.clock.now()
        # a window the collector has not read yet, a day from the 90-day horizon (the warning is at 2 days)
        start = (now - timedelta(days=89)).replace(microsecond=0)
        near = Window("contoso", start, start + timedelta(hours=1), next_read=now)
        arch = open_archive(tmp_path / "archive.db")
        try:
            with arch.transaction():
                Ledger(arch.conn).add([near])
            info = Ledger(arch.conn).tenant_info("contoso")
            complete_until = Ledger(arch.conn).summary("contoso")["complete_until"]
        finally:
            arch.close()
        res = run_cli(sim, "status", "--config", str(path), "--json")
        text = run_cli(sim, "status", "--config", str(path))
    assert res.returncode == 0 and text.returncode == 0, res.stderr + text.stderr
    out = orjson.loads(res.stdout)
    t = out["tenants"][0]
    status_now = datetime.fromisoformat(out["now"])
    assert t["tenant"] == "contoso" and t["api"] == "graph"
    assert datetime.fromisoformat(t["first"]) == near.start  # coverage starts at the unread window
    assert t["complete_until"] == complete_until.isoformat(timespec="seconds")
    assert t["lag_seconds"] == round((status_now - complete_until).total_seconds()) and t["lag_seconds"] > 60
    assert t["windows"]["pending"] == 1 and t["windows"]["complete"] + t["windows"].get("settled", 0) > 90
    stamps = [datetime.fromisoformat(s) for s in orjson.loads(info["quota_json"])]
    assert t["quota"] == {"used": sum(1 for s in stamps if status_now - timedelta(minutes=5) < s <= status_now),
                          "limit": 90, "period_seconds": 300, "as_of": info["updated_at"]}
    assert t["requests"] == reports[0].requests and t["rows_read"] == reports[0].rows
    assert t["horizon_at_risk"] == [near.label()]
    assert t["last_error"] is None
    shown = " ".join(text.stderr.split())
    assert "contoso" in shown and "90 per 0:05:00" in shown
    assert f"window {near.label()} is uncollected and near the API horizon" in shown


def test_status_needs_no_secret(tmp_path: Path, monkeypatch) -> None:
    # a monitoring host reads the ledger without the tenants' secrets; a malformed reference is still refused
    arch = open_archive(tmp_path / "archive.db")
    arch.close()
    config = tmp_path / "exotrace.toml"
    tenant = '[[tenant]]\nname = "t"\ntenant_id = "x"\nclient_id = "y"\nclient_secret = "{}"\n'
    monkeypatch.delenv("EXOTRACE_NOT_HERE", raising=False)
    config.write_text('[archive]\npath = "archive.db"\n' + tenant.format("env:EXOTRACE_NOT_HERE"))
    assert CliRunner().invoke(cli, ["status", "--config", str(config)]).exit_code == 0
    assert CliRunner().invoke(cli, ["doctor", "--config", str(config)]).exit_code == 2  # doctor signs in: needs it
    config.write_text('[archive]\npath = "archive.db"\n' + tenant.format("s3cret-inline"))
    refused = CliRunner().invoke(cli, ["status", "--config", str(config)])
    assert refused.exit_code == 2 and "never inline" in refused.output and "s3cret" not in refused.output


def test_token_reused_then_refreshed_before_it_expires(tmp_path: Path) -> None:
    """One token serves every request until shortly before it expires; then a new one is acquired."""
    with start_simulator(SimulatorConfig(seed=44, speed=60.0, token_lifetime=180)) as sim:  # 3 s wall
        tenant = load_config(write_config(sim, tmp_path)).tenants[0]

        async def go() -> None:
            tokens = TokenProvider(tenant, sim.clock)
            try:
                first = await tokens.token()
                assert [await tokens.token() for _ in range(20)] == [first] * 20
                assert sim.stats()["tokens_issued"] == 1
                while tokens._token is not None and time.monotonic() < tokens._token.refresh_at:  # noqa: SLF001
                    await asyncio.sleep(0.05)
                asked = sim.clock.now()
                second = await tokens.token()
                assert second != first and sim.stats()["tokens_issued"] == 2
                assert decode_claims(first)["exp"] > asked.timestamp()  # replaced before it expired
            finally:
                tokens.close()

        asyncio.run(go())


class _SkewedProxy(ThreadingHTTPServer):
    """An HTTPS reverse proxy in front of the simulator whose ``Date`` header is ``skew`` seconds off."""

    daemon_threads = True

    def __init__(self, upstream: str, ca_file: str) -> None:
        super().__init__(("127.0.0.1", 0), _SkewedHandler)
        self.upstream, self.ca_file, self.skew = upstream, ca_file, 0.0
        pki = Path(ca_file).parent
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(pki / "server.pem", pki / "server-key.pem")
        self.socket = ctx.wrap_socket(self.socket, server_side=True)


class _SkewedHandler(BaseHTTPRequestHandler):
    server: _SkewedProxy

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        with httpx.Client(verify=ssl.create_default_context(cafile=self.server.ca_file)) as client:
            resp = client.get(self.server.upstream + self.path, headers=headers)
        body = resp.content
        self.send_response(resp.status_code)  # adds Date from date_time_string()
        for k, v in resp.headers.items():
            if k.lower() not in ("date", "server", "content-length", "content-encoding", "transfer-encoding",
                                 "connection"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def date_time_string(self, timestamp: Any = None) -> str:
        return email.utils.formatdate(time.time() + self.server.skew, usegmt=True)

    def log_message(self, *args: Any) -> None:
        pass


def test_doctor_reports_clock_skew_and_passes_once_fixed(tmp_path: Path) -> None:
    with start_simulator(SimulatorConfig(seed=45, speed=60.0)) as sim:
        proxy = _SkewedProxy(sim.base_url, sim.ca_file)
        threading.Thread(target=proxy.serve_forever, daemon=True).start()
        try:
            path = write_config(sim, tmp_path)
            port = proxy.server_address[1]
            path.write_text(path.read_text().replace(f'graph_url = "{sim.graph_url}"',
                                                     f'graph_url = "https://127.0.0.1:{port}"'))
            proxy.skew = 600.0  # the service's clock is 10 minutes ahead of this machine's
            skewed = run_cli(sim, "doctor", "--config", str(path))
            proxy.skew = 0.0  # "synchronise this machine's clock"
            fixed = run_cli(sim, "doctor", "--config", str(path))
        finally:
            proxy.shutdown()
            proxy.server_close()
    assert skewed.returncode == 4, skewed.stderr
    out = " ".join(skewed.stderr.split())
    assert re.search(r"FAIL clock skew: \+(59\d|60\d)s against the service's Date header", out)
    assert "fix: synchronise this machine's clock (NTP)" in out
    assert "ok list" in out or "ok Graph service principal and list" in out  # only the clock failed
    assert fixed.returncode == 0, fixed.stderr
    assert re.search(r"ok\s+clock skew: [+-][0-5]s", fixed.stderr)


def test_log_level_from_the_config(tmp_path: Path) -> None:
    with start_simulator(SimulatorConfig(seed=44, speed=600.0, rows_per_day=300,
                                         tenants=[SimTenant.default("contoso", 44)])) as sim:
        path = write_config(sim, tmp_path, collector="page_size = 500")
        base = path.read_text()
        levels = {}
        for level in ("warning", "debug"):
            path.write_text(f'[log]\nlevel = "{level}"\n' + base)
            res = run_cli(sim, "collect", "--config", str(path), "--once", "--since", "2h", "--no-progress")
            assert res.returncode == 0, res.stderr[-2000:]
            levels[level] = set(re.findall(r"level=(\w+)", res.stderr))
        path.write_text('[log]\nlevel = "chatty"\n' + base)
        bad = run_cli(sim, "collect", "--config", str(path), "--once")
    assert "info" not in levels["warning"] and "debug" not in levels["warning"]
    assert {"info", "debug"} <= levels["debug"]
    assert bad.returncode == 2 and "log.level: must be one of debug, info, warning, error" in bad.stderr
