"""Collector configuration: a TOML file with ``[archive]``, ``[collector]``, ``[[tenant]]`` and ``[[sink]]``.

Secrets are never written inline: ``client_secret`` and ``certificate_password`` take ``env:NAME`` or
``file:/path``. Every error names the key (``tenant[1].client_secret``) and says how to fix it.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from exotrace.errors import ConfigError
from exotrace.net.redact import register_secret

__all__ = [
    "CLOUDS",
    "AppConfig",
    "Cloud",
    "CollectorSettings",
    "Secret",
    "TenantConfig",
    "load_config",
    "parse_config",
    "parse_duration",
    "TEMPLATE",
]


@dataclass(frozen=True, slots=True)
class Cloud:
    """Endpoints and capabilities of one Microsoft cloud."""

    name: str
    login_url: str
    graph_url: str
    graph_scope: str
    rws_url: str
    rws_scope: str
    #: Graph messageTraces exists in Graph's global service only (msapi.md 3.1), which GCC uses too.
    graph_trace: bool
    default_api: str
    note: str = ""


CLOUDS: dict[str, Cloud] = {
    "global": Cloud(
        "global", "https://login.microsoftonline.com", "https://graph.microsoft.com",
        "https://graph.microsoft.com/.default",
        "https://reports.office365.com/ecp/reportingwebservice/reporting.svc",
        "https://outlook.office365.com/.default", True, "graph",
    ),
    "gcc": Cloud(
        "gcc", "https://login.microsoftonline.com", "https://graph.microsoft.com",
        "https://graph.microsoft.com/.default",
        "https://reports.office365.com/ecp/reportingwebservice/reporting.svc",
        "https://outlook.office365.com/.default", True, "graph",
        "GCC (moderate) uses the worldwide endpoints, Graph's global service included",
    ),
    "gcchigh": Cloud(
        "gcchigh", "https://login.microsoftonline.us", "https://graph.microsoft.us",
        "https://graph.microsoft.us/.default",
        "https://reports.office365.us/ecp/reportingwebservice/reporting.svc",
        "https://outlook.office365.us/.default", False, "rws",
        "RWS host unverified (samples disagree: reports.office365.us vs outlook.office365.us)",
    ),
    "dod": Cloud(
        "dod", "https://login.microsoftonline.us", "https://dod-graph.microsoft.us",
        "https://dod-graph.microsoft.us/.default",
        "https://webmail.apps.mil/ecp/reportingwebservice/reporting.svc",
        "https://webmail.apps.mil/.default", False, "rws", "RWS host unverified",
    ),
    "china": Cloud(
        "china", "https://login.chinacloudapi.cn", "https://microsoftgraph.chinacloudapi.cn",
        "https://microsoftgraph.chinacloudapi.cn/.default",
        "https://partner.outlook.cn/ecp/reportingwebservice/reporting.svc",
        "https://partner.outlook.cn/.default", False, "rws", "RWS host unverified",
    ),
}

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


def parse_duration(value: object, *, key: str = "duration") -> timedelta:
    """``"90s"``, ``"15m"``, ``"4h"``, ``"30d"`` or a number of seconds -> timedelta."""
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected a duration such as \"15m\", got {value!r}", key=key)
    if isinstance(value, int | float):
        return timedelta(seconds=float(value))
    m = _DURATION.match(str(value))
    if not m:
        raise ConfigError(
            f"{key}: {value!r} is not a duration; write a number with a unit: 90s, 15m, 4h, 30d", key=key
        )
    return timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])


class Secret:
    """A resolved secret. ``str()``/``repr()`` never show the value; use :meth:`reveal`."""

    __slots__ = ("_value", "source")

    def __init__(self, value: str, source: str) -> None:
        self._value = value
        self.source = source

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({self.source})"

    __str__ = __repr__


def resolve_secret(value: object, *, key: str, base: Path, read: bool = True) -> Secret:
    """Resolve ``env:NAME`` or ``file:/path``; refuse anything else (a literal secret) with the fix.

    ``read=False`` checks the reference's form only and reads no value (for commands that never sign in).
    """
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{key}: expected \"env:NAME\" or \"file:/path\"", key=key)
    text = value.strip()
    if text.startswith("env:"):
        name = text[4:].strip()
        if not name:
            raise ConfigError(f"{key}: \"env:\" needs a variable name, e.g. env:EXOTRACE_SECRET", key=key)
        if not read:
            return Secret("", f"env:{name}")
        if name not in os.environ or not os.environ[name]:
            raise ConfigError(
                f"{key}: environment variable {name} is not set; export {name}=... before running", key=key
            )
        return Secret(os.environ[name], f"env:{name}")
    if text.startswith("file:"):
        path = _path(text[5:].strip(), base)
        if not read:
            return Secret("", f"file:{path}")
        try:
            content = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{key}: cannot read secret file {path}: {exc.strerror}", key=key) from None
        if not content:
            raise ConfigError(f"{key}: secret file {path} is empty", key=key)
        return Secret(content, f"file:{path}")
    raise ConfigError(
        f"{key}: secrets are never inline in the config; put the secret in an environment variable and write "
        f"{key.rsplit('.', 1)[-1]} = \"env:EXOTRACE_SECRET\", or in a file (mode 600) and write "
        f"\"file:/path/to/secret\"",
        key=key,
    )


def _path(text: str, base: Path) -> Path:
    p = Path(os.path.expanduser(text))
    return p if p.is_absolute() else base / p


@dataclass(frozen=True, slots=True)
class CollectorSettings:
    """Knobs shared by every tenant (each may be overridden in a ``[[tenant]]`` table)."""

    #: Requests allowed per ``quota_period`` per tenant (Microsoft allows 100 per 5 minutes).
    quota: int = 90
    quota_period: timedelta = timedelta(seconds=300)
    #: Rows per request; default the API maximum (Graph 5000, RWS 2000).
    page_size: int | None = None
    #: Length of live-tail windows.
    window: timedelta = timedelta(minutes=15)
    #: Longest window (backfill); Graph allows 10 days.
    max_window: timedelta = timedelta(days=10)
    #: Windows end this long before now (the API refuses an end in the future; absorbs clock skew).
    lag: timedelta = timedelta(minutes=1)
    #: Re-read a window this long after its end; after the last one it is settled.
    rereads: tuple[timedelta, ...] = (
        timedelta(minutes=15), timedelta(hours=1), timedelta(hours=4), timedelta(hours=24),
    )
    #: Look-back of the first run when no ``--since`` is given.
    since: timedelta = timedelta(days=1)
    #: Windows read at the same time per tenant.
    concurrency: int = 4
    #: HTTP timeout per request (seconds of the clock).
    timeout: float = 120.0
    #: Warn when an uncollected window will age past the API horizon within this margin.
    horizon_warning: timedelta = timedelta(days=2)
    #: Longest pause between scheduling passes in daemon mode.
    poll: timedelta = timedelta(minutes=1)
    #: Daemon: read the open live-tail window provisionally this often (0 disables).
    tail_poll: timedelta = timedelta(minutes=1)

    @property
    def settle_after(self) -> timedelta:
        return max(self.rereads) if self.rereads else timedelta(0)


@dataclass(frozen=True, slots=True)
class TenantConfig:
    """One tenant to collect."""

    name: str
    tenant_id: str
    client_id: str
    client_secret: Secret | None = None
    certificate: Path | None = None
    certificate_password: Secret | None = None
    api: str = "graph"
    graph_version: str = "v1.0"
    cloud: str = "global"
    local_domains: tuple[str, ...] = ()
    login_url: str = ""
    graph_url: str = ""
    rws_url: str = ""
    scope: str = ""
    ca_bundle: Path | None = None
    proxy: str | None = field(default=None, repr=False)  # may hold credentials (from env:/file:)
    settings: CollectorSettings = field(default_factory=CollectorSettings)

    @property
    def authority(self) -> str:
        return f"{self.login_url.rstrip('/')}/{self.tenant_id}"

    @property
    def api_scope(self) -> str:
        if self.scope:
            return self.scope
        c = CLOUDS[self.cloud]
        return c.graph_scope if self.api == "graph" else c.rws_scope

    @property
    def page_size(self) -> int:
        cap = 5000 if self.api == "graph" else 2000
        return min(self.settings.page_size or cap, cap)

    @property
    def horizon(self) -> timedelta:
        """How far back the API serves data."""
        return timedelta(days=90) if self.api == "graph" else timedelta(days=10)


@dataclass(frozen=True, slots=True)
class AppConfig:
    path: Path | None
    archive_path: Path
    settings: CollectorSettings
    tenants: tuple[TenantConfig, ...]
    sinks: tuple[dict[str, Any], ...] = ()
    log_format: str = "text"
    #: ``[log] level``: the collector's log level (``--quiet`` lowers it to warnings).
    log_level: str = "info"
    #: ``[normalize]``: GeoIP folder (None: the usual system folders), GeoIP on/off, keep event.original.
    geoip_dir: Path | None = None
    geoip: bool = True
    preserve_original: bool = False

    @property
    def folder(self) -> Path | None:
        """The config file's folder: relative paths in it (archive, sinks, secrets) are read from there."""
        return self.path.resolve().parent if self.path is not None else None

    def tenant(self, name: str) -> TenantConfig:
        for t in self.tenants:
            if t.name == name:
                return t
        names = ", ".join(t.name for t in self.tenants)
        raise ConfigError(f"--tenant {name!r} is not in the configuration (tenants: {names})", key="tenant")


