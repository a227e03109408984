"""The daemon: prompt shutdown while quota-bound, live `status`, recovery of a broken tenant, live tail."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from collect_helpers import check_complete, collect, run_cli, write_config

from exotrace.archive import Archive
from exotrace.collect import run_collector
from exotrace.collect.clockenv import ENV, clock_to_env
from exotrace.config import load_config
from exotrace.simulator import SimTenant, SimulatorConfig, start_simulator
from exotrace.state.ledger import TICK, Ledger, parse_time


def wait_for(cond: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> Any:
    """Poll ``cond`` until it is truthy (generous timeout: the machine may be loaded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def start_daemon(sim: Any, cfg: Path, log: Path, *args: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env[ENV] = clock_to_env(sim.clock)
    with log.open("ab") as fh:
        return subprocess.Popen([sys.executable, "-m", "exotrace", "collect", "--config", str(cfg),
                                 "--log-format", "json", *args], stdout=fh, stderr=fh, env=env)


def log_lines(log: Path) -> list[dict[str, Any]]:
    return [orjson.loads(ln) for ln in log.read_text().splitlines() if ln.startswith("{")]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_quota_bound_daemon_stops_promptly(tmp_path: Path, sig: signal.Signals) -> None:
    """Every read waits in the quota governor when the signal comes: the daemon exits 0 without sending
    another request (the old code waited for the quota, up to twice the 600 s timeout), and the archive
    and ledger are consistent: a restart completes the collection exactly."""
    cfg = SimulatorConfig(seed=31, speed=5.0, rows_per_day=3000, tenants=[SimTenant.default("contoso", 31)])
    with start_simulator(cfg) as sim:
        path = write_config(sim, tmp_path, collector='quota = 3\npage_size = 100\ntimeout = "600s"')
        log = tmp_path / "daemon.log"
        t0 = sim.clock.now()
        proc = start_daemon(sim, path, log, "--since", "1d")
        try:
            # three requests spend the quota; the next ones wait 300 simulated seconds (60 s here)
            wait_for(lambda: sim.stats().get("requests_graph_list", 0) >= 3, what="three requests")
            wait_for(lambda: sum(1 for ln in log_lines(log) if ln["msg"].startswith("page ")) >= 3,
                     what="three pages committed")
            sent = sim.stats()["requests_graph_list"]
            proc.send_signal(sig)
            code = proc.wait(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        lines = log_lines(log)
        assert code == 0, log.read_text()[-2000:]
        assert sim.stats()["requests_graph_list"] == sent  # nothing sent after the signal
        assert any(ln["msg"].startswith(f"signal={sig.name} received") for ln in lines)
        assert any(ln["msg"].startswith("stopped mid-window") for ln in lines)
        with Archive.open(tmp_path / "archive.db") as arch:
            assert arch.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            stored = arch.count()
            windows = Ledger(arch.conn).windows("contoso")
            info = Ledger(arch.conn).tenant_info("contoso")
        # every committed page, and nothing else, is in the archive; no window was marked read half-done
        assert stored == sum(int(ln["new"]) for ln in lines if ln["msg"].startswith("page "))
        cut = [re.search(r"window=(\S+)\.\.(\S+) ", ln["msg"]).groups()  # type: ignore[union-attr]
               for ln in lines if ln["msg"].startswith("stopped mid-window")]
        assert stored > 0 and cut
        for start, end in cut:
            inside = [w for w in windows if parse_time(start) <= w.start and w.end <= parse_time(end)]
            assert inside and all(w.state == "pending" for w in inside), (start, end, inside)
        assert info["quota_used"] == 3 and info["quota_limit"] == 3 and info["requests"] == 3
        # a restart (with the normal quota) resumes and ends exact
        path.write_text(path.read_text().replace("quota = 3\n", ""))
        res = run_cli(sim, "collect", "--config", str(path), "--once", "--no-progress")
        assert res.returncode == 0, res.stderr[-2000:]
        check_complete(sim, tmp_path / "archive.db", sim.tenants[0], t0, sim.clock.now())


def test_status_is_live_while_the_daemon_runs(tmp_path: Path) -> None:
    """A broken tenant's error (with the fix) and the quota use show in `status` while the daemon runs."""
    tenants = [SimTenant.default("contoso", 32), SimTenant.default("fabrikam", 32, graph_permission=False)]
    cfg = SimulatorConfig(seed=32, speed=60.0, rows_per_day=2000, tenants=tenants)
    with start_simulator(cfg) as sim:
        path = write_config(sim, tmp_path, collector="page_size = 200")
        log = tmp_path / "daemon.log"
        proc = start_daemon(sim, path, log, "--since", "1d")
        try:
            wait_for(lambda: any(ln["msg"].startswith("tenant unavailable tenant=fabrikam")
                                 for ln in log_lines(log)), what="the broken tenant's failure")

            def status() -> dict[str, Any]:
                res = run_cli(sim, "status", "--config", str(path), "--json")
                assert res.returncode == 0, res.stderr
                return {t["tenant"]: t for t in orjson.loads(res.stdout)["tenants"]}

            # the error with its fix, and when the retry is due (the backoff goes 1, 2, 4... simulated minutes)
            fab = wait_for(lambda: (st := status()["fabrikam"])["last_error"] and st["retry_at"] and st,
                           what="fabrikam's error and retry time")
            assert "ExchangeMessageTrace.Read.All" in fab["last_error"] and "admin consent" in fab["last_error"]
            assert fab["last_error_at"]
            con = wait_for(lambda: (st := status()["contoso"])["quota"]["used"] > 0 and st,
                           what="contoso's quota use in status")
            assert con["quota"]["limit"] == 90 and con["quota"]["period_seconds"] == 300
            assert con["requests"] >= con["quota"]["used"] and con["last_error"] is None
            text = wait_for(lambda: (res := run_cli(sim, "status", "--config", str(path))).returncode == 0
                            and "retrying at" in res.stderr and res, what="the text status")
            assert "fabrikam: last error" in text.stderr and "ExchangeMessageTrace.Read.All" in text.stderr
            assert proc.poll() is None  # all of this while the daemon runs
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0, log.read_text()[-2000:]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _run_daemon_thread(cfg_path: Path, sim: Any, since: timedelta) -> tuple[asyncio.AbstractEventLoop,
                                                                               asyncio.Event, list[Any],
                                                                               threading.Thread]:
    """The daemon in a thread (in-process, so the test can change the simulated tenant while it runs)."""
    cfg = load_config(cfg_path)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    out: list[Any] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        out.extend(loop.run_until_complete(run_collector(cfg, mode="daemon", since=since, clock=sim.clock,
                                                         stop=stop)))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return loop, stop, out, thread


def test_broken_tenant_recovers_when_permission_is_granted(tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    """The daemon retries a broken tenant with backoff (parallel failures count once) and, once the
    permission is granted (a new token carries the role), collects it while the other tenant goes on."""
    tenants = [SimTenant.default("contoso", 33), SimTenant.default("fabrikam", 33, graph_permission=False)]
    with start_simulator(SimulatorConfig(seed=33, speed=60.0, rows_per_day=1500, tenants=tenants)) as sim:
        path = write_config(sim, tmp_path, collector="page_size = 300")
        caplog.set_level(logging.INFO, logger="exotrace")
        loop, stop, reports, thread = _run_daemon_thread(path, sim, timedelta(days=1))
        try:
            failures = lambda: [r.getMessage() for r in caplog.records  # noqa: E731
                                if r.getMessage().startswith("tenant unavailable tenant=fabrikam")]
            wait_for(lambda: len(failures()) >= 2, what="two failure episodes")
            sim.tenant("fabrikam").graph_permission = True
            wait_for(lambda: any(r.getMessage().startswith("tenant recovered tenant=fabrikam")
                                 for r in caplog.records), what="recovery")

            def fabrikam_read() -> bool:
                with Archive.open(tmp_path / "archive.db") as arch:
                    w = Ledger(arch.conn).summary("fabrikam")["windows"]
                    return w.get("complete", 0) + w.get("settled", 0) > 0
            wait_for(fabrikam_read, what="fabrikam's first complete window")
        finally:
            loop.call_soon_threadsafe(stop.set)
            thread.join(60)
        assert not thread.is_alive()
        by = {r.name: r for r in reports}
        assert by["fabrikam"].ok and by["fabrikam"].exit_code == 0 and by["fabrikam"].rows > 0
        assert by["contoso"].ok and by["contoso"].rows > 0
        # the tenant's parallel reads fail together: fewer failures than 403s, and each failure's wait is
        # the backoff step of its attempt (1 min doubling, full jitter), not pushed up by the others
        assert len(failures()) < sim.stats()["graph_403"]
        for msg in failures():
            attempt = int(re.search(r"attempt=(\d+)", msg).group(1))  # type: ignore[union-attr]
            wait = float(re.search(r"retry_in=(\d+)s", msg).group(1))  # type: ignore[union-attr]
            assert 30 * 2 ** (attempt - 1) - 1 <= wait <= 60 * 2 ** (attempt - 1), msg
        with Archive.open(tmp_path / "archive.db") as arch:
            info = Ledger(arch.conn).tenant_info("fabrikam")
        assert info["last_error"] is None and info["retry_at"] is None and info["last_success"]
        assert sim.stats()["graph_403"] >= 2


def test_live_tail_reads_the_open_window_provisionally(tmp_path: Path) -> None:
    """Rows of the open 15-minute window are archived within about `tail_poll` of being published, while
    the ledger only ever holds whole grid windows (the provisional read marks nothing)."""
    cfg = SimulatorConfig(seed=34, speed=60.0, rows_per_day=20000, tenants=[SimTenant.default("contoso", 34)])
    with start_simulator(cfg) as sim:
        path = write_config(sim, tmp_path, collector='page_size = 1000\ntail_poll = "1m"')
        loop, stop, reports, thread = _run_daemon_thread(path, sim, timedelta(hours=1))

        def provisional_rows() -> int:
            if not (tmp_path / "archive.db").exists():
                return 0
            with Archive.open(tmp_path / "archive.db") as arch:
                with arch.transaction():  # one snapshot of the rows and the ledger
                    bounds = Ledger(arch.conn).bounds("contoso")
                    if bounds is None:
                        return 0
                    return int(arch.conn.execute(
                        "SELECT count(*) FROM messages WHERE received > ?",
                        (bounds[1].isoformat(timespec="milliseconds").replace("+00:00", "Z"),)).fetchone()[0])

        def live_until_recorded() -> bool:
            with Archive.open(tmp_path / "archive.db") as arch:
                return bool(Ledger(arch.conn).tenant_info("contoso").get("live_until"))

        try:
            # the rows land first, then the read records how far the live tail reached: wait for both
            wait_for(lambda: provisional_rows() > 0 and live_until_recorded(), what="rows read from the open window")
        finally:
            loop.call_soon_threadsafe(stop.set)
            thread.join(60)
        assert reports and reports[0].ok
        with Archive.open(tmp_path / "archive.db") as arch:
            ledger = Ledger(arch.conn)
            windows = ledger.windows("contoso")
            info = ledger.tenant_info("contoso")
        grid = timedelta(minutes=15)
        epoch = datetime(1970, 1, 1, tzinfo=UTC)
        assert all((w.end + TICK - epoch) % grid == timedelta(0) for w in windows)  # whole grid windows only
        assert info["live_until"] and parse_time(info["live_until"]) > windows[0].start


def test_once_gives_a_broken_tenant_bounded_retries(tmp_path: Path) -> None:
    """`--once` tries a broken tenant three times with backoff, then reports it (exit 3)."""
    tenants = [SimTenant.default("contoso", 35), SimTenant.default("fabrikam", 35, graph_permission=False)]
    with start_simulator(SimulatorConfig(seed=35, speed=600.0, rows_per_day=500, tenants=tenants)) as sim:
        path = write_config(sim, tmp_path, collector="page_size = 500")
        reports, _, _ = collect(sim, path, since=timedelta(hours=6))
        by = {r.name: r for r in reports}
        assert by["contoso"].ok
        assert by["fabrikam"].exit_code == 3 and "gave up after 3 attempts" in (by["fabrikam"].error or "")
        assert sim.stats()["graph_403"] >= 3


def test_live_tail_keeps_up_beside_a_long_backfill(tmp_path: Path) -> None:
    """A five-day backfill that takes hours under a tight quota does not hold up the live tail: fresh
    windows are read and completed (and the provisional tail moves) while the backfill is far from done."""
    cfg = SimulatorConfig(seed=35, speed=120.0, rows_per_day=6000, tenants=[SimTenant.default("contoso", 35)])
    with start_simulator(cfg) as sim:
        path = write_config(sim, tmp_path, collector='quota = 5\npage_size = 200\nmax_window = "1d"\ntail_poll = "1m"')
        t0 = sim.clock.now()
        loop, stop, reports, thread = _run_daemon_thread(path, sim, timedelta(days=5))

        def snapshot() -> tuple[list[Any], dict[str, Any]]:
            if not (tmp_path / "archive.db").exists():
                return [], {}
            with Archive.open(tmp_path / "archive.db") as arch, arch.transaction():
                ledger = Ledger(arch.conn)
                return ledger.windows("contoso"), ledger.tenant_info("contoso")

        def live_done() -> list[Any]:
            windows, _ = snapshot()
            return [w for w in windows if w.start >= t0 and w.state in ("complete", "settled")]

        seen_tails: set[str] = set()

        def tail_moves() -> bool:
            _, info = snapshot()
            if info.get("live_until"):
                seen_tails.add(info["live_until"])
            return len(seen_tails) >= 3

        try:
            wait_for(lambda: len(live_done()) >= 2, timeout=120, what="two live-tail windows read")
            wait_for(tail_moves, timeout=60, what="the provisional live tail moving")
            windows, _ = snapshot()
            pending = [w for w in windows if w.start < t0 - timedelta(days=1)
                       and w.state not in ("complete", "settled")]
        finally:
            loop.call_soon_threadsafe(stop.set)
            thread.join(60)
        assert not thread.is_alive() and reports and reports[0].ok
        # the live tail was read while old windows of the backfill were still waiting for the quota
        assert pending, "the backfill finished before the live tail was checked: make it longer"
        backlog = sum((w.end - w.start for w in pending), timedelta(0))
        assert backlog > timedelta(days=1), backlog
        # and nothing was lost on the way: what the daemon stored equals the simulator's rows for the
        # windows it completed (checked by the completeness helpers elsewhere; here: no duplicates)
        with Archive.open(tmp_path / "archive.db") as arch:
            dupes = arch.conn.execute("SELECT count(*) - count(DISTINCT key) FROM messages").fetchone()[0]
        assert dupes == 0
