"""``exotrace collect``, ``exotrace status`` and ``exotrace init``."""

from __future__ import annotations

import asyncio
import logging
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import click
import orjson

from exotrace.cli._common import err_console, fail, handle_errors, write_stdout
from exotrace.config import TEMPLATE, AppConfig, CollectorSettings, load_config, parse_duration
from exotrace.errors import ConfigError

CONFIG_HELP = "Configuration file (TOML); `exotrace init` writes a template."


def _since(value: str | None) -> timedelta | None:
    if value is None:
        return None
    d = parse_duration(value, key="--since")
    if d > timedelta(days=90):
        raise ConfigError("--since: Microsoft keeps 90 days of message trace; use 90d or less", key="--since")
    return d


def _select(cfg: AppConfig, names: tuple[str, ...]) -> list[Any]:
    if not cfg.tenants:
        raise ConfigError(f"{cfg.path}: no [[tenant]] table; add one (see `exotrace init`)", key="tenant")
    return [cfg.tenant(n) for n in names] if names else list(cfg.tenants)


class _Progress:
    """One bar per tenant, on a terminal, for the backfill: the share of the time span that was uncollected
    when the run started (live-tail reads and re-reads do not move it). It advances page by page: rows come
    newest first, so a read has covered its window from the oldest row seen to its end."""

    def __init__(self, enabled: bool, *, daemon: bool = False) -> None:
        self.enabled = enabled
        self.daemon = daemon
        self.bar: Any = None
        self.tasks: dict[str, Any] = {}
        self._handlers: list[tuple[logging.StreamHandler[Any], Any]] = []

    def __call__(self, tenant: str, done: float, total: float, rows: int) -> None:
        if not self.enabled or total <= 0:
            return
        if self.bar is None:
            self._start()
        if tenant not in self.tasks:
            self.tasks[tenant] = self.bar.add_task(f"backfill {tenant}", total=total, covered="")
        self.bar.update(self.tasks[tenant], completed=done, total=total, covered=_covered(done, total, rows))
        if self.daemon and all(t.finished for t in self.bar.tasks):
            self.stop()  # the daemon goes on with the live tail: plain log lines from here

    def _start(self) -> None:
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                            TextColumn("{task.fields[covered]}"), TimeElapsedColumn(), console=err_console)
        self.bar.start()
        # log lines go through the bar's console (printed above the bars) while it is shown
        for h in logging.getLogger("exotrace").handlers:
            if isinstance(h, logging.StreamHandler) and getattr(h, "_exotrace", False):
                self._handlers.append((h, h.setStream(sys.stderr)))

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.enabled = False
            for h, stream in self._handlers:
                h.setStream(stream)
            self._handlers.clear()


def _covered(done: float, total: float, rows: int) -> str:
    """``2.5/30 days, 81,000 rows`` (hours below two days)."""
    unit, size = ("days", 86400.0) if total >= 2 * 86400 else ("hours", 3600.0)
    return f"{done / size:.1f}/{total / size:.1f} {unit}, {rows:,} rows"


@click.command(name="collect")
@click.option("--config", "-c", "config_path", required=True, type=click.Path(dir_okay=False), help=CONFIG_HELP)
@click.option("--once", is_flag=True, help="Collect every window up to now, then exit (no daemon).")
@click.option("--settle", is_flag=True,
              help="With --once: also wait for every window's scheduled re-reads (late rows, final statuses).")
@click.option("--since", default=None, help="Backfill this far back (e.g. 30d; at most 90d), beside the live tail.")
@click.option("--tenant", "tenant_names", multiple=True, help="Only this tenant (repeatable).")
@click.option("--log-format", type=click.Choice(["text", "json"]), default=None, help="Log line format.")
@click.option("--quiet", "-q", is_flag=True, help="Warnings and errors only.")
@click.option("--no-progress", is_flag=True, help="No progress bars, even on a terminal.")
@handle_errors
def collect(config_path: str, once: bool, settle: bool, since: str | None, tenant_names: tuple[str, ...],
            log_format: str | None, quiet: bool, no_progress: bool) -> None:
    """Collect message traces from Microsoft 365 into the archive (and the configured sinks).

    Without --once, runs as a daemon: live tail (15-minute windows, and the open one read provisionally
    every minute), re-reads of recent windows, and the backfill; SIGTERM/SIGINT finish the page in hand,
    commit and exit 0. On a terminal, a progress bar per tenant shows the backfill. Exit codes: 0 done,
    2 config error, 3 a tenant's credentials or permissions are broken (after 3 tries with --once),
    4 some windows could not be collected (kept for retry).

    \b
    Example:
      export EXOTRACE_SECRET=...
      exotrace collect --config exotrace.toml --once --since 30d
      exotrace collect --config exotrace.toml            # daemon
    """
    from exotrace.collect.clockenv import clock_from_env
    from exotrace.collect.logs import setup_logging

    cfg = load_config(config_path)
    tenants = _select(cfg, tenant_names)
    level = logging.getLevelName(cfg.log_level.upper())
    setup_logging(log_format or cfg.log_format, max(level, logging.WARNING) if quiet else level)
    if settle and not once:
        raise ConfigError("--settle needs --once", key="--settle")
    mode = "settle" if settle else "once" if once else "daemon"
    clock = clock_from_env()
    progress = _Progress(enabled=sys.stderr.isatty() and not no_progress and not quiet, daemon=mode == "daemon")
    started = clock.now()
    try:
        reports = asyncio.run(_run(cfg, mode, _since(since), tenants, clock, progress))
    finally:
        progress.stop()
    _summary(reports, started, clock.now(), cfg)
    # the daemon ends only when asked to (SIGTERM/SIGINT): a clean stop is 0; tenant errors are in the summary,
    # the logs and `status`
    codes = [r.exit_code for r in reports if r.exit_code] if mode != "daemon" else []
    if codes:
        sys.exit(3 if 3 in codes else max(codes))


