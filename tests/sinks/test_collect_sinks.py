"""`exotrace collect` with a required Elasticsearch sink that is down, a kill -9, and a restart.

The collector must not mark a window read (its checkpoint) while the sink has not acknowledged the
window's documents; after the restart every archived document reaches the sink, once per `_id`.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sink_fakes import FakeElasticsearch

from exotrace.archive.testing import query_read_only
from exotrace.collect.clockenv import ENV, clock_to_env
from exotrace.simulator import SimTenant, SimulatorConfig, start_simulator
from exotrace.sinks import read_metrics

DS = "logs-microsoft_exchange_online_message_trace.log-default"


def _config(sim: Any, tmp: Path, es_url: str) -> Path:
    t = sim.tenants[0]
    domains = ", ".join(f'"{d}"' for d in t.all_domains())
    path = tmp / "exotrace.toml"
    path.write_text("\n".join([
        "[archive]", f'path = "{tmp / "archive.db"}"', "",
        "[collector]", "page_size = 200", "",
        "[[tenant]]", f'name = "{t.name}"', f'tenant_id = "{t.tenant_id}"', f'client_id = "{t.client_id}"',
        'client_secret = "env:EXOTRACE_SINKTEST_SECRET"', 'api = "graph"', f"local_domains = [{domains}]",
        f'login_url = "{sim.login_url}"', f'graph_url = "{sim.graph_url}"', f'rws_url = "{sim.rws_url}"',
        f'ca_bundle = "{sim.ca_file}"', "",
        "[[sink]]", 'type = "elasticsearch"', f'hosts = ["{es_url}"]', "retry_initial = 0.01",
        "retry_max = 0.05", "batch_timeout = 0.01", "",
    ]))
    return path


def _collect(sim: Any, cfg: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, ENV: clock_to_env(sim.clock), "EXOTRACE_SINKTEST_SECRET": sim.tenants[0].client_secret}
    with log.open("ab") as fh:
        return subprocess.Popen([sys.executable, "-m", "exotrace", "collect", "--config", str(cfg), "--once",
                                 "--since", "1d", "--no-progress"], stdout=fh, stderr=fh, env=env)




def test_checkpoint_waits_for_a_down_sink_across_a_kill(tmp_path: Path) -> None:
    cfg = SimulatorConfig(seed=5, speed=600.0, rows_per_day=1500, tenants=[SimTenant.default("contoso", 5)])
    log = tmp_path / "collect.log"
    db = tmp_path / "archive.db"
    spool = tmp_path / "archive.db.spool"
    with start_simulator(cfg) as sim, FakeElasticsearch() as es:
        es.down = True  # every connection reset
        path = _config(sim, tmp_path, es.url)
        proc = _collect(sim, path, log)
        deadline = time.monotonic() + 60
        rows = failed = 0
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                rows = query_read_only(db, "SELECT count(*) FROM messages")[0][0]
            except sqlite3.OperationalError:  # not created yet
                rows = 0
            if rows:
                failed = read_metrics(spool).get("elasticsearch", {}).get("failed", 0)
                if rows > 300 and failed > 1000:  # metrics are saved every second
                    break
            time.sleep(0.05)
        assert proc.poll() is None, "collect --once finished although its required sink is down:\n" + \
            log.read_text()[-2000:]
        assert rows > 300 and failed > 1000, log.read_text()[-2000:]
        # no window holding shipped rows is marked read, and the outbox cursor did not move
        read_rows = query_read_only(db, "SELECT coalesce(sum(rows), 0) FROM collector_windows "
                               "WHERE state IN ('complete', 'settled')")[0][0]
        assert read_rows == 0
        assert query_read_only(db, "SELECT coalesce(max(acked_seq), 0) FROM collector_outbox")[0][0] == 0
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert es.store.get(DS, {}) == {}

        es.down = False
        proc = _collect(sim, path, log)
        assert proc.wait(timeout=120) == 0, log.read_text()[-3000:]
        assert es.errors == []
        archived = {fp for (fp,) in query_read_only(db, "SELECT fingerprint FROM messages")}
        indexed = set(es.store[DS])
        assert archived <= indexed  # every archived document arrived (and earlier states of rows too)
        # the restart sent documents twice (the spool's copies and the collector's replay of changes it
        # never saw acknowledged): the repeats were 409s on the fingerprint `_id`, not second documents
        assert es.docs_received > len(indexed)
        max_seq = query_read_only(db, "SELECT max(seq) FROM messages")[0][0]
        assert query_read_only(db, "SELECT max(acked_seq) FROM collector_outbox")[0][0] == max_seq
        assert query_read_only(db, "SELECT count(*) FROM collector_windows WHERE state NOT IN ('complete', 'settled')"
                      )[0][0] == 0
