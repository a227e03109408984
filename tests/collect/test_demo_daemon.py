"""`exotrace demo`, and the daemon's clean shutdown on SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from collect_helpers import write_config

from exotrace.archive import Archive
from exotrace.collect.clockenv import ENV, clock_to_env
from exotrace.simulator import SimTenant, SimulatorConfig, start_simulator
from exotrace.state.ledger import Ledger


def test_demo_runs_and_searches_work(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    res = subprocess.run([sys.executable, "-m", "exotrace", "demo", "--archive", str(db), "--days", "2"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout + res.stderr
    assert "Collected" in out and "Try:" in out and "FilteredAsSpam" in out
    # Small demo pages: the run meets the scenario's faults and survives them.
    faults = re.search(r"(\d+) faults injected", " ".join(out.split()))
    assert faults and int(faults.group(1)) > 0, out[-2000:]
    with Archive.open(db) as arch:
        assert arch.count() > 1000
    # the example commands run as printed, from where the demo ran (the venv need not be on PATH)
    shown = next(ln[2:] for ln in res.stderr.splitlines() if ln.startswith("$ "))
    ran = subprocess.run(shown, shell=True, capture_output=True, text=True, cwd=tmp_path, env={"PATH": "/usr/bin:/bin"})
    assert ran.returncode == 0 and "FilteredAsSpam" in ran.stdout, (shown, ran.stderr[-2000:])
    again = subprocess.run([sys.executable, "-m", "exotrace", "search", "--archive", str(db), "--status",
                            "Delivered", "--limit", "2", "--format", "json"], capture_output=True, text=True)
    assert again.returncode == 0 and "Delivered" in again.stdout


def test_demo_refuses_an_archive_holding_real_rows_and_refills_its_own(tmp_path: Path) -> None:
    real = tmp_path / "exotrace.db"
    sample = Path(__file__).resolve().parents[2] / "exotrace" / "data" / "sample-messagetrace.ndjson"
    subprocess.run([sys.executable, "-m", "exotrace", "ingest", str(sample), "--archive", str(real), "-q",
                    "--no-geoip"], check=True, capture_output=True)
    with Archive.open(real) as arch:
        before = arch.count()
    demo = [sys.executable, "-m", "exotrace", "demo", "--days", "1", "--rows-per-day", "100"]
    refused = subprocess.run([*demo, "--archive", str(real)], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "already holds rows that the demo did not write" in refused.stderr
    with Archive.open(real) as arch:
        assert arch.count() == before
    own = tmp_path / "demo.db"
    for _ in range(2):  # a demo archive can be filled again
        res = subprocess.run([*demo, "--archive", str(own)], capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr[-2000:]


def test_daemon_sigterm_commits_and_exits(tmp_path: Path) -> None:
    cfg = SimulatorConfig(seed=9, scenario="latency", speed=300.0, rows_per_day=4000,
                          tenants=[SimTenant.default("contoso", 9)])
    with start_simulator(cfg) as sim:
        path = write_config(sim, tmp_path, collector='page_size = 100\nwindow = "5m"\npoll = "30s"')
        env = dict(os.environ)
        env[ENV] = clock_to_env(sim.clock)
        log = tmp_path / "daemon.log"
        with log.open("wb") as fh:
            proc = subprocess.Popen([sys.executable, "-m", "exotrace", "collect", "--config", str(path),
                                     "--since", "2d", "--log-format", "json"], stdout=fh, stderr=fh, env=env)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and log.read_text().count('"msg":"page') < 5:
                time.sleep(0.1)
            time.sleep(1.0)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0, log.read_text()[-2000:]
        text = log.read_text()
    assert "signal=SIGTERM" in text
    lines = [ln for ln in text.splitlines() if ln.startswith("{")]
    assert lines and all(ln.endswith("}") for ln in lines)
    with Archive.open(tmp_path / "archive.db") as arch:
        states = Ledger(arch.conn).summary("contoso")["windows"]
        assert arch.count() > 0
    assert states.get("complete", 0) + states.get("settled", 0) > 0
