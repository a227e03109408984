"""``exotrace simulate``: serve simulated tenants (Entra ID, Graph, RWS) until Ctrl-C."""

from __future__ import annotations

import signal
import threading
from datetime import UTC, datetime
from typing import Any

import click

from exotrace.cli._common import fail
from exotrace.errors import ConfigError

TENANT_NAMES = ["contoso", "fabrikam", "northwind", "adatum", "tailspin", "litware", "woodgrove", "wingtip"]


def tenant_names(count: int) -> list[str]:
    """The first ``count`` tenant names (``tenant9``, ``tenant10``... past the built-in list)."""
    return [TENANT_NAMES[i] if i < len(TENANT_NAMES) else f"tenant{i + 1}" for i in range(count)]


def config_snippet(sim: object) -> str:
    """A collector configuration (TOML) pointing at the running simulator; secrets come from env vars."""
    lines = ['[archive]', 'path = "exotrace.db"', ""]
    for t in sim.tenants:  # type: ignore[attr-defined]
        env = f"EXOTRACE_SECRET_{t.name.upper().replace('-', '_')}"
        doms = ", ".join(f'"{d}"' for d in t.all_domains())
        lines += [
            "[[tenant]]",
            f'name = "{t.name}"',
            f'tenant_id = "{t.tenant_id}"',
            f'client_id = "{t.client_id}"',
            f'client_secret = "env:{env}"',
            f'# certificate = "{t.bundle_pem}"   # instead of the secret: key + certificate (PEM)',
            f"local_domains = [{doms}]",
            f'login_url = "{sim.login_url}"',  # type: ignore[attr-defined]
            f'graph_url = "{sim.graph_url}"',  # type: ignore[attr-defined]
            f'rws_url = "{sim.rws_url}"',  # type: ignore[attr-defined]
        ]
        if sim.ca_file:  # type: ignore[attr-defined]
            lines.append(f'ca_bundle = "{sim.ca_file}"')  # type: ignore[attr-defined]
        lines.append("")
    return "\n".join(lines)


def _settings_help() -> str:
    return ("Set any simulator option, KEY=VALUE (repeatable): an option of --list-options "
            "(rws_index=page, quota_requests=20, rws_throttle_status=429...) or a tenant's switch as "
            "TENANT.FLAG=VALUE, TENANT a name or * (fabrikam.graph_permission=false, *.rws_role=false).")


def _data_options(func: Any) -> Any:
    """Options shared by serving and exporting: what the simulated mail flow is."""
    for option in reversed([
        click.option("--seed", default=7, show_default=True, type=int, help="Seed: same seed, same mail flow."),
        click.option("--scenario", default="default", show_default=True,
                     help="Comma-separated scenarios, optionally name:probability (throttle,flaky:0.2,latency,"
                          "chaos); KEY=VALUE parts set options as --set does."),
        click.option("--rows-per-day", default=500, show_default=True, type=int,
                     help="Trace rows per tenant per day."),
        click.option("--tenants", "tenant_count", default=1, show_default=True, type=click.IntRange(1, 200),
                     help="Number of simulated tenants."),
        click.option("--history-days", default=90, show_default=True, type=click.IntRange(1, 3650),
                     help="Days of mail flow before the start (the APIs serve 90 at most)."),
        click.option("--start", "start_at", default=None,
                     help="Simulated 'now' at start (ISO 8601 UTC); default: now."),
        click.option("--set", "settings", multiple=True, metavar="KEY=VALUE", help=_settings_help()),
    ]):
        func = option(func)
    return func


def build_config(*, seed: int, scenario: str, rows_per_day: int, tenant_count: int, history_days: int,
                 start_at: str | None, settings: tuple[str, ...] | list[str] = (), speed: float = 1.0,
                 token_lifetime: int = 3600, tls: bool = True, host: str = "127.0.0.1", port: int = 0,
                 state_dir: str | None = None) -> Any:
    """The :class:`SimulatorConfig` the command line describes; usage errors as ``click.BadParameter``."""
    from exotrace.simulator import SimTenant, SimulatorConfig
    from exotrace.simulator.config import apply_options, parse_scenario

    try:
        parse_scenario(scenario)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--scenario") from None
    if not 0 < speed < 1e9:  # also refuses nan and inf
        raise click.BadParameter("must be a positive number below 1e9", param_hint="--speed")
    try:
        start = datetime.fromisoformat(start_at.replace("Z", "+00:00")) if start_at else None
    except ValueError:
        raise click.BadParameter(f"{start_at!r} is not an ISO 8601 date-time", param_hint="--start") from None
    if start is not None and start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    tenants = [SimTenant.default(name, seed) for name in tenant_names(tenant_count)]
    try:
        cfg = SimulatorConfig(seed=seed, scenario=scenario, speed=speed, tls=tls, host=host, port=port,
                              tenants=tenants, rows_per_day=rows_per_day, history_days=history_days,
                              token_lifetime=token_lifetime, start=start, state_dir=state_dir)
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None
    try:
        cfg = cfg.effective()
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--scenario") from None
    try:
        return apply_options(cfg, list(settings), source="")
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--set") from None