async def _run(cfg: AppConfig, mode: str, since: timedelta | None, tenants: list[Any], clock: Any,
               progress: _Progress) -> list[Any]:
    from exotrace.collect import run_collector

    return await run_collector(cfg, mode=mode, since=since, tenants=tenants, clock=clock, signals=True,
                               progress=progress)


def _summary(reports: list[Any], started: datetime, ended: datetime, cfg: AppConfig) -> None:
    for r in reports:
        state = "ok" if r.ok else f"FAILED ({r.error})"
        err_console.print(
            f"{r.name}: {state} windows={r.windows_read} rows={r.rows} new={r.new} updated={r.updated} "
            f"requests={r.requests} throttled={r.throttled} restarts={r.restarts}", markup=False,
            highlight=False, soft_wrap=True)
        for w in r.warnings[-3:]:
            err_console.print(f"  warning: {w}", markup=False, highlight=False, soft_wrap=True)
    err_console.print(f"archive: {cfg.archive_path}", markup=False, highlight=False)


@click.command(name="status")
@click.option("--config", "-c", "config_path", required=True, type=click.Path(dir_okay=False), help=CONFIG_HELP)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@handle_errors
def status(config_path: str, as_json: bool) -> None:
    """Per tenant: coverage, lag, live tail, windows by state, last error, quota use and sink metrics.

    Live while a daemon runs: the collector writes each tenant's status as it changes.

    \b
    Example:
      exotrace status --config exotrace.toml
      exotrace status --config exotrace.toml --json | jq '.tenants[].lag_seconds'
    """
    from exotrace.collect import open_archive
    from exotrace.collect.clockenv import clock_from_env
    from exotrace.state.ledger import Ledger

    cfg = load_config(config_path, secrets=False)  # status reads the ledger: no secret is needed
    if not Path(cfg.archive_path).exists():
        fail(f"no archive at {cfg.archive_path} yet; run `exotrace collect --config {config_path} --once`", 2)
    now = clock_from_env().now()
    archive = open_archive(cfg.archive_path)
    try:
        ledger = Ledger(archive.conn)
        names = [t.name for t in cfg.tenants] + [n for n in ledger.tenants()
                                                 if n not in {t.name for t in cfg.tenants}]
        out = {"now": now.isoformat(), "archive": str(cfg.archive_path), "rows": archive.count(),
               "tenants": [_tenant_status(ledger, n, now, cfg) for n in names], "sinks": _sink_metrics(cfg)}
    finally:
        archive.close()
    if as_json:
        write_stdout(orjson.dumps(out, option=orjson.OPT_INDENT_2, default=str) + b"\n")
        return
    _print_status(out)


def _tenant_status(ledger: Any, name: str, now: datetime, cfg: AppConfig) -> dict[str, Any]:
    from exotrace.state.ledger import parse_time

    s = ledger.summary(name)
    info = ledger.tenant_info(name)
    tenant = next((t for t in cfg.tenants if t.name == name), None)
    settings = tenant.settings if tenant else CollectorSettings()
    horizon = tenant.horizon if tenant else timedelta(days=90)
    warn, period = settings.horizon_warning, settings.quota_period
    until = s["complete_until"]
    at_risk = [w.label() for w in ledger.windows(name, ("pending", "failed"))
               if w.next_read is not None and w.start < now - horizon + warn]
    live = parse_time(info["live_until"]) if info.get("live_until") else None
    retry = parse_time(info["retry_at"]) if info.get("retry_at") else None
    return {
        "tenant": name,
        "api": info.get("api"),
        "first": s["first"].isoformat(timespec="seconds") if s["first"] else None,
        "complete_until": until.isoformat(timespec="seconds") if until else None,
        "lag_seconds": round((now - until).total_seconds()) if until else None,
        "live_until": live.isoformat(timespec="seconds") if live else None,
        "live_lag_seconds": round((now - live).total_seconds()) if live else None,
        "windows": s["windows"],
        "coverage_hours": {k: round(v / 3600, 2) for k, v in s["seconds"].items()},
        "rows_read": info.get("rows", 0),
        "requests": info.get("requests", 0),
        "throttled": info.get("throttled", 0),
        "last_success": info.get("last_success"),
        "last_error": info.get("last_error"),
        "last_error_at": info.get("last_error_at"),
        "retry_at": info["retry_at"] if retry and retry > now else None,
        "quota": {"used": _quota_used(info.get("quota_json"), now, period),
                  "limit": info.get("quota_limit") or (settings.quota if tenant else 0),
                  "period_seconds": round(period.total_seconds()), "as_of": info.get("updated_at")},
        "window_errors": s["errors"],
        "horizon_at_risk": at_risk,
        "warning": info.get("warning"),
    }


