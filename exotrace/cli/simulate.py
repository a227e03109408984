"""``exotrace simulate``: serve simulated tenants (Entra ID, Graph, RWS) until Ctrl-C."""

from __future__ import annotations

import signal
import threading
from datetime import UTC, datetime

import click

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


@click.command(name="simulate")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (loopback).")
@click.option("--port", default=0, show_default=True, type=int, help="Port; 0 picks a free one.")
@click.option("--seed", default=7, show_default=True, type=int, help="Seed: same seed, same mail flow.")
@click.option("--scenario", default="default", show_default=True,
              help="Comma-separated scenarios, optionally name:probability (throttle,flaky:0.2,latency,chaos).")
@click.option("--speed", default=1.0, show_default=True, type=float,
              help="Simulated seconds per real second.")
@click.option("--rows-per-day", default=500, show_default=True, type=int, help="Trace rows per tenant per day.")
@click.option("--tenants", "tenant_count", default=1, show_default=True, type=click.IntRange(1, 200),
              help="Number of simulated tenants.")
@click.option("--history-days", default=90, show_default=True, type=click.IntRange(1, 3650),
              help="Days of mail flow before the start (the APIs serve 90 at most).")
@click.option("--token-lifetime", default=3600, show_default=True, type=int,
              help="Access token lifetime, simulated seconds.")
@click.option("--start", "start_at", default=None, help="Simulated 'now' at start (ISO 8601 UTC); default: now.")
@click.option("--no-tls", is_flag=True, help="Serve plain HTTP instead of HTTPS.")
@click.option("--state-dir", type=click.Path(file_okay=False), default=None,
              help="Where to write the CA and client certificates (default: a temporary directory).")
def simulate(host: str, port: int, seed: int, scenario: str, speed: float, rows_per_day: int,
             tenant_count: int, history_days: int, token_lifetime: int, start_at: str | None, no_tls: bool,
             state_dir: str | None) -> None:
    """Serve simulated Microsoft 365 tenants: Entra ID tokens, Graph message traces and the Reporting
    Web Service, over HTTPS on loopback, until Ctrl-C.

    Prints the URLs, the CA file to trust, each tenant's (fake) credentials and a ready-to-use
    collector configuration. Scenarios: latency, throttle, flaky, slow, drop, truncate, malformed,
    poison, badrcpt, expire, retired, late, chaos (see docs/simulator.md).

    \b
    Example:
      exotrace simulate --port 8443 --seed 7 --scenario throttle,flaky --speed 60 --tenants 2
    """
    from exotrace.simulator import SimTenant, SimulatorConfig, start_simulator
    from exotrace.simulator.config import parse_scenario

    try:
        parse_scenario(scenario)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--scenario") from None
    if speed <= 0:
        raise click.BadParameter("must be positive", param_hint="--speed")
    try:
        start = datetime.fromisoformat(start_at.replace("Z", "+00:00")) if start_at else None
    except ValueError:
        raise click.BadParameter(f"{start_at!r} is not an ISO 8601 date-time", param_hint="--start") from None
    if start is not None and start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    tenants = [SimTenant.default(name, seed) for name in tenant_names(tenant_count)]
    cfg = SimulatorConfig(seed=seed, scenario=scenario, speed=speed, tls=not no_tls, host=host, port=port,
                          tenants=tenants, rows_per_day=rows_per_day, history_days=history_days,
                          token_lifetime=token_lifetime,
                          start=start, state_dir=state_dir)
    try:
        sim = start_simulator(cfg)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    try:
        echo = click.echo
        echo(f"exotrace simulator on {sim.base_url}  (seed {seed}, scenario {scenario}, speed {speed}x)")
        echo(f"  token endpoint  {sim.login_url}/<tenant_id>/oauth2/v2.0/token")
        echo(f"  Graph           {sim.graph_url}/v1.0/admin/exchange/tracing/messageTraces")
        echo(f"  RWS             {sim.rws_url}/MessageTrace")
        if sim.ca_file:
            echo(f"  CA to trust     {sim.ca_file}")
        echo("")
        for t in sim.tenants:
            echo(f"tenant {t.name}: tenant_id={t.tenant_id} client_id={t.client_id}")
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