_TOP_KEYS = {"archive", "collector", "tenant", "sink", "log", "normalize"}
_NORMALIZE_KEYS = {"geoip_dir", "geoip", "preserve_original"}
_ARCHIVE_KEYS = {"path"}
_LOG_KEYS = {"format", "level"}
_LOG_LEVELS = ("debug", "info", "warning", "error")
_SETTING_KEYS = {
    "quota", "quota_period", "page_size", "window", "max_window", "lag", "rereads", "since",
    "concurrency", "timeout", "horizon_warning", "poll", "tail_poll",
}
_TENANT_KEYS = {
    "name", "tenant_id", "client_id", "client_secret", "certificate", "certificate_password", "api",
    "graph_version", "cloud", "local_domains", "login_url", "graph_url", "rws_url", "scope", "ca_bundle",
    "proxy",
} | _SETTING_KEYS


def _check_keys(table: dict[str, Any], allowed: set[str], where: str) -> None:
    for key in table:
        if key not in allowed:
            near = difflib.get_close_matches(key, sorted(allowed), n=1)
            hint = f"; did you mean {near[0]!r}?" if near else f"; allowed: {', '.join(sorted(allowed))}"
            raise ConfigError(f"{where}{key}: unknown key{hint}", key=f"{where}{key}")


def _table(value: object, key: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a table ([{key}])", key=key)
    return value


def _settings(table: dict[str, Any], where: str, base: CollectorSettings) -> CollectorSettings:
    kw: dict[str, Any] = {}
    for key in _SETTING_KEYS & table.keys():
        val, full = table[key], f"{where}{key}"
        if key in {"quota", "page_size", "concurrency"}:
            if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                raise ConfigError(f"{full}: expected a positive whole number, got {val!r}", key=full)
            if key == "quota" and val > 100:
                raise ConfigError(f"{full}: Microsoft allows 100 requests per 5 minutes; use 100 or less",
                                  key=full)
            kw[key] = val
        elif key == "timeout":
            kw[key] = parse_duration(val, key=full).total_seconds()
        elif key == "rereads":
            if not isinstance(val, list):
                raise ConfigError(f"{full}: expected a list such as [\"15m\", \"1h\", \"4h\", \"24h\"]", key=full)
            kw[key] = tuple(sorted(parse_duration(v, key=full) for v in val))
        else:
            kw[key] = parse_duration(val, key=full)
    merged = {name: getattr(base, name) for name in CollectorSettings.__slots__}  # type: ignore[attr-defined]
    merged.update(kw)
    s = CollectorSettings(**merged)
    if s.max_window > timedelta(days=10) or s.max_window <= timedelta(0):
        raise ConfigError(f"{where}max_window: must be between 1s and 10d (the API's limit)", key=f"{where}max_window")
    if s.window > s.max_window:
        raise ConfigError(f"{where}window: must not exceed max_window ({s.max_window})", key=f"{where}window")
    return s


#: ``scheme://user:password@``: credentials written into a URL
URL_CREDENTIALS = re.compile(r"^[a-z][a-z0-9+.-]*://[^/?#@\s]*@", re.I)


def _url(value: object, key: str, *, credentials: bool = False) -> str:
    if not isinstance(value, str) or not re.match(r"^https?://[^\s/]+", value):
        raise ConfigError(f"{key}: expected an http(s) URL, got {value!r}", key=key)
    if not credentials and URL_CREDENTIALS.match(value):
        fix = ("write proxy = \"env:EXOTRACE_PROXY\" (or \"file:/path\") with the URL, credentials included, in "
               "that variable or file") if key.endswith("proxy") else "remove them"
        raise ConfigError(f"{key}: credentials are not accepted inline in a URL; {fix}", key=key)
    return value.rstrip("/")


def _local_domains(domains: list[str], key: str) -> tuple[str, ...]:
    from exotrace.normalize.domains import local_domain

    try:
        return tuple(local_domain(d) for d in domains)
    except ValueError as exc:
        raise ConfigError(f"{key}: {exc}", key=key) from None


def _proxy(value: object, key: str, base: Path) -> str:
    """The proxy URL: inline without credentials, or from ``env:``/``file:`` (then it may hold them)."""
    if isinstance(value, str) and value.strip().startswith(("env:", "file:")):
        url = _url(resolve_secret(value, key=key, base=base).reveal(), key, credentials=True)
        register_secret(url)
        found = URL_CREDENTIALS.match(url)
        if found:  # the password alone, as a client error message may show it
            register_secret(found.group().split("://", 1)[1].rstrip("@").partition(":")[2])
        return url
    return _url(value, key)


def _tenant(raw: dict[str, Any], i: int, base: Path, settings: CollectorSettings,
            seen: set[str], secrets: bool = True) -> TenantConfig:
    where = f"tenant[{i}]."
    _check_keys(raw, _TENANT_KEYS, where)
    for req in ("name", "tenant_id", "client_id"):
        if not isinstance(raw.get(req), str) or not raw[req].strip():
            raise ConfigError(f"{where}{req}: required (a non-empty string)", key=f"{where}{req}")
    name = raw["name"].strip()
    if name in seen:
        raise ConfigError(f"{where}name: {name!r} is used twice; tenant names must be unique", key=f"{where}name")
    seen.add(name)
    cloud_name = str(raw.get("cloud", "global")).lower()
    if cloud_name not in CLOUDS:
        raise ConfigError(f"{where}cloud: {cloud_name!r} is not one of {', '.join(CLOUDS)}", key=f"{where}cloud")
    cloud = CLOUDS[cloud_name]
    api = str(raw.get("api", cloud.default_api)).lower()
    if api not in {"graph", "rws"}:
        raise ConfigError(f"{where}api: {api!r} must be \"graph\" or \"rws\"", key=f"{where}api")
    if api == "graph" and not cloud.graph_trace and "graph_url" not in raw:
        raise ConfigError(
            f"{where}api: Graph message trace is served by Graph's global service only (global and gcc), "
            f"not {cloud_name}; use api = \"rws\" (the default for {cloud_name})", key=f"{where}api")
    version = str(raw.get("graph_version", "v1.0"))
    if version not in {"v1.0", "beta"}:
        raise ConfigError(f"{where}graph_version: must be \"v1.0\" or \"beta\"", key=f"{where}graph_version")
    secret = cert = cert_pw = None
    if "client_secret" in raw and "certificate" in raw:
        raise ConfigError(f"{where}client_secret: give either client_secret or certificate, not both",
                          key=f"{where}client_secret")
    if "client_secret" in raw:
        secret = resolve_secret(raw["client_secret"], key=f"{where}client_secret", base=base, read=secrets)
    elif "certificate" in raw and not secrets:
        cert = _path(str(raw["certificate"]), base)  # not opened: it may need its password
    elif "certificate" in raw:
        cert = _path(str(raw["certificate"]), base)
        if not cert.is_file():
            raise ConfigError(f"{where}certificate: file {cert} not found (PEM with key, or PFX/P12)",
                              key=f"{where}certificate")
        if "certificate_password" in raw:
            cert_pw = resolve_secret(raw["certificate_password"], key=f"{where}certificate_password", base=base)
        from exotrace.auth import load_certificate  # late import: auth imports this module

        try:
            load_certificate(cert, cert_pw.reveal() if cert_pw else None)
        except ConfigError as exc:
            raise ConfigError(f"{where}{exc}", key=f"{where}certificate") from None
    else:
        raise ConfigError(
            f"{where}client_secret: a credential is required; add client_secret = \"env:EXOTRACE_SECRET\" "
            f"or certificate = \"app.pem\"", key=f"{where}client_secret")
    domains = raw.get("local_domains", [])
    if not isinstance(domains, list) or not all(isinstance(d, str) for d in domains):
        raise ConfigError(f"{where}local_domains: expected a list of domain names", key=f"{where}local_domains")
    ca = None
    if "ca_bundle" in raw:
        ca = _path(str(raw["ca_bundle"]), base)
        if not ca.is_file():
            raise ConfigError(f"{where}ca_bundle: file {ca} not found", key=f"{where}ca_bundle")
    proxy = raw.get("proxy")
    if proxy is not None:
        proxy = _proxy(proxy, f"{where}proxy", base) if secrets else None
    return TenantConfig(
        name=name,
        tenant_id=raw["tenant_id"].strip(),
        client_id=raw["client_id"].strip(),
        client_secret=secret,
        certificate=cert,
        certificate_password=cert_pw,
        api=api,
        graph_version=version,
        cloud=cloud_name,
        local_domains=_local_domains(domains, f"{where}local_domains"),
        login_url=_url(raw["login_url"], f"{where}login_url") if "login_url" in raw else cloud.login_url,
        graph_url=_url(raw["graph_url"], f"{where}graph_url") if "graph_url" in raw else cloud.graph_url,
        rws_url=_url(raw["rws_url"], f"{where}rws_url") if "rws_url" in raw else cloud.rws_url,
        scope=str(raw.get("scope", "")),
        ca_bundle=ca,
        proxy=proxy,
        settings=_settings(raw, where, settings),
    )


def parse_config(data: dict[str, Any], *, base: Path, path: Path | None = None,
                 secrets: bool = True) -> AppConfig:
    """Validate an already-parsed TOML document; ``secrets=False`` checks the form of secret references
    without reading them (for commands that never sign in, such as ``status``)."""
    _check_keys(data, _TOP_KEYS, "")
    archive = _table(data.get("archive"), "archive")
    _check_keys(archive, _ARCHIVE_KEYS, "archive.")
    log = _table(data.get("log"), "log")
    _check_keys(log, _LOG_KEYS, "log.")
    log_format = str(log.get("format", "text"))
    if log_format not in {"text", "json"}:
        raise ConfigError("log.format: must be \"text\" or \"json\"", key="log.format")
    log_level = str(log.get("level", "info")).lower()
    if log_level not in _LOG_LEVELS:
        raise ConfigError(f"log.level: must be one of {', '.join(_LOG_LEVELS)}", key="log.level")
    norm = _table(data.get("normalize"), "normalize")
    _check_keys(norm, _NORMALIZE_KEYS, "normalize.")
    for flag in ("geoip", "preserve_original"):
        if flag in norm and not isinstance(norm[flag], bool):
            raise ConfigError(f"normalize.{flag}: expected true or false", key=f"normalize.{flag}")
    geoip_dir = _path(str(norm["geoip_dir"]), base) if "geoip_dir" in norm else None
    if geoip_dir is not None and not geoip_dir.is_dir():
        raise ConfigError(f"normalize.geoip_dir: {geoip_dir} is not a folder (GeoLite2/GeoIP2 .mmdb files)",
                          key="normalize.geoip_dir")
    collector = _table(data.get("collector"), "collector")
    _check_keys(collector, _SETTING_KEYS, "collector.")
    settings = _settings(collector, "collector.", CollectorSettings())
    tenants_raw = data.get("tenant", [])
    if isinstance(tenants_raw, dict):
        tenants_raw = [tenants_raw]
    if not isinstance(tenants_raw, list):
        raise ConfigError("tenant: write each tenant as a [[tenant]] table", key="tenant")
    seen: set[str] = set()
    tenants = tuple(_tenant(_table(t, f"tenant[{i}]"), i, base, settings, seen, secrets)
                    for i, t in enumerate(tenants_raw))
    sinks = data.get("sink", [])
    if isinstance(sinks, dict):
        sinks = [sinks]
    if not isinstance(sinks, list):
        raise ConfigError("sink: write each sink as a [[sink]] table", key="sink")
    return AppConfig(
        path=path,
        archive_path=_path(str(archive.get("path", "exotrace.db")), base),
        settings=settings,
        tenants=tenants,
        sinks=tuple(sinks),
        log_format=log_format,
        log_level=log_level,
        geoip_dir=geoip_dir,
        geoip=bool(norm.get("geoip", True)),
        preserve_original=bool(norm.get("preserve_original", False)),
    )


def read_toml(path: str | Path) -> dict[str, Any]:
    """The TOML file's tables; a missing, unreadable, non-UTF-8 or invalid file is a ConfigError."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: configuration file not found; create one with `exotrace init {p}`",
                          key="config") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not UTF-8 text; save the configuration as UTF-8", key="config") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror}", key="config") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}", key="config") from None


def load_config(path: str | Path, *, secrets: bool = True) -> AppConfig:
    """Read and validate a TOML configuration file (``secrets``: see :func:`parse_config`)."""
    p = Path(path)
    data = read_toml(p)
    try:
        return parse_config(data, base=p.resolve().parent, path=p, secrets=secrets)
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}", key=exc.key) from None


TEMPLATE = '''\
# exotrace configuration. Reference: docs/collector.md
# Secrets are never written here: use "env:VARIABLE" or "file:/path/to/secret".

[archive]
path = "exotrace.db"                    # SQLite archive (rows, history, window ledger)

[collector]
quota = 90                              # requests per quota_period per tenant (Microsoft: 100 per 5 min)
quota_period = "5m"
# page_size = 5000                      # default: the API maximum (Graph 5000, RWS 2000)
window = "15m"                          # live-tail window length
max_window = "10d"                      # backfill window length (API limit: 10 days)
lag = "1m"                              # windows end this long before now
rereads = ["15m", "1h", "4h", "24h"]    # re-read each window this long after its end, then settle it
since = "1d"                            # first-run look-back when --since is not given
concurrency = 4                         # windows read in parallel per tenant (one kept for the live tail)
timeout = "120s"                        # per HTTP request
horizon_warning = "2d"                  # warn when an uncollected window is this close to the API horizon
poll = "1m"                             # daemon: longest pause between scheduling passes
tail_poll = "1m"                        # daemon: read the open live-tail window this often ("0" disables)

[log]
format = "text"                         # or "json"

[normalize]
# geoip_dir = "/var/lib/GeoIP"          # GeoLite2/GeoIP2 City and ASN .mmdb files (default: system folders)
# geoip = true                          # false: no GeoIP enrichment
# preserve_original = false             # true: keep event.original (Elastic's preserve_original_event)

[[tenant]]
name = "contoso"                        # label carried into every document (organization.name)
tenant_id = "00000000-0000-0000-0000-000000000000"
client_id = "00000000-0000-0000-0000-000000000000"
client_secret = "env:EXOTRACE_SECRET"   # or "file:/etc/exotrace/secret"
# certificate = "app.pem"               # instead of client_secret: PEM (cert + key) or PFX
# certificate_password = "env:EXOTRACE_CERT_PASSWORD"
api = "graph"                           # "graph" (default; ExchangeMessageTrace.Read.All) or "rws"
# graph_version = "v1.0"                # or "beta"
cloud = "global"                        # global, gcc (both default to graph), gcchigh, dod, china (rws)
local_domains = ["contoso.com"]         # for email.direction
# login_url = "https://login.microsoftonline.com"   # endpoint overrides
# graph_url = "https://graph.microsoft.com"
# rws_url = "https://reports.office365.com/ecp/reportingwebservice/reporting.svc"
# ca_bundle = "corporate-ca.pem"        # extra CA; TLS is always verified
# proxy = "http://proxy.example:3128"

# [[sink]]                              # optional destinations; see docs/sinks.md
# type = "file"
# path = "out.ndjson"
'''
