"""Simulator configuration: the simulated tenants and the run options (seed, scenario, speed, TLS)."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from exotrace.errors import ConfigError


def stable_uuid(*parts: object) -> str:
    """A GUID derived from ``parts`` (same parts, same GUID on every machine and run)."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4))


def stable_secret(*parts: object) -> str:
    """A client-secret-looking string (40 chars, with the ``~`` Entra secrets carry) derived from ``parts``."""
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_."
    digest = hashlib.sha256(("secret:" + ":".join(str(p) for p in parts)).encode()).digest()
    body = "".join(alphabet[b % len(alphabet)] for b in digest + digest[:8])
    return body[:3] + "8Q~" + body[3:37]


@dataclass
class SimTenant:
    """One simulated Microsoft 365 tenant and its registered app.

    ``cert_pem``/``key_pem`` are filled in by the simulator at start (a self-signed client certificate
    registered for the app) unless given. The flags break the tenant on purpose.
    """

    name: str
    tenant_id: str
    client_id: str
    client_secret: str
    cert_pem: str = ""
    key_pem: str = ""
    #: Local domains; the first is the primary SMTP domain, ``<name>.onmicrosoft.com`` is always included.
    domains: list[str] = field(default_factory=list)
    #: Overrides :attr:`SimulatorConfig.rows_per_day` for this tenant.
    rows_per_day: int | None = None
    #: The client secret has expired: the token service answers AADSTS7000222.
    secret_expired: bool = False
    #: The app holds ExchangeMessageTrace.Read.All (Graph); False -> Graph 403.
    graph_permission: bool = True
    #: The Transport Data Platform service principal exists; False -> Graph 401 with Microsoft's text.
    service_principal: bool = True
    #: The app's service principal has the directory role RWS wants; False -> RWS 403.
    rws_role: bool = True
    #: The Reporting Web Service no longer serves message trace for this tenant (404).
    rws_retired: bool = False

    @classmethod
    def default(cls, name: str, seed: int = 0, **overrides: Any) -> SimTenant:
        """A tenant whose ids and secret are derived from ``name`` (and ``seed``), e.g. ``default("contoso")``."""
        slug = name.strip().lower()
        if not slug or not slug.replace("-", "").isalnum():
            raise ConfigError(f"tenant name {name!r} must be letters, digits and dashes", key="name")
        tenant = cls(
            name=slug,
            tenant_id=stable_uuid(seed, slug, "tenant"),
            client_id=stable_uuid(seed, slug, "client"),
            client_secret=stable_secret(seed, slug),
            domains=[f"{slug}.com", f"{slug}.co.uk", f"{slug}.onmicrosoft.com"],
        )
        return replace(tenant, **overrides)

    @property
    def organization(self) -> str:
        """The tenant's ``*.onmicrosoft.com`` name (RWS ``Organization``)."""
        return f"{self.name}.onmicrosoft.com"

    @property
    def bundle_pem(self) -> str:
        """Key and certificate in one PEM file (written beside ``cert_pem`` by the simulator)."""
        if not self.cert_pem.endswith("-cert.pem"):
            return ""
        return self.cert_pem[: -len("-cert.pem")] + ".pem"

    def all_domains(self) -> list[str]:
        doms = [d.lower() for d in self.domains] or [f"{self.name}.com"]
        if self.organization not in doms:
            doms.append(self.organization)
        return doms


#: Scenario name -> default probability (or 1.0 for switches). See docs/simulator.md.
SCENARIOS: dict[str, float] = {
    "default": 0.0,
    "latency": 1.0,
    "throttle": 0.15,
    "flaky": 0.1,
    "slow": 0.05,
    "drop": 0.05,
    "truncate": 0.05,
    "malformed": 0.05,
    "poison": 0.3,
    "badrcpt": 0.2,
    "expire": 1.0,
    "retired": 1.0,
    "late": 1.0,
}
#: ``chaos`` turns on every fault that a correct collector can recover from.
CHAOS = ("throttle", "flaky", "slow", "drop", "truncate", "malformed", "poison", "badrcpt", "expire")


def parse_scenario(text: str) -> dict[str, float]:
    """``"throttle,flaky:0.3"`` -> ``{"throttle": 0.15, "flaky": 0.3}`` (probabilities per request)."""
    out: dict[str, float] = {}
    for part in (text or "default").split(","):
        part = part.strip().lower()
        if not part:
            continue
        name, _, prob = part.partition(":")
        names = CHAOS if name == "chaos" else (name,)
        for n in names:
            if n not in SCENARIOS:
                known = ", ".join(sorted([*SCENARIOS, "chaos"]))
                raise ConfigError(f"unknown scenario {n!r} (known: {known})", key="scenario")
            try:
                p = float(prob) if prob else SCENARIOS[n]
            except ValueError:
                raise ConfigError(f"scenario {part!r}: probability must be a number", key="scenario") from None
            if not 0.0 <= p <= 1.0:
                raise ConfigError(f"scenario {part!r}: probability must be between 0 and 1", key="scenario")
            if n != "default":
                out[n] = p
    return out


@dataclass
class SimulatorConfig:
    """How to run the simulator. Every field has a working default."""

    seed: int = 7
    #: Comma-separated scenario names, optionally ``name:probability`` (``"throttle,flaky:0.2"``).
    scenario: str = "default"
    #: Simulated seconds per wall-clock second.
    speed: float = 1.0
    tls: bool = True
    host: str = "127.0.0.1"
    #: 0 picks a free port.
    port: int = 0
    #: None -> one tenant, ``SimTenant.default("contoso", seed)``.
    tenants: list[SimTenant] | None = None
    rows_per_day: int = 500
    #: How far back data exists (Microsoft keeps 90 days).
    history_days: int = 90
    #: Access token lifetime in simulated seconds.
    token_lifetime: int = 3600
    #: Simulated "now" at start; None -> the real time (UTC).
    start: datetime | None = None
    #: Where CA, server and client certificates are written; None -> a temporary directory.
    state_dir: str | None = None
    #: Graph quota: requests per rolling window per tenant (list and details share it).
    quota_requests: int = 100
    quota_window: float = 300.0
    #: Oldest StartDate the Reporting Web Service accepts, in days (the backing cmdlet allows 10).
    rws_max_age_days: int = 10
    #: RWS page size without ``$top`` and its cap (unconfirmed: 2000 per Elastic, 5000 per an XSOAR comment).
    rws_max_page: int = 2000
    #: HTTP status of a retired RWS (unconfirmed: 404 by default; 403 and 410 are the other candidates).
    rws_retired_status: int = 404
    #: How long a ``slow`` response stalls, in simulated seconds (long enough to trip a client timeout).
    slow_seconds: float = 120.0
    #: Generated rows kept in memory per tenant (about 0.5 KB each); older hours are regenerated on demand.
    cache_rows: int = 100_000

    def scenario_map(self) -> dict[str, float]:
        return parse_scenario(self.scenario)

    def resolved_tenants(self) -> list[SimTenant]:
        tenants = self.tenants if self.tenants is not None else [SimTenant.default("contoso", self.seed)]
        names = [t.name for t in tenants]
        if len(set(names)) != len(names):
            raise ConfigError("tenant names must be unique", key="tenants")
        return tenants
