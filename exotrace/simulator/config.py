"""Simulator configuration: the simulated tenants and the run options (seed, scenario, speed, TLS)."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
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
    """``"throttle,flaky:0.3"`` -> ``{"throttle": 0.15, "flaky": 0.3}`` (probabilities per request).

    ``key=value`` parts are options, not scenarios (see :func:`scenario_options`); they are skipped here."""
    out: dict[str, float] = {}
    for part in (text or "default").split(","):
        part = part.strip().lower()
        if not part or "=" in part:
            continue
        name, _, prob = part.partition(":")
        names = CHAOS if name == "chaos" else (name,)
        for n in names:
            if n not in SCENARIOS:
                known = ", ".join(sorted([*SCENARIOS, "chaos"]))
                raise ConfigError(f"unknown scenario {n!r} (known: {known}; options are key=value)",
                                  key="scenario")
            try:
                p = float(prob) if prob else SCENARIOS[n]
            except ValueError:
                raise ConfigError(f"scenario {part!r}: probability must be a number", key="scenario") from None
            if not 0.0 <= p <= 1.0:
                raise ConfigError(f"scenario {part!r}: probability must be between 0 and 1", key="scenario")
            if n != "default":
                out[n] = p
    return out


def scenario_options(text: str) -> dict[str, str]:
    """The ``key=value`` parts of a scenario string: ``"retired,rws_retired_status=410"`` ->
    ``{"rws_retired_status": "410"}``. Keys are option names (:data:`OPTION_HELP`), or ``tenant.flag``."""
    out: dict[str, str] = {}
    for part in (text or "").split(","):
        key, eq, value = part.partition("=")
        if eq:
            out[key.strip()] = value.strip()
    return out


#: Every option of :class:`SimulatorConfig` that ``--set key=value`` and scenario ``key=value`` parts can
#: change, with its help text (``exotrace simulate --list-options``). Unconfirmed behaviours of the
#: services (msapi.md marks them so) are options whose default is the most likely behaviour.
OPTION_HELP: dict[str, str] = {
    "seed": "Seed of the mail flow, ids and faults.",
    "speed": "Simulated seconds per wall-clock second.",
    "tls": "HTTPS with a generated CA (false: plain HTTP).",
    "host": "Address to listen on.",
    "port": "Port; 0 picks a free one.",
    "rows_per_day": "Trace rows per tenant per day.",
    "history_days": "Days of mail flow before the start (the APIs serve 90 at most).",
    "token_lifetime": "Access token lifetime, simulated seconds.",
    "start": "Simulated 'now' at start (ISO 8601, UTC when no zone); empty: the real time.",
    "state_dir": "Where the CA, server and client certificates are written; empty: a temporary directory.",
    "quota_requests": "Graph quota: requests per rolling window per tenant (list and details share it).",
    "quota_window": "Graph quota window, simulated seconds.",
    "slow_seconds": "How long a 'slow' fault stalls, simulated seconds.",
    "cache_rows": "Generated rows kept in memory per tenant (older hours are regenerated on demand).",
    "rws_max_age_days": "Oldest RWS StartDate accepted, in days (the cmdlet behind RWS allows 10).",
    "rws_old_start": "RWS StartDate older than rws_max_age_days: reject (400 with the cmdlet text) or clip "
                     "(serve the part that is young enough). Unconfirmed.",
    "rws_max_page": "RWS page size without $top, and the largest page (unconfirmed: 2000 or 5000).",
    "rws_top_over_max": "RWS $top above rws_max_page: cap (serve rws_max_page) or reject (400). Unconfirmed.",
    "rws_index": "RWS Index: absolute (offset in the window) or page (restarts at 0 on every page). Unconfirmed.",
    "rws_echo_top": "RWS next links repeat the request's $top. Unconfirmed.",
    "rws_received_z": "RWS JSON light and Atom write Received with a trailing Z (some captures have it).",
    "rws_filter": "RWS $filter: strict (eq and 'and' only, anything else 400) or lenient (or, ne, not, "
                  "functions accepted and ignored, the last value per field wins, as Graph). Unconfirmed.",
    "rws_orderby": "RWS $orderby: ignore or reject (400). Unconfirmed.",
    "rws_default_format": "RWS format when neither $format=json nor Accept: application/json is asked: "
                          "atom, light or verbose. Unconfirmed (Atom per the docs).",
    "rws_verbose_next": "RWS verbose JSON next link d.__next: absolute URL, relative, or none. Unconfirmed.",
    "rws_light_content_type": "Content-Type of RWS JSON light responses. Unconfirmed.",
    "rws_throttle_status": "RWS answer to the throttle scenario: 503 (empty body) or 429 (OData error). "
                           "Unconfirmed.",
    "rws_401_body": "RWS answer to a bad or expired bearer token: none (WWW-Authenticate only), html (IIS "
                    "401 page) or json (OData error). Unconfirmed.",
    "rws_bad_token_status": "HTTP status of RWS's answer to a bad or expired bearer token: 401, or 403 (its "
                            "error page lists wrong credentials under 403). Unconfirmed.",
    "rws_retired_status": "HTTP status of a retired RWS: 404, 403 or 410. Unconfirmed.",
    "graph_beta_status": "Status casing on /beta: camel (delivered, as v1.0 and Elastic's beta captures) or "
                         "pascal (Delivered, as the beta doc sample).",
    "graph_403": "Graph body without the permission: missing-role (Graph's usual Forbidden text) or "
                 "request-denied (Authorization_RequestDenied). Unconfirmed.",
    "graph_status_filter": "Graph status eq values: insensitive (any case) or strict (exact enum member, "
                           "else 400). Unconfirmed.",
    "graph_requires_directory_role": "Graph also needs the directory role (a tenant's rws_role): without it, "
                                     "403. Unconfirmed (one third-party guide says so).",
    "graph_details_quota": "getDetailsByRecipient quota: shared with the list (Microsoft) or separate (a "
                           "third party's observation).",
    "graph_details_page": "getDetailsByRecipient page size with @odata.nextLink; 0: one page. Unconfirmed.",
    "graph_details_unknown": "getDetailsByRecipient for an unknown id or recipient: empty (value []) or 404. "
                             "Unconfirmed.",
}
#: Allowed values of the options that take one of a few words or numbers.
OPTION_CHOICES: dict[str, tuple[Any, ...]] = {
    "rws_old_start": ("reject", "clip"),
    "rws_top_over_max": ("cap", "reject"),
    "rws_index": ("absolute", "page"),
    "rws_filter": ("strict", "lenient"),
    "rws_orderby": ("ignore", "reject"),
    "rws_default_format": ("atom", "light", "verbose"),
    "rws_verbose_next": ("absolute", "relative", "none"),
    "rws_throttle_status": (503, 429),
    "rws_401_body": ("none", "html", "json"),
    "rws_bad_token_status": (401, 403),
    "rws_retired_status": (404, 403, 410),
    "graph_beta_status": ("camel", "pascal"),
    "graph_403": ("missing-role", "request-denied"),
    "graph_status_filter": ("insensitive", "strict"),
    "graph_details_quota": ("shared", "separate"),
    "graph_details_unknown": ("empty", "404"),
}
#: Tenant fields settable as ``<tenant>.<field>=value`` (``*`` for every tenant).
TENANT_OPTIONS: dict[str, str] = {
    "secret_expired": "The client secret has expired: AADSTS7000222 (the certificate still works).",
    "graph_permission": "The app holds ExchangeMessageTrace.Read.All; false: Graph 403.",
    "service_principal": "The Transport Data Platform service principal exists; false: Graph 401.",
    "rws_role": "The app has the directory role RWS wants; false: RWS 403.",
    "rws_retired": "RWS no longer serves message trace for this tenant (rws_retired_status).",
    "rows_per_day": "Per-tenant volume (overrides rows_per_day).",
    "domains": "Local domains, separated by '+' or ';' (the first is the primary SMTP domain).",
}


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
    # ---- unconfirmed behaviours (msapi.md): the defaults are the most likely; see OPTION_HELP ----
    rws_old_start: str = "reject"
    rws_top_over_max: str = "cap"
    rws_index: str = "absolute"
    rws_echo_top: bool = True
    rws_received_z: bool = False
    rws_filter: str = "strict"
    rws_orderby: str = "ignore"
    rws_default_format: str = "atom"
    rws_verbose_next: str = "absolute"
    rws_light_content_type: str = "application/json;odata=minimalmetadata;streaming=true;charset=utf-8"
    rws_throttle_status: int = 503
    rws_401_body: str = "none"
    rws_bad_token_status: int = 401
    graph_beta_status: str = "camel"
    graph_403: str = "missing-role"
    graph_status_filter: str = "insensitive"
    graph_requires_directory_role: bool = False
    graph_details_quota: str = "shared"
    graph_details_page: int = 0
    graph_details_unknown: str = "empty"

    def __post_init__(self) -> None:
        for key, allowed in OPTION_CHOICES.items():
            value = getattr(self, key)
            if value not in allowed:
                raise ConfigError(f"{key} must be one of {', '.join(map(str, allowed))} (got {value!r})", key=key)
        for key in ("rows_per_day", "history_days", "token_lifetime", "quota_requests", "rws_max_age_days",
                    "cache_rows", "graph_details_page"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key} must not be negative", key=key)
        for key in ("rws_max_page", "quota_requests"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be at least 1", key=key)
        if self.speed <= 0:
            raise ConfigError("speed must be positive", key="speed")
        if self.quota_window <= 0 or self.slow_seconds < 0:
            raise ConfigError("quota_window must be positive and slow_seconds not negative", key="quota_window")

    def scenario_map(self) -> dict[str, float]:
        return parse_scenario(self.scenario)

    def effective(self) -> SimulatorConfig:
        """This configuration with the scenario's ``key=value`` options applied (they win over the
        fields) and removed from ``scenario``; the same object when the scenario has none."""
        opts = scenario_options(self.scenario)
        if not opts:
            return self
        names = [p for p in self.scenario.split(",") if "=" not in p and p.strip()]
        cleaned = replace(self, scenario=",".join(names) or "default")
        return apply_options(cleaned, opts, source="scenario")

    def resolved_tenants(self) -> list[SimTenant]:
        tenants = self.tenants if self.tenants is not None else [SimTenant.default("contoso", self.seed)]
        names = [t.name for t in tenants]
        if len(set(names)) != len(names):
            raise ConfigError("tenant names must be unique", key="tenants")
        return tenants


def _coerce(text: str, kind: str) -> Any:
    """Option text -> the field's type (``kind`` is the annotation as written)."""
    raw = text.strip()
    if kind.endswith("| None") and raw.lower() in ("", "none", "null"):
        return None
    base = kind.replace("| None", "").strip()
    if base == "bool":
        low = raw.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError("expected true or false")
    if base == "int":
        return int(raw.replace("_", ""))
    if base == "float":
        return float(raw)
    if base == "datetime":
        value = datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if base == "list[str]":
        return [d.strip() for d in raw.replace(";", "+").split("+") if d.strip()]
    return raw


