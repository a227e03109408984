"""``exotrace demo``: simulator in, archive out, searches shown. No Microsoft tenant needed."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click

from exotrace.cli._common import err_console, handle_errors
from exotrace.errors import ConfigError


def demo_page_size(rows: int) -> int:
    """Rows per page for a demo of ``rows`` rows: small enough that it takes a few dozen requests, so the
    collector meets (and survives) the scenario's throttling, 5xx and poisoned skiptokens; at least 200,
    and at most the API's 5000 so a large demo stays quick."""
    return max(200, min(5000, rows // 25))


def command_name() -> str:
    """How the user can run exotrace from here: ``exotrace`` when it is on PATH, else the path they ran
    (``.venv/bin/exotrace`` right after the README's first command, before the venv is activated)."""
    script = Path(sys.argv[0])
    if script.name == "__main__.py":  # python -m exotrace
        return f"{_relative(Path(sys.executable))} -m exotrace"
    found = shutil.which("exotrace")
    if found and script.exists() and Path(found).resolve() == script.resolve():
        return "exotrace"
    return _relative(script) if script.exists() else "exotrace"


def _relative(path: Path) -> str:
    """``path`` as typed from the current directory (absolute when it is elsewhere)."""
    rel = os.path.relpath(path.absolute())
    if rel.startswith(".."):
        return str(path.absolute())
    return rel if os.sep in rel else f".{os.sep}{rel}"


def _config(sim: object, tenant: object, archive: Path, env: str, page_size: int) -> str:
    doms = ", ".join(f'"{d}"' for d in tenant.all_domains())  # type: ignore[attr-defined]
    return "\n".join([
        "[archive]", f'path = "{archive}"', "",
        "[collector]", f"page_size = {page_size}", "",
        "[[tenant]]",
        f'name = "{tenant.name}"',  # type: ignore[attr-defined]
        f'tenant_id = "{tenant.tenant_id}"',  # type: ignore[attr-defined]
        f'client_id = "{tenant.client_id}"',  # type: ignore[attr-defined]
        f'client_secret = "env:{env}"',
        f"local_domains = [{doms}]",
        f'login_url = "{sim.login_url}"',  # type: ignore[attr-defined]
        f'graph_url = "{sim.graph_url}"',  # type: ignore[attr-defined]
        f'rws_url = "{sim.rws_url}"',  # type: ignore[attr-defined]
        f'ca_bundle = "{sim.ca_file}"',  # type: ignore[attr-defined]
        "",
    ])


#: Marks an archive as the demo's (a migration of the ``demo`` component): a later demo may fill it again.
DEMO_MARK = ["-- demo archive: simulated mail only"]


def _claim_for_the_demo(archive: Path) -> None:
    """Refuse an archive that already holds real rows: the demo would mix simulated mail into them."""
    from exotrace.archive import Archive
    from exotrace.archive.migrations import applied_versions

    with Archive.open(archive) as arch:
        if "demo" not in applied_versions(arch.conn) and arch.count() + arch.reject_count() > 0:
            raise ConfigError(f"{archive} already holds rows that the demo did not write; the demo would mix "
                              "simulated mail into them. Give it its own archive: exotrace demo --archive "
                              "exotrace-demo.db", key="--archive")
        arch.ensure_schema("demo", DEMO_MARK)


@click.command(name="demo")
@click.option("--archive", "archive_path", default="exotrace.db", show_default=True,
              type=click.Path(dir_okay=False), help="Archive to fill.")
@click.option("--days", default=3, show_default=True, type=click.IntRange(1, 90), help="Days to backfill.")
@click.option("--rows-per-day", default=1500, show_default=True, type=click.IntRange(10, 200_000),
              help="Simulated mail volume.")
@click.option("--scenario", default="throttle:0.05,flaky:0.05,poison:0.2", show_default=True,
              help="Simulator faults to survive (see docs/simulator.md).")
@click.option("--seed", default=7, show_default=True, type=int)
@handle_errors
def demo(archive_path: str, days: int, rows_per_day: int, scenario: str, seed: int) -> None:
    """Start the simulator, collect a simulated tenant into the archive, show what you can do with it.

    Runs the real collector (MSAL token, Graph over HTTPS, quota governor, retries, window ledger)
    against an in-process simulator whose clock runs an hour per second.

    \b
    Example:
      exotrace demo
      exotrace search --status FilteredAsSpam --limit 5
    """
    from exotrace.collect import run_collector
    from exotrace.collect.logs import setup_logging
    from exotrace.config import load_config
    from exotrace.simulator import SimTenant, SimulatorConfig, start_simulator

    setup_logging("text", 30)
    archive = Path(archive_path).resolve()
    _claim_for_the_demo(archive)
    began = time.monotonic()
    tenant = SimTenant.default("contoso", seed)
    # The simulated clock runs an hour per second: start it a day back so the demo never writes mail
    # received in the future of the real clock.
    cfg_sim = SimulatorConfig(seed=seed, scenario=scenario, speed=3600.0, tenants=[tenant],
                              rows_per_day=rows_per_day, start=datetime.now(UTC) - timedelta(days=1))
    err_console.print(f"Starting the simulator (tenant contoso, {rows_per_day} rows/day, faults: {scenario})...",
                      markup=False)
    with start_simulator(cfg_sim) as sim, tempfile.TemporaryDirectory(prefix="exotrace-demo-") as tmp:
        env = "EXOTRACE_DEMO_SECRET"
        os.environ[env] = sim.tenants[0].client_secret
        cfg_path = Path(tmp) / "exotrace.toml"
        cfg_path.write_text(_config(sim, sim.tenants[0], archive, env, demo_page_size(days * rows_per_day)))
        cfg = load_config(cfg_path)
        err_console.print(f"Collecting {days} days of message trace into {archive} ...", markup=False)
        reports = asyncio.run(run_collector(cfg, mode="once", since=timedelta(days=days), clock=sim.clock))
        stats = sim.stats()
    r = reports[0]
    if not r.ok:
        raise click.ClickException(f"demo collection failed: {r.error}")
    from exotrace.archive import Archive

    with Archive.open(archive) as arch:
        total = arch.count()
        by_status = dict(arch.conn.execute(
            "SELECT status, count(*) FROM messages WHERE tenant = 'contoso' GROUP BY status ORDER BY 2 DESC"))
    elapsed = time.monotonic() - began
    err_console.print(
        f"\nCollected {r.rows} rows ({r.new} new, {r.updated} updated) in {r.requests} API requests "
        f"({r.throttled} throttled, {r.restarts} window restarts, {r.repaired} skiptokens repaired, "
        f"{stats.get('faults_injected', 0)} faults injected) in {elapsed:.1f}s.", markup=False)
    err_console.print(f"Archive {archive}: {total} rows; by status: " +
                      ", ".join(f"{k} {v}" for k, v in by_status.items()), markup=False)
    arg = "" if archive_path == "exotrace.db" else f" --archive {archive_path}"
    exe = command_name()
    examples = [
        f"{exe} search{arg} --status FilteredAsSpam --limit 5",
        f"{exe} search{arg} --sender '*@contoso.com' --direction outbound --limit 10",
        f"{exe} search{arg} --subject invoice --format json --limit 3",
        f"{exe} stats{arg}",
    ]
    err_console.print("\nTry:", markup=False)
    for e in examples:
        err_console.print(f"  {e}", markup=False, soft_wrap=True)
    err_console.print(f"\n$ {examples[0]}", markup=False, soft_wrap=True)
    from exotrace.cli.search import search

    args = ["--archive", str(archive), "--status", "FilteredAsSpam", "--limit", "5"]
    try:
        search.main(args=args, prog_name="exotrace search", standalone_mode=False)
    except SystemExit:
        pass
