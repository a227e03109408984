"""``exotrace doctor``: check every tenant's credentials, permissions and endpoints; print exact fixes."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import click
import httpx

from exotrace.cli._common import err_console, handle_errors
from exotrace.config import CLOUDS, TenantConfig, load_config
from exotrace.errors import AuthError, ExotraceError

GRAPH_ROLE = "ExchangeMessageTrace.Read.All"
RWS_ROLE = "ReportingWebService.Read.All"
MAX_SKEW = timedelta(minutes=5)


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    kind: str = "auth"  # auth | network | config


@dataclass
class TenantChecks:
    tenant: str
    checks: list[Check] = field(default_factory=list)

    def add(self, *args: Any, **kw: Any) -> Check:
        c = Check(*args, **kw)
        self.checks.append(c)
        return c


async def check_tenant(t: TenantConfig, clock: Any) -> TenantChecks:
    from exotrace.auth import TokenProvider, decode_claims
    from exotrace.collect.quota import QuotaGovernor
    from exotrace.net import make_async_client, redact
    from exotrace.sources.base import ApiCaller, BadRequest, api_time

    out = TenantChecks(t.name)
    cloud = CLOUDS[t.cloud]
    note = f" ({cloud.note})" if cloud.note else ""
    out.add("config", True, f"api={t.api} cloud={t.cloud} login={t.login_url} "
            f"{'graph=' + t.graph_url if t.api == 'graph' else 'rws=' + t.rws_url}{note}", kind="config")
    if not cloud.graph_trace:
        out.checks[-1].detail += "; Graph message trace is worldwide-only, so this cloud uses the RWS"
    async with make_async_client(ca_bundle=t.ca_bundle, proxy=t.proxy, timeout=30.0) as client:
        # reachability and clock skew (the service's Date header against this machine's clock)
        api_base = t.graph_url if t.api == "graph" else t.rws_url
        for label, url in (("login endpoint", f"{t.authority}/v2.0/.well-known/openid-configuration"),
                           ("API endpoint", api_base)):
            try:
                resp = await client.get(url)
            except httpx.HTTPError as exc:
                out.add(f"reach {label}", False, f"{url}: {redact(exc) or type(exc).__name__}",
                        "check the network path, proxy and ca_bundle (TLS is always verified)", kind="network")
                continue
            out.add(f"reach {label}", True, f"{url} answered HTTP {resp.status_code}", kind="network")
            date = resp.headers.get("Date")
            if date and label == "API endpoint":
                try:
                    skew = parsedate_to_datetime(date) - datetime.now(UTC)
                except (TypeError, ValueError):
                    continue
                ok = abs(skew) <= MAX_SKEW
                out.add("clock skew", ok, f"{skew.total_seconds():+.0f}s against the service's Date header",
                        "synchronise this machine's clock (NTP): tokens and windows depend on it", kind="network")
        # token and claims
        tokens = TokenProvider(t, clock)
        try:
            token = await tokens.token()
        except ExotraceError as exc:
            if isinstance(exc, AuthError):
                out.add("token", False, redact(exc), "see the AADSTS code above; fix the credential in Entra ID",
                        kind="auth")
            else:
                out.add("token", False, redact(exc), f"the sign-in endpoint {t.login_url} did not answer: check "
                        "login_url/cloud, the proxy and the firewall (reach checks above)", kind="network")
            tokens.close()
            return out
        claims = decode_claims(token)
        roles = claims.get("roles") or []
        exp = claims.get("exp")
        exp_text = datetime.fromtimestamp(exp, UTC).isoformat() if isinstance(exp, int | float) else "?"
        out.add("token", True, f"tid={claims.get('tid')} aud={claims.get('aud')} appid="
                f"{claims.get('appid') or claims.get('azp')} roles={roles} exp={exp_text}")
        if claims.get("tid") and str(claims["tid"]).lower() != t.tenant_id.lower():
            out.add("tenant id", False, f"token tid {claims['tid']} != tenant_id {t.tenant_id}",
                    "set tenant_id to the directory (tenant) ID of the tenant to collect")
        need = GRAPH_ROLE if t.api == "graph" else RWS_ROLE
        if need in roles:
            out.add("permission", True, f"{need} granted")
        else:
            fix = ("Entra ID > App registrations > API permissions > Add > Microsoft Graph > Application "
                   f"permissions > {GRAPH_ROLE}, then Grant admin consent") if t.api == "graph" else (
                   "Entra ID > App registrations > API permissions > Add > APIs my organization uses > "
                   f"Office 365 Exchange Online > Application permissions > {RWS_ROLE}, then Grant admin consent")
            out.add("permission", False, f"the token has no {need} role", fix)
        # one real list request for the last hour
        quota = QuotaGovernor(t.settings.quota, t.settings.quota_period, clock)
        caller = ApiCaller(t, client, tokens, quota, clock, max_attempts=3)
        end = clock.now().replace(microsecond=0) - timedelta(minutes=2)
        start = end - timedelta(hours=1)
        try:
            if t.api == "graph":
                url = f"{t.graph_url}/{t.graph_version}/admin/exchange/tracing/messageTraces"
                params = {"$filter": f"receivedDateTime ge {api_time(start)} and receivedDateTime le "
                                     f"{api_time(end, end=True)}", "$top": "1"}
                label = "Graph service principal and list"
            else:
                url = f"{t.rws_url}/MessageTrace"
                params = {"$filter": f"StartDate eq datetime'{api_time(start)}' and EndDate eq "
                                     f"datetime'{api_time(end, end=True)}'", "$top": "1"}
                label = "RWS role and list"
            data, _, _ = await caller.get_json(url, params)
            rows = data.get("value", data.get("d", {}).get("results", []) if isinstance(data.get("d"), dict) else [])
            out.add(label, True, f"list request OK ({len(rows)} row(s) in the probe)")
        except AuthError as exc:
            text = redact(exc)
            detail, _, fix = text.partition(" -> ")
            out.add(label, False, detail, fix or "check the app's permissions and roles")
        except BadRequest as exc:
            out.add(label, False, redact(exc), "report this: the probe query was refused", kind="network")
        except ExotraceError as exc:
            out.add(label, False, redact(exc), "check graph_url/rws_url, the network and the service health",
                    kind="network")
        finally:
            tokens.close()
    return out


async def check_sinks_section(tables: tuple[dict[str, Any], ...], base: Path | None = None) -> TenantChecks:
    """The ``[[sink]]`` tables: each sink reachable and authenticated (see exotrace.sinks.health)."""
    from exotrace.sinks import check_sink_health, load_sinks

    out = TenantChecks("sinks")
    for h in await check_sink_health(load_sinks(list(tables), base)):
        out.add(f"sink {h.name}", h.ok, h.detail, h.fix, kind=h.kind)
    return out


@click.command(name="doctor")
@click.option("--config", "-c", "config_path", required=True, type=click.Path(dir_okay=False),
              help="Configuration file (TOML).")
@click.option("--tenant", "tenant_names", multiple=True, help="Only this tenant (repeatable).")
@handle_errors
def doctor(config_path: str, tenant_names: tuple[str, ...]) -> None:
    """Check credentials, permissions, service principal, roles, reachability and clock skew.

    For each tenant: acquires a token and decodes its claims (tid, roles, aud, exp), checks the
    permission (ExchangeMessageTrace.Read.All or ReportingWebService.Read.All), makes one list request
    (Graph: the Transport Data Platform service principal; RWS: the directory role), and compares the
    service's clock with this machine's. Then each [[sink]]: reachable, credentials accepted (and, for
    Elasticsearch, the index privileges), without sending data. Each failure prints the exact fix.
    Exit codes: 0 all good, 2 configuration error, 3 credential or permission problem, 4 an endpoint
    cannot be reached.

    \b
    Example:
      exotrace doctor --config exotrace.toml
    """
    from exotrace.collect.clockenv import clock_from_env

    cfg = load_config(config_path)
    tenants = [cfg.tenant(n) for n in tenant_names] if tenant_names else list(cfg.tenants)
    clock = clock_from_env()

    async def run_all() -> list[TenantChecks]:
        return list(await asyncio.gather(*(check_tenant(t, clock) for t in tenants)))

    results = asyncio.run(run_all())
    if cfg.sinks:
        results.append(asyncio.run(check_sinks_section(cfg.sinks, cfg.folder)))
    code = 0
    for res in results:
        err_console.print(f"[bold]{res.tenant}[/]")
        for c in res.checks:
            mark = "[green]ok  [/]" if c.ok else "[red]FAIL[/]"
            err_console.print(f"  {mark} {c.name}: ", end="")
            err_console.print(c.detail, markup=False, highlight=False, soft_wrap=True)
            if not c.ok:
                err_console.print(f"       fix: {c.fix}", markup=False, highlight=False, soft_wrap=True)
                code = max(code, 3 if c.kind == "auth" else 4 if c.kind == "network" else 2)
    if code == 4 and any(not c.ok and c.kind == "auth" for r in results for c in r.checks):
        code = 3
    err_console.print("all checks passed" if code == 0 else "some checks failed", markup=False)
    sys.exit(code)
