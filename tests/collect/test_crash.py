"""Crash safety: `exotrace collect --once` killed with SIGKILL at random points, restarted, still exact."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
from collect_helpers import check_complete, write_config

from exotrace.archive import Archive
from exotrace.collect.clockenv import ENV, clock_to_env
from exotrace.model import canonical_status, row_key
from exotrace.simulator import SimTenant, SimulatorConfig, start_simulator

KILLS = 20


def _start(sim: object, cfg: Path, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env[ENV] = clock_to_env(sim.clock)  # type: ignore[attr-defined]
    with log.open("ab") as fh:
        return subprocess.Popen([sys.executable, "-m", "exotrace", "collect", "--config", str(cfg), "--once",
                                 "--since", "2d", "--no-progress"], stdout=fh, stderr=fh, env=env)


def test_kill_9_at_random_points_then_exact(tmp_path: Path) -> None:
    rng = random.Random(1234)
    cfg = SimulatorConfig(seed=21, scenario="flaky:0.05,poison:0.1", speed=600.0, rows_per_day=3000,
                          tenants=[SimTenant.default("contoso", 21)])
    log = tmp_path / "collect.log"
    with start_simulator(cfg) as sim:
        path = write_config(sim, tmp_path, collector="page_size = 60")
        out = tmp_path / "sink.ndjson"
        path.write_text(path.read_text() + f'\n[[sink]]\ntype = "file"\npath = "{out}"\n')
        t0 = sim.clock.now()
        killed = finished_early = 0
        while killed < KILLS:
            proc = _start(sim, path, log)
            deadline = time.monotonic() + rng.uniform(0.4, 1.6)
            while proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                killed += 1
            else:
                assert proc.returncode == 0, log.read_text()[-2000:]
                finished_early += 1
        proc = _start(sim, path, log)
        assert proc.wait(timeout=120) == 0, log.read_text()[-3000:]
        t_end = sim.clock.now()
        stats = check_complete(sim, tmp_path / "archive.db", sim.tenants[0], t0, t_end)
    assert stats["old"] > 2000
    # the file sink got every archived row at least once, the last copy at the archived status
    shipped: dict[str, str] = {}
    for line in out.read_text().splitlines():
        mt = orjson.loads(line)["microsoft"]["online_message_trace"]
        shipped[row_key(mt["MessageTraceId"], mt["RecipientAddress"])] = canonical_status(mt["Status"])
    with Archive.open(tmp_path / "archive.db") as arch:
        archived = dict(arch.conn.execute("SELECT key, status FROM messages"))
    assert shipped == archived
    assert killed == KILLS
    text = log.read_text()
    assert "page tenant=contoso" in text
    assert sim.tenants[0].client_secret not in text