def changed_options(cfg: Any) -> list[str]:
    """``key=value`` for every option that differs from its default (shown when serving)."""
    from exotrace.simulator import SimulatorConfig
    from exotrace.simulator.config import OPTION_HELP

    shown = {"seed", "speed", "tls", "host", "port", "rows_per_day", "history_days", "token_lifetime", "start",
             "state_dir"}  # printed elsewhere, or flags of their own
    defaults = SimulatorConfig()
    out = []
    for key in OPTION_HELP:
        value = getattr(cfg, key)
        if key not in shown and value != getattr(defaults, key):
            out.append(f"{key}={str(value).lower() if isinstance(value, bool) else value}")
    return out


def broken_switches(tenant: Any) -> list[str]:
    """The tenant switches that differ from a healthy tenant."""
    healthy = {"secret_expired": False, "graph_permission": True, "service_principal": True, "rws_role": True,
               "rws_retired": False}
    return [f"{k}={str(getattr(tenant, k)).lower()}" for k, v in healthy.items() if getattr(tenant, k) != v]


@click.group(name="simulate", invoke_without_command=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (loopback).")
@click.option("--port", default=0, show_default=True, type=click.IntRange(0, 65535),
              help="Port; 0 picks a free one.")
@click.option("--speed", default=1.0, show_default=True, type=float,
              help="Simulated seconds per real second.")
@click.option("--token-lifetime", default=3600, show_default=True, type=int,
              help="Access token lifetime, simulated seconds.")
@click.option("--no-tls", is_flag=True, help="Serve plain HTTP instead of HTTPS.")
@click.option("--state-dir", type=click.Path(file_okay=False), default=None,
              help="Where to write the CA and client certificates (default: a temporary directory).")
@_data_options
@click.option("--list-options", is_flag=True, help="List every option --set accepts, with its default, and exit.")
@click.pass_context
def simulate(ctx: click.Context, host: str, port: int, speed: float, token_lifetime: int, no_tls: bool,
             state_dir: str | None, seed: int, scenario: str, rows_per_day: int, tenant_count: int,
             history_days: int, start_at: str | None, settings: tuple[str, ...], list_options: bool) -> None:
    """Serve simulated Microsoft 365 tenants: Entra ID tokens, Graph message traces and the Reporting
    Web Service, over HTTPS on loopback, until Ctrl-C.

    Prints the URLs, the CA file to trust, each tenant's (fake) credentials and a ready-to-use
    collector configuration. Scenarios: latency, throttle, flaky, slow, drop, truncate, malformed,
    poison, badrcpt, expire, retired, late, chaos (see docs/simulator.md). `exotrace simulate export`
    writes a PowerShell export of the same mail flow instead.

    \b
    Example:
      exotrace simulate --port 8443 --seed 7 --scenario throttle,flaky --speed 60 --tenants 2
      exotrace simulate --tenants 3 --set fabrikam.graph_permission=false --set northwind.rws_role=false
      exotrace simulate --scenario throttle --set rws_throttle_status=429 --set quota_requests=20
      exotrace simulate --list-options
    """
    from exotrace.simulator import start_simulator
    from exotrace.simulator.config import describe_options

    if ctx.invoked_subcommand is not None:
        return
    if list_options:
        click.echo(describe_options())
        return
    cfg = build_config(seed=seed, scenario=scenario, rows_per_day=rows_per_day, tenant_count=tenant_count,
                       history_days=history_days, start_at=start_at, settings=settings, speed=speed,
                       token_lifetime=token_lifetime, tls=not no_tls, host=host, port=port, state_dir=state_dir)
    try:
        sim = start_simulator(cfg)
    except OSError as exc:
        fail(f"cannot listen on {cfg.host}:{cfg.port}: {exc.strerror or exc}; choose another --port", 2)
    try:
        echo = click.echo
        echo(f"exotrace simulator on {sim.base_url}  (seed {cfg.seed}, scenario {sim.config.scenario}, "
             f"speed {cfg.speed}x)")
        options = changed_options(sim.config)
        if options:
            echo(f"  options         {', '.join(options)}")
        echo(f"  token endpoint  {sim.login_url}/<tenant_id>/oauth2/v2.0/token")
        echo(f"  Graph           {sim.graph_url}/v1.0/admin/exchange/tracing/messageTraces")
        echo(f"  RWS             {sim.rws_url}/MessageTrace")
        if sim.ca_file:
            echo(f"  CA to trust     {sim.ca_file}")
        echo("")
        for t in sim.tenants:
            broken = broken_switches(t)
            echo(f"tenant {t.name}: tenant_id={t.tenant_id} client_id={t.client_id}"
                 + (f"  (broken: {', '.join(broken)})" if broken else ""))
            echo(f"  client_secret={t.client_secret}   (simulator secret, not a real one)")
            echo(f"  certificate={t.cert_pem} key={t.key_pem}")
        echo("")
        echo("# Collector configuration (export the secrets first):")
        for t in sim.tenants:
            echo(f"#   export EXOTRACE_SECRET_{t.name.upper().replace('-', '_')}='{t.client_secret}'")
        echo(config_snippet(sim))
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        echo("Press Ctrl-C to stop.")
        while not stop.wait(0.5):
            pass
        click.echo("Stopping.")
    except KeyboardInterrupt:
        click.echo("\nStopping.")
    finally:
        stats = sim.stats()
        sim.stop()
        if stats:
            click.echo("Served: " + ", ".join(f"{k}={v}" for k, v in sorted(stats.items())))


@simulate.command(name="export")
@click.argument("path", type=click.Path(dir_okay=False, writable=True))
@click.option("--tenant", "tenant_name", default=None, help="Tenant to export (name); default: the first.")
@click.option("--since", default="1d", show_default=True,
              help="Window start: relative to the simulated now (30m, 2h, 7d) or ISO 8601.")
@click.option("--until", default="now", show_default=True, help="Window end, same forms.")
@click.option("--style", default="elastic", show_default=True,
              type=click.Choice(["elastic", "ps51", "ps51-offset", "ps51-wrapped", "ps7", "ps7-local",
                                 "ps7-unspecified"]),
              help="Which PowerShell wrote it: date form and escapes (see docs/simulator.md).")
@click.option("--array", is_flag=True, help="One indented JSON array instead of NDJSON.")
@click.option("--bom", is_flag=True, help="Start the UTF-8 file with a BOM.")
@click.option("--encoding", default="utf-8", show_default=True, type=click.Choice(["utf-8", "utf-16"]),
              help="utf-16: UTF-16LE with a BOM, as Windows PowerShell's Out-File writes.")
@click.option("--fields", default="v1", show_default=True, type=click.Choice(["v1", "v2"]),
              help="v1: the 14 Get-MessageTrace fields; v2: without StartDate, EndDate and Index.")
@click.option("--remoting", is_flag=True, help="Add PSComputerName, RunspaceId, PSShowComputerName.")
@click.option("--utc-offset", default=60, show_default=True, type=click.IntRange(-840, 840),
              help="Minutes east of UTC for the local-time styles (ps51-offset, ps51-wrapped, ps7-local).")
@_data_options
def export(path: str, tenant_name: str | None, since: str, until: str, style: str, array: bool, bom: bool,
           encoding: str, fields: str, remoting: bool, utc_offset: int, seed: int, scenario: str,
           rows_per_day: int, tenant_count: int, history_days: int, start_at: str | None,
           settings: tuple[str, ...]) -> None:
    """Write the simulated mail flow of a window as a PowerShell export (Get-MessageTrace | ConvertTo-Json),
    to feed `exotrace ingest` or another parser. The same seed and options give the rows the simulator
    serves.

    \b
    Example:
      exotrace simulate export trace.json --since 2d --style ps51 --bom
      exotrace simulate export trace.json --since 2026-04-28 --until 2026-04-30 --start 2026-05-01T00:00Z
    """
    from exotrace.simulator import start_simulator
    from exotrace.timeparse import parse_time

    if bom and encoding == "utf-16":
        raise click.BadParameter("utf-16 always has a BOM; --bom is for utf-8", param_hint="--bom")
    cfg = build_config(seed=seed, scenario=scenario, rows_per_day=rows_per_day, tenant_count=tenant_count,
                       history_days=history_days, start_at=start_at, settings=settings, tls=False)
    with start_simulator(cfg) as sim:
        now = sim.clock.now()
        try:
            start = parse_time(since, now=now)
            end = parse_time(until, now=now, end=True)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--since/--until") from None
        if end < start:
            raise click.BadParameter("--until is before --since", param_hint="--until")
        try:
            tenant = sim.tenant(tenant_name) if tenant_name else sim.tenants[0]
        except KeyError:
            raise click.BadParameter(f"no tenant {tenant_name!r} (tenants: "
                                     f"{', '.join(t.name for t in sim.tenants)})", param_hint="--tenant") from None
        n = sim.export_powershell(tenant.tenant_id, path, start, end, style=style, array=array, bom=bom,
                                  fields=fields, remoting=remoting, encoding=encoding, utc_offset=utc_offset,
                                  at=now)
    click.echo(f"Wrote {n} rows of tenant {tenant.name} ({start:%Y-%m-%dT%H:%M:%SZ} to {end:%Y-%m-%dT%H:%M:%SZ}, "
               f"style {style}) to {path}")
