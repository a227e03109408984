"""The ledger never marks a window read before a required sink acknowledged its rows, also when an
earlier failed attempt committed them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from collect_helpers import write_config

from exotrace.archive.testing import query_read_only
from exotrace.collect.clockenv import ENV, clock_to_env
from exotrace.simulator import SimTenant, SimulatorConfig, start_simulator


def test_no_window_is_marked_read_before_a_required_sink_has_its_rows(tmp_path: Path) -> None:
    """A read that fails after committing pages leaves their rows unacknowledged; its retry finds them
    unchanged and submits nothing, so it waits for the earlier pages' tickets before marking the window."""
    cfg = SimulatorConfig(seed=9, scenario="badrcpt:0.9", speed=600, rows_per_day=3000,
                          tenants=[SimTenant.default("contoso", 9)])
    with start_simulator(cfg) as sim:
        path = write_config(sim, tmp_path, collector='page_size = 20\nrereads = ["15m", "1h", "4h", "30h"]')
        path.write_text(path.read_text() + '\n[[sink]]\ntype = "http"\nname = "down"\n'
                        'url = "http://127.0.0.1:9/ingest"\nretry_max = 5\n')  # required, and nothing listens
        log = tmp_path / "collect.log"
        env = {**os.environ, ENV: clock_to_env(sim.clock)}
        with log.open("ab") as fh:
            proc = subprocess.Popen([sys.executable, "-m", "exotrace", "collect", "--config", str(path), "--once",
                                     "--since", "6h", "--no-progress"], stdout=fh, stderr=fh, env=env)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and "window failed" not in log.read_text(errors="replace") \
                    and "restarting window" not in log.read_text(errors="replace"):
                time.sleep(0.2)
            time.sleep(10)  # retries of the failed reads run meanwhile
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    db = tmp_path / "archive.db"
    assert query_read_only(db, "SELECT count(*) FROM messages")[0][0] > 0  # pages were committed
    done = "SELECT count(*) FROM collector_windows WHERE state IN ('complete', 'settled')"
    assert query_read_only(db, done) == [(0,)]
