"""Backfill benchmark: 90 days of a large simulated tenant under Microsoft's quota, on a simulated clock.

The simulator runs in this process (a thread) with realistic page latency (2-4 s per 5000-row page) and
the 100 requests / 5 minutes quota; the collector runs as a subprocess (`exotrace collect --once
--since 90d`) sharing the simulated clock. Reported:

* simulated wall time of the backfill, as a ratio to the quota-bound minimum: the requests needed
  (one per 5000 rows) at 100 per 5 minutes;
* requests made, 429s received, rows stored;
* the collector process's peak memory (max RSS).

Usage: python bench/backfill_bench.py [--rows-per-day 12000] [--days 90] [--speed 8] [--quota 90]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from exotrace.archive import Archive
from exotrace.collect.clockenv import ENV, clock_to_env
from exotrace.simulator import SimTenant, SimulatorConfig, start_simulator

QUOTA_REQUESTS, QUOTA_PERIOD = 100, 300.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows-per-day", type=int, default=12000)
    ap.add_argument("--days", type=int, default=90)
    ap.add_argument("--speed", type=float, default=8.0, help="simulated seconds per real second")
    ap.add_argument("--quota", type=int, default=90, help="collector's quota (requests per 5 minutes)")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--log", help="write the collector's log (JSON lines) to this file")
    ap.add_argument("--extra", action="append", default=[], help="extra [collector] lines")
    args = ap.parse_args()

    tenant = SimTenant.default("contoso", 1, rows_per_day=args.rows_per_day)
    cfg = SimulatorConfig(seed=1, scenario="latency", speed=args.speed, tenants=[tenant],
                          rows_per_day=args.rows_per_day, history_days=args.days + 1)
    with start_simulator(cfg) as sim, tempfile.TemporaryDirectory(prefix="exotrace-bench-") as tmp:
        t = sim.tenants[0]
        os.environ["EXOTRACE_BENCH_SECRET"] = t.client_secret
        conf = Path(tmp) / "bench.toml"
        conf.write_text("\n".join([
            "[archive]", f'path = "{tmp}/bench.db"', "[collector]", f"quota = {args.quota}",
            f"concurrency = {args.concurrency}", *args.extra,
            "[[tenant]]", 'name = "contoso"', f'tenant_id = "{t.tenant_id}"',
            f'client_id = "{t.client_id}"', 'client_secret = "env:EXOTRACE_BENCH_SECRET"',
            f'login_url = "{sim.login_url}"', f'graph_url = "{sim.graph_url}"', f'ca_bundle = "{sim.ca_file}"',
        ]) + "\n")
        env = dict(os.environ)
        env[ENV] = clock_to_env(sim.clock)
        start_sim, start_wall = sim.clock.now(), time.monotonic()
        verbosity = ["--log-format", "json"] if args.log else ["--quiet"]
        proc = subprocess.run([sys.executable, "-m", "exotrace", "collect", "--config", str(conf), "--once",
                               "--since", f"{args.days}d", "--no-progress", *verbosity],
                              env=env, capture_output=True, text=True)
        if args.log:
            Path(args.log).write_text(proc.stderr)
        sim_elapsed = (sim.clock.now() - start_sim).total_seconds()
        wall = time.monotonic() - start_wall
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        stats = sim.stats()
        with Archive.open(Path(tmp) / "bench.db") as arch:
            rows = arch.count()
    if proc.returncode != 0:
        print(proc.stderr[-3000:], file=sys.stderr)
        return 1
    needed = math.ceil(rows / 5000)
    minimum = needed / QUOTA_REQUESTS * QUOTA_PERIOD
    result = {
        "rows": rows,
        "days": args.days,
        "requests": stats.get("requests_graph_list", 0),
        "requests_needed": needed,
        "throttled_429": stats.get("graph_429", stats.get("throttled", 0)),
        "simulated_seconds": round(sim_elapsed, 1),
        "quota_bound_minimum_seconds": round(minimum, 1),
        "ratio_to_minimum": round(sim_elapsed / minimum, 3),
        "collector_peak_rss_mb": round(peak_mb, 1),
        "real_seconds": round(wall, 1),
        "speed": args.speed,
        "collector_quota": args.quota,
    }
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:30} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