def _quota_used(saved: str | None, now: datetime, period: timedelta) -> int:
    """Requests in the quota period ending now, from the request times the collector last saved."""
    if not saved:
        return 0
    from exotrace.collect.quota import recent_stamps

    try:
        stamps = orjson.loads(saved)
    except orjson.JSONDecodeError:
        return 0
    return len(recent_stamps(stamps, now, period)) if isinstance(stamps, list) else 0


def _sink_metrics(cfg: AppConfig) -> Any:
    if not cfg.sinks:
        return {}
    try:
        from exotrace.sinks.pipeline import read_metrics

        return read_metrics(Path(f"{cfg.archive_path}.spool"))
    except Exception:  # noqa: BLE001 - metrics are informative only
        return {}


def _print_status(out: dict[str, Any]) -> None:
    from rich.table import Table

    cols = ("tenant", "coverage", "lag", "live tail", "windows", "last error", "quota")
    rows = []
    for t in out["tenants"]:
        cov = f"{t['first'] or '-'} .. {t['complete_until'] or '-'}"
        lag = "-" if t["lag_seconds"] is None else str(timedelta(seconds=t["lag_seconds"]))
        live = "-" if t["live_lag_seconds"] is None else str(timedelta(seconds=t["live_lag_seconds"]))
        wins = ", ".join(f"{k} {v}" for k, v in sorted(t["windows"].items())) or "none"
        err = "see below" if t["last_error"] else "-"
        q = t["quota"]
        quota = f"{q['used']}/{q['limit']} per {timedelta(seconds=q['period_seconds'])}"
        rows.append((t["tenant"], cov, lag, live, wins, err, quota))
    title = f"exotrace status ({out['archive']}, {out['rows']} rows)"
    if err_console.is_terminal:
        table = Table(title=title)
        for col in cols:
            table.add_column(col)
        for row in rows:
            table.add_row(*row)
        err_console.print(table)
    else:  # one line per tenant: greppable
        err_console.print(title, markup=False, highlight=False, soft_wrap=True)
        for row in rows:
            err_console.print("; ".join(f"{c}: {v}" for c, v in zip(cols, row, strict=True)), markup=False,
                              highlight=False, soft_wrap=True)
    for t in out["tenants"]:
        if t["last_error"]:
            retry = f"; retrying at {t['retry_at']}" if t["retry_at"] else ""
            err_console.print(f"{t['tenant']}: last error ({t['last_error_at'] or '?'}{retry}): {t['last_error']}",
                              markup=False, highlight=False, soft_wrap=True)
        if t.get("warning"):
            err_console.print(f"{t['tenant']}: warning: {t['warning']}", markup=False, soft_wrap=True)
    for t in out["tenants"]:
        for w in t["horizon_at_risk"][:5]:
            err_console.print(f"warning: {t['tenant']}: window {w} is uncollected and near the API horizon",
                              markup=False, soft_wrap=True)
        if len(t["horizon_at_risk"]) > 5:
            err_console.print(f"warning: {t['tenant']}: {len(t['horizon_at_risk']) - 5} more windows near the "
                              "API horizon", markup=False)
    for name, m in (out.get("sinks") or {}).items():
        err_console.print(f"sink {name}: " + " ".join(f"{k}={v}" for k, v in m.items()), markup=False)


@click.command(name="init")
@click.argument("path", default="exotrace.toml", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@handle_errors
def init(path: str, force: bool) -> None:
    """Write a commented configuration template to PATH (default exotrace.toml).

    \b
    Example:
      exotrace init exotrace.toml && $EDITOR exotrace.toml
    """
    p = Path(path)
    if p.exists() and not force:
        fail(f"{p} exists; use --force to overwrite it", 2)
    p.write_text(TEMPLATE, encoding="utf-8")
    err_console.print(f"wrote {p}; edit the [[tenant]] table, then run: "
                      f"exotrace doctor --config {p}", markup=False)



