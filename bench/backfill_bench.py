"""Backfill benchmark: 90 days of a large simulated tenant under Microsoft's quota, on a simulated clock.

The simulator runs in this process (a thread) with realistic page latency (2-4 s per 5000-row page) and
the 100 requests / 5 minutes quota; the collector runs as a subprocess (`exotrace collect --once
--since 90d`) sharing the simulated clock. Reported per run:

* simulated wall time of the backfill, as a ratio to the quota-bound minimum: the requests needed
  (rows / 5000, rounded up) at Microsoft's 100 per 5 minutes (``ratio_to_minimum``), and at the
  collector's own quota (``ratio_to_own_quota``: the overhead beyond the reserve left for admins);
* requests made vs needed, 429s received, rows stored;
* the collector process's peak memory (max RSS) and CPU time. The simulated clock runs ``--speed`` times
  faster than real time, so collector CPU counts ``speed`` times over in simulated time; ``cpu_share``
  (collector CPU / real time) shows how close the run came to being CPU-bound instead of quota-bound.

``--quota`` may be given more than once (``--quota 90 --quota 100``): one backfill per value, each
against a fresh simulator, so the cost of the default 10-request reserve is visible.

Usage: python bench/backfill_bench.py [--rows-per-day 23000] [--days 90] [--speed 2] [--quota 90 ...]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from exotrace.archive import Archive
from exotrace.collect.clockenv import ENV, clock_to_env
from exotrace.simulator import SimTenant, SimulatorConfig, start_simulator

QUOTA_REQUESTS, QUOTA_PERIOD, PAGE = 100, 300.0, 5000


def run(args: argparse.Namespace, quota: int) -> dict[str, Any] | None:
    """One backfill at ``quota`` requests per 5 minutes; None when the collector failed."""
    tenant = SimTenant.default("contoso", 1, rows_per_day=args.rows_per_day)
    cfg = SimulatorConfig(seed=1, scenario="latency", speed=args.speed, tenants=[tenant],
                          rows_per_day=args.rows_per_day, history_days=args.days + 1)
    with start_simulator(cfg) as sim, tempfile.TemporaryDirectory(prefix="exotrace-bench-") as tmp:
        t = sim.tenants[0]
        os.environ["EXOTRACE_BENCH_SECRET"] = t.client_secret
        conf = Path(tmp) / "bench.toml"
        conf.write_text("\n".join([
            "[archive]", f'path = "{tmp}/bench.db"', "[collector]", f"quota = {quota}",
            f"concurrency = {args.concurrency}", *args.extra,
            "[[tenant]]", 'name = "contoso"', f'tenant_id = "{t.tenant_id}"',
            f'client_id = "{t.client_id}"', 'client_secret = "env:EXOTRACE_BENCH_SECRET"',
            f'login_url = "{sim.login_url}"', f'graph_url = "{sim.graph_url}"', f'ca_bundle = "{sim.ca_file}"',
        ]) + "\n")
        env = dict(os.environ)
        env[ENV] = clock_to_env(sim.clock)
        verbosity = ["--log-format", "json"] if args.log else ["--quiet"]
        log_path = Path(args.log + (f".q{quota}" if len(args.quota) > 1 else "")) if args.log else None
        err_path = log_path or Path(tmp) / "stderr.txt"
        start_sim, start_wall = sim.clock.now(), time.monotonic()
        with open(err_path, "wb") as err:
            proc = subprocess.Popen([sys.executable, "-m", "exotrace", "collect", "--config", str(conf), "--once",
                                     "--since", f"{args.days}d", "--no-progress", *verbosity],
                                    env=env, stdout=subprocess.DEVNULL, stderr=err)
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
        sim_elapsed = (sim.clock.now() - start_sim).total_seconds()
        wall = time.monotonic() - start_wall
        stats = sim.stats()
        if proc.returncode != 0:
            print(err_path.read_text()[-3000:], file=sys.stderr)
            return None
        with Archive.open(Path(tmp) / "bench.db") as arch:
            rows = arch.count()
    needed = math.ceil(rows / PAGE)
    minimum = needed / QUOTA_REQUESTS * QUOTA_PERIOD
    cpu = usage.ru_utime + usage.ru_stime
    return {
        "rows": rows,
        "days": args.days,
        "collector_quota": quota,
        "requests": stats.get("requests_graph_list", 0),
        "requests_needed": needed,
        "throttled_429": stats.get("graph_429", stats.get("throttled", 0)),
        "simulated_seconds": round(sim_elapsed, 1),
        "quota_bound_minimum_seconds": round(minimum, 1),
        "ratio_to_minimum": round(sim_elapsed / minimum, 3),
        "ratio_to_own_quota": round(sim_elapsed / (needed / quota * QUOTA_PERIOD), 3),
        "collector_peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "collector_cpu_seconds": round(cpu, 1),
        "cpu_share": round(cpu / wall, 2),
        "real_seconds": round(wall, 1),
        "speed": args.speed,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows-per-day", type=int, default=23000, help="about 2.07 million rows over 90 days")
    ap.add_argument("--days", type=int, default=90)
    ap.add_argument("--speed", type=float, default=2.0,
                    help="simulated seconds per real second (collector CPU counts this many times over)")
    ap.add_argument("--quota", type=int, action="append",
                    help="collector's quota (requests per 5 minutes); repeat to compare (default 90)")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--json", action="store_true", help="one JSON object per run")
    ap.add_argument("--log", help="write the collector's log (JSON lines) to this file (.qN suffix per quota)")
    ap.add_argument("--extra", action="append", default=[], help="extra [collector] lines")
    args = ap.parse_args()
    args.quota = args.quota or [90]
    results = []
    for quota in args.quota:
        result = run(args, quota)
        if result is None:
            return 1
        results.append(result)
        if args.json:
            print(json.dumps(result), flush=True)
    if not args.json:
        keys = list(results[0])
        print(f"{'':28}" + "".join(f"{'quota ' + str(r['collector_quota']):>14}" for r in results))
        for k in keys:
            print(f"{k:28}" + "".join(f"{r[k]!s:>14}" for r in results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
