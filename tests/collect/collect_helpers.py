"""Shared helpers for the collector tests: a config pointing at a running simulator."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from exotrace.archive import Archive
from exotrace.collect import run_collector
from exotrace.collect.clockenv import ENV, clock_to_env
from exotrace.collect.runner import _received
from exotrace.config import load_config
from exotrace.state.ledger import Ledger


def write_config(sim: Any, tmp: Path, *, tenants: list[Any] | None = None, api: str = "graph",
                 extra: str = "", collector: str = "", archive: str = "archive.db") -> Path:
    lines = ["[archive]", f'path = "{tmp / archive}"', "", "[collector]",
             collector or 'rereads = ["15m", "1h", "4h", "30h"]', ""]
    for t in tenants or sim.tenants:
        env = f"EXOTRACE_TEST_SECRET_{t.name.upper().replace('-', '_')}"
        os.environ[env] = t.client_secret
        doms = ", ".join(f'"{d}"' for d in t.all_domains())
        lines += ["[[tenant]]", f'name = "{t.name}"', f'tenant_id = "{t.tenant_id}"',
                  f'client_id = "{t.client_id}"', f'client_secret = "env:{env}"', f'api = "{api}"',
                  f"local_domains = [{doms}]", f'login_url = "{sim.login_url}"', f'graph_url = "{sim.graph_url}"',
                  f'rws_url = "{sim.rws_url}"', f'ca_bundle = "{sim.ca_file}"', extra, ""]
    path = tmp / "exotrace.toml"
    path.write_text("\n".join(lines))
    return path


def run_cli(sim: Any, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env[ENV] = clock_to_env(sim.clock)
    return subprocess.run([sys.executable, "-m", "exotrace", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)

#: Longest a simulated row keeps changing after it is received (24 h late + 15 min + 4 h retries).
SETTLED_AFTER = timedelta(hours=30)


def collect(sim: Any, cfg_path: Path, *, mode: str = "once", since: timedelta | None = None,
            tenants: list[str] | None = None) -> tuple[list[Any], datetime, datetime]:
    cfg = load_config(cfg_path)
    sel = [cfg.tenant(n) for n in tenants] if tenants else None
    t0 = sim.clock.now()
    reports = asyncio.run(run_collector(cfg, mode=mode, since=since, tenants=sel, clock=sim.clock))
    return reports, t0, sim.clock.now()


def check_complete(sim: Any, archive_path: Path, tenant: Any, t0: datetime, t_end: datetime,
                   api: str = "graph", *, exact: bool = False,
                   exact_until: datetime | None = None) -> dict[str, int]:
    """Compare the archive with the simulator's ground truth.

    Rows old enough to be final at ``t0`` must match exactly; every row visible at ``t0`` must be
    there; nothing that was never visible may be; statuses stable during the run must match. With
    ``exact`` the whole collected range must equal the truth at ``t_end`` (a settled run); with
    ``exact_until`` the range up to that time must (every row of it, at its status at ``t_end``).
    """
    with Archive.open(archive_path) as arch:
        snap = {k: s for k, s in arch.conn.execute("SELECT key, status FROM messages WHERE tenant = ?",
                                                        (tenant.name,))}
        count = arch.conn.execute("SELECT count(*) FROM messages WHERE tenant = ?", (tenant.name,)).fetchone()[0]
        bounds = Ledger(arch.conn).bounds(tenant.name)
        dupes = arch.conn.execute("SELECT count(*) - count(DISTINCT key) FROM messages").fetchone()[0]
    assert bounds is not None
    assert dupes == 0 and count == len(snap), "duplicates in the archive"
    tid = tenant.tenant_id
    mine = {k: v for k, v in snap.items()}
    truth_end = sim.ground_truth(tid, at=t_end, start=bounds[0], end=bounds[1], api=api)
    truth_t0 = sim.ground_truth(tid, at=t0, start=bounds[0], end=bounds[1], api=api)
    others = {k for k in mine if k not in truth_end}
    assert not others, f"{len(others)} archived rows were never visible, e.g. {sorted(others)[:3]}"
    if exact_until is not None:
        want = {k: r["Status"] for k, r in sim.ground_truth(tid, at=t_end, start=bounds[0], end=exact_until,
                                                             api=api).items()}
        diff = {k: (mine.get(k), s) for k, s in want.items() if mine.get(k) != s}
        assert not diff, f"{len(diff)} of {len(want)} rows differ from the truth, e.g. {list(diff.items())[:3]}"
        return {"rows": len(want)}
    if exact:
        want = {k: r["Status"] for k, r in truth_end.items()}
        diff = {k: (mine.get(k), want.get(k)) for k in set(mine) | set(want) if mine.get(k) != want.get(k)}
        assert not diff, f"{len(diff)} differences, e.g. {list(diff.items())[:3]}"
        return {"rows": len(mine)}
    old_edge = t0 - SETTLED_AFTER
    missing = [k for k in truth_t0 if k not in mine]
    assert not missing, f"{len(missing)} rows visible before the run are missing, e.g. {missing[:3]}"
    wrong = []
    for k, row in truth_end.items():
        if _received({"Received": row["Received"]}) <= old_edge:
            if mine.get(k) != row["Status"]:
                wrong.append((k, mine.get(k), row["Status"]))
        elif k in truth_t0 and truth_t0[k]["Status"] == row["Status"] and mine.get(k) != row["Status"]:
            wrong.append((k, mine.get(k), row["Status"]))
    assert not wrong, f"{len(wrong)} wrong statuses, e.g. {wrong[:3]}"
    return {"rows": len(mine), "old": sum(1 for r in truth_end.values()
                                          if _received({"Received": r["Received"]}) <= old_edge)}
