"""Shared helpers for the collector tests: a config pointing at a running simulator."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from exotrace.collect.clockenv import ENV, clock_to_env


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