def apply_options(config: SimulatorConfig, options: dict[str, str] | list[str], source: str = "--set"
                  ) -> SimulatorConfig:
    """A copy of ``config`` with ``options`` (``{"key": "value"}`` or ``["key=value", ...]``) applied.

    Keys are :data:`OPTION_HELP` names, or ``<tenant>.<field>`` / ``*.<field>`` for :data:`TENANT_OPTIONS`
    (tenant by name). Values are text converted to the field's type. Raises :class:`ConfigError` naming the
    known keys or the allowed values.
    """
    pre = f"{source} " if source else ""
    if isinstance(options, list):
        pairs: dict[str, str] = {}
        for item in options:
            key, eq, value = item.partition("=")
            if not eq or not key.strip():
                raise ConfigError(f"{pre}{item!r}: expected key=value", key=source)
            pairs[key.strip()] = value
        options = pairs
    kinds = {f.name: str(f.type) for f in fields(SimulatorConfig)}
    tenant_kinds = {f.name: str(f.type) for f in fields(SimTenant)}
    changes: dict[str, Any] = {}
    tenant_changes: list[tuple[str, str, Any]] = []
    for key, text in options.items():
        target, dot, name = key.rpartition(".")
        if dot:
            if name not in TENANT_OPTIONS:
                raise ConfigError(f"{pre}{key}: unknown tenant option {name!r} (known: "
                                  f"{', '.join(TENANT_OPTIONS)})", key=key)
            try:
                tenant_changes.append((target.lower(), name, _coerce(text, tenant_kinds[name])))
            except ValueError as exc:
                raise ConfigError(f"{pre}{key}={text}: {exc}", key=key) from None
            continue
        if key not in OPTION_HELP:
            raise ConfigError(f"{pre}unknown option {key!r} (known: {', '.join(sorted(OPTION_HELP))}; "
                              f"tenant options: <tenant>.{{{','.join(TENANT_OPTIONS)}}}; "
                              "see exotrace simulate --list-options)", key=key)
        try:
            value = _coerce(text, kinds[key])
        except ValueError as exc:
            raise ConfigError(f"{pre}{key}={text}: {exc}", key=key) from None
        allowed = OPTION_CHOICES.get(key)
        if allowed is not None and value not in allowed:
            raise ConfigError(f"{pre}{key}={text}: must be one of {', '.join(map(str, allowed))}", key=key)
        changes[key] = value
    out = replace(config, **changes)
    if tenant_changes:
        tenants = [replace(t) for t in out.resolved_tenants()]
        for target, name, value in tenant_changes:
            hits = [t for t in tenants if target in ("*", t.name, t.tenant_id.lower())]
            if not hits:
                raise ConfigError(f"{pre}{target}.{name}: no tenant {target!r} (tenants: "
                                  f"{', '.join(t.name for t in tenants)}, or *)", key=f"{target}.{name}")
            for t in hits:
                setattr(t, name, value)
        out = replace(out, tenants=tenants)
    return out


def describe_options() -> str:
    """The option table ``exotrace simulate --list-options`` prints."""
    defaults = SimulatorConfig()
    lines = ["Options (--set key=value, or key=value inside --scenario):", ""]
    for key, text in OPTION_HELP.items():
        value = getattr(defaults, key)
        shown = "" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
        lines.append(f"  {key} = {shown}")
        lines.append(f"      {text}")
    lines += ["", "Tenant options (--set <tenant>.<key>=value; <tenant> is a name or *):", ""]
    for key, text in TENANT_OPTIONS.items():
        lines.append(f"  {key}")
        lines.append(f"      {text}")
    return "\n".join(lines)
