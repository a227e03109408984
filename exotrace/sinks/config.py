"""Sink configuration: one frozen dataclass per ``[[sink]]`` ``type``, read from the TOML tables.

Every field carries its documentation in ``metadata["doc"]`` (the tables in ``docs/sinks.md`` are built
from it). Unknown keys are rejected naming the key. Secrets (tokens, passwords, API keys) are never
accepted inline: they are :class:`Secret` references, ``"env:NAME"`` or ``"file:/path"``, resolved when a
sink starts and never logged (``repr`` shows only the reference).
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from exotrace.config import URL_CREDENTIALS
from exotrace.errors import ConfigError

__all__ = [
    "DATA_STREAM_DATASET",
    "SINK_TYPES",
    "ElasticsearchSinkConfig",
    "FileSinkConfig",
    "HttpSinkConfig",
    "OpenSearchSinkConfig",
    "Secret",
    "SentinelSinkConfig",
    "SinkConfig",
    "SplunkHecSinkConfig",
    "StdoutSinkConfig",
    "SyslogSinkConfig",
    "example_config",
    "load_sinks",
]

#: Elastic's data stream is ``logs-<DATA_STREAM_DATASET>-<namespace>``.
DATA_STREAM_DATASET = "microsoft_exchange_online_message_trace.log"


@dataclass(frozen=True, slots=True)
class Secret:
    """A reference to a secret: ``env:NAME`` (environment variable) or ``file:/path`` (file contents)."""

    ref: str

    def __post_init__(self) -> None:
        if not (self.ref.startswith("env:") and len(self.ref) > 4) and not (
            self.ref.startswith("file:") and len(self.ref) > 5
        ):
            raise ValueError("a secret must be given as 'env:NAME' or 'file:/path', never inline")

    def get(self) -> str:
        """Resolve the reference now; raise ConfigError naming the reference (never the value)."""
        kind, _, target = self.ref.partition(":")
        if kind == "env":
            value = os.environ.get(target)
            if not value:
                raise ConfigError(f"environment variable {target} is not set (secret {self.ref})")
            return value
        try:
            return Path(target).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"cannot read secret file {target}: {exc.strerror}") from exc

    def __repr__(self) -> str:
        return f"Secret({self.ref!r})"

    __str__ = __repr__


def _f(default: Any = dataclasses.MISSING, doc: str = "", **kw: Any) -> Any:
    """A documented dataclass field."""
    if isinstance(default, list | dict):
        value = default
        return field(default_factory=lambda: type(value)(value), metadata={"doc": doc, **kw})
    return field(default=default, metadata={"doc": doc, **kw})


@dataclass(frozen=True, kw_only=True)
class SinkConfig:
    """Options every sink has: identity, delivery class, batching, buffering and retry."""

    TYPE: ClassVar[str] = ""
    #: A minimal TOML example (``[[sink]]`` table); ``example_config(type)`` returns it.
    EXAMPLE: ClassVar[str] = ""

    type: str = _f(doc="Sink type (`elasticsearch`, `opensearch`, `splunk_hec`, `sentinel`, `http`, "
                   "`syslog`, `file`, `stdout`).")
    name: str = _f("", doc="Unique name (spool folder, metrics, logs). Default: the type, numbered if repeated.")
    required: bool = _f(True, doc="The checkpoint waits for this sink (`true`), or best effort (`false`: "
                        "when its spool is full the oldest spooled documents are dropped and counted).")
    batch_max_events: int = _f(500, doc="Most documents per request.")
    batch_max_bytes: int = _f(5_000_000, doc="Most serialized bytes per request.")
    batch_timeout: float = _f(1.0, doc="Seconds to wait for a batch to fill before sending it anyway.")
    buffer_max_events: int = _f(10_000, doc="Documents held in memory before new ones go to the disk spool.")
    buffer_max_bytes: int = _f(32 * 1024 * 1024, doc="Bytes held in memory before spilling to the spool.")
    spool_max_bytes: int = _f(1024**3, doc="Disk spool limit; when full, `submit` blocks (required sinks).")
    concurrency: int = _f(1, doc="Batches in flight at once (order between them is not kept).")
    retry_initial: float = _f(0.5, doc="First retry delay in seconds (doubles each time, with jitter).")
    retry_max: float = _f(60.0, doc="Longest retry delay in seconds (also the delay after auth errors).")
    dead_letter: str | None = _f(None, doc="Dead-letter NDJSON path. Default: `<state_dir>/dead-letter/<name>.ndjson`.")

    def redacted(self) -> dict[str, Any]:
        """Field values for display; secrets show only their reference."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


_TLS_DOC_CA = "PEM file with the CA certificates to trust (default: the system store)."
_TLS_DOC_VERIFY = "Verify the server certificate (keep `true` outside tests)."


@dataclass(frozen=True, kw_only=True)
class ElasticsearchSinkConfig(SinkConfig):
    """Elasticsearch bulk API with the official client."""

    TYPE: ClassVar[str] = "elasticsearch"
    EXAMPLE: ClassVar[str] = """\
[[sink]]
type = "elasticsearch"
hosts = ["https://es.example.net:9200"]
api_key = "env:EXOTRACE_ES_API_KEY"
namespace = "default"          # data stream logs-microsoft_exchange_online_message_trace.log-default
"""
    concurrency: int = _f(2, doc="Requests in flight at once (order between them is not kept).")
    batch_max_events: int = _f(2000, doc="Most documents per bulk request (about 3 MB of message traces).")
    hosts: list[str] = _f([], doc="Node URLs, e.g. `https://es.example.net:9200` (or use `cloud_id`).")
    cloud_id: str | None = _f(None, doc="Elastic Cloud deployment id, instead of `hosts`.")
    api_key: Secret | None = _f(None, doc="API key (the base64 `id:key` form), as `env:`/`file:` reference.")
    username: str | None = _f(None, doc="Basic-auth user.")
    password: Secret | None = _f(None, doc="Basic-auth password reference.")
    ca_certs: str | None = _f(None, doc=_TLS_DOC_CA)
    verify_certs: bool = _f(True, doc=_TLS_DOC_VERIFY)
    mode: Literal["data_stream", "index"] = _f(
        "data_stream", doc="`data_stream`: `create` into Elastic's data stream with the fingerprint as `_id` "
        "(a 409 means already there). `index`: `index` op into `index`, `_id` = row key, external observation "
        "version, latest state per row.")
    namespace: str = _f("default", doc="Data stream namespace.")
    index: str = _f("exotrace-message-trace", doc="Target index in `index` mode.")
    pipeline: str | None = _f(None, doc="Ingest pipeline to run on each document (optional).")
    compatibility: int = _f(8, doc="REST compatibility version sent in Accept/Content-Type (8 works with "
                            "Elasticsearch 8 and 9).")
    timeout: float = _f(30.0, doc="Request timeout in seconds.")


@dataclass(frozen=True, kw_only=True)
class OpenSearchSinkConfig(SinkConfig):
    """OpenSearch bulk API with opensearch-py."""

    TYPE: ClassVar[str] = "opensearch"
    EXAMPLE: ClassVar[str] = """\
[[sink]]
type = "opensearch"
hosts = ["https://opensearch.example.net:9200"]
username = "exotrace"
password = "env:EXOTRACE_OS_PASSWORD"
"""
    concurrency: int = _f(2, doc="Requests in flight at once (order between them is not kept).")
    batch_max_events: int = _f(2000, doc="Most documents per bulk request (about 3 MB of message traces).")
    hosts: list[str] = _f([], doc="Node URLs.")
    username: str | None = _f(None, doc="Basic-auth user.")
    password: Secret | None = _f(None, doc="Basic-auth password reference.")
    api_key: Secret | None = _f(None, doc="Sent as `Authorization: ApiKey <value>` (for proxies that accept it).")
    ca_certs: str | None = _f(None, doc=_TLS_DOC_CA)
    verify_certs: bool = _f(True, doc=_TLS_DOC_VERIFY)
    mode: Literal["data_stream", "index"] = _f("data_stream", doc="As for Elasticsearch.")
    namespace: str = _f("default", doc="Data stream namespace.")
    index: str = _f("exotrace-message-trace", doc="Target index in `index` mode.")
    pipeline: str | None = _f(None, doc="Ingest pipeline (optional).")
    timeout: float = _f(30.0, doc="Request timeout in seconds.")


@dataclass(frozen=True, kw_only=True)
class SplunkHecSinkConfig(SinkConfig):
    """Splunk HTTP Event Collector, event endpoint."""

    TYPE: ClassVar[str] = "splunk_hec"
    EXAMPLE: ClassVar[str] = """\
[[sink]]
type = "splunk_hec"
url = "https://splunk.example.net:8088"
token = "env:EXOTRACE_HEC_TOKEN"
index = "o365"
"""
    concurrency: int = _f(2, doc="Requests in flight at once (order between them is not kept).")
    url: str = _f(doc="Base URL of the collector (`/services/collector/event` is appended).")
    token: Secret = _f(doc="HEC token reference; sent as `Authorization: Splunk <token>`.")
    sourcetype: str = _f("o365:reporting:messagetrace", doc="Sourcetype (the Splunk add-on's).")
    index: str | None = _f(None, doc="Target index (default: the token's).")
    source: str | None = _f("exotrace", doc="`source` field.")
    host: str | None = _f(None, doc="`host` field (default: the token's).")
    ack: bool = _f(False, doc="Use indexer acknowledgement: a batch is delivered once `/services/collector/ack` "
                   "reports it indexed (the token must have acknowledgement enabled).")
    channel: str | None = _f(None, doc="Channel GUID for acknowledgement (default: a fixed random one per run).")
    ack_timeout: float = _f(300.0, doc="Seconds to wait for an acknowledgement before resending.")
    ack_poll_interval: float = _f(1.0, doc="Seconds between acknowledgement polls.")
    gzip: bool = _f(False, doc="Compress request bodies.")
    ca_certs: str | None = _f(None, doc=_TLS_DOC_CA)
    verify_certs: bool = _f(True, doc=_TLS_DOC_VERIFY)
    timeout: float = _f(30.0, doc="Request timeout in seconds.")


@dataclass(frozen=True, kw_only=True)
class SentinelSinkConfig(SinkConfig):
    """Microsoft Sentinel / Azure Monitor Logs Ingestion API (DCE + DCR + stream)."""

    TYPE: ClassVar[str] = "sentinel"
    EXAMPLE: ClassVar[str] = """\
[[sink]]
type = "sentinel"
endpoint = "https://exotrace-dce-abcd.westeurope-1.ingest.monitor.azure.com"
dcr_immutable_id = "dcr-00000000000000000000000000000000"
stream = "Custom-ExoTraceMessageTrace"
tenant_id = "00000000-0000-0000-0000-000000000000"
client_id = "00000000-0000-0000-0000-000000000000"
client_secret = "env:EXOTRACE_SENTINEL_SECRET"
"""
    concurrency: int = _f(2, doc="Requests in flight at once (order between them is not kept).")
    batch_max_bytes: int = _f(4_000_000, doc="Most bytes per batch (split further into < 1 MB requests).")
    endpoint: str = _f(doc="Data collection endpoint (DCE) logs ingestion URL.")
    dcr_immutable_id: str = _f(doc="Immutable id of the data collection rule (`dcr-...`).")
    stream: str = _f("Custom-ExoTraceMessageTrace", doc="Stream name declared in the DCR.")
    tenant_id: str = _f(doc="Entra ID tenant of the app registration.")
    client_id: str = _f(doc="Application (client) id; needs *Monitoring Metrics Publisher* on the DCR.")
    client_secret: Secret = _f(doc="Client secret reference.")
    authority_host: str = _f("https://login.microsoftonline.com", doc="Entra ID login host (sovereign clouds).")
    scope: str = _f("https://monitor.azure.com/.default", doc="Token scope.")
    api_version: str = _f("2023-01-01", doc="Logs Ingestion API version.")
    max_request_bytes: int = _f(1_000_000, doc="Upper bound of one request body before compression (1 MB limit).")
    ca_certs: str | None = _f(None, doc=_TLS_DOC_CA)
    verify_certs: bool = _f(True, doc=_TLS_DOC_VERIFY)
    timeout: float = _f(30.0, doc="Request timeout in seconds.")


@dataclass(frozen=True, kw_only=True)
class HttpSinkConfig(SinkConfig):
    """Generic HTTP POST of NDJSON or a JSON array; `preset = "sekoia"` for Sekoia.io intakes."""

    TYPE: ClassVar[str] = "http"
    EXAMPLE: ClassVar[str] = """\
[[sink]]
type = "http"
url = "https://collector.example.net/ingest"
format = "ndjson"
auth_header = "env:EXOTRACE_HTTP_AUTH"   # the full header value, e.g. "Bearer abc..."
headers = { "X-Source" = "exotrace" }

# Sekoia.io intake:
# [[sink]]
# type = "http"
# preset = "sekoia"
# url = "https://intake.sekoia.io"
# intake_key = "env:EXOTRACE_SEKOIA_INTAKE_KEY"
"""
    concurrency: int = _f(2, doc="Requests in flight at once (order between them is not kept).")
    url: str = _f(doc="Target URL (with `preset = \"sekoia\"`: the intake server, `/batch` is appended).")
    format: Literal["ndjson", "json"] = _f("ndjson", doc="`ndjson` (one document per line) or `json` (array).")
    headers: dict[str, str] = _f({}, doc="Extra request headers (not for secrets: use `auth_header`).")
    auth_header: Secret | None = _f(None, doc="Reference to the full value of the auth header.")
    auth_header_name: str = _f("Authorization", doc="Header that carries `auth_header`.")
    preset: Literal["sekoia"] | None = _f(None, doc="`sekoia`: body `{\"intake_key\": ..., \"jsons\": [...]}` "
                                          "POSTed to `{url}/batch`.")
    intake_key: Secret | None = _f(None, doc="Sekoia.io intake key reference (preset `sekoia`).")
    gzip: bool = _f(False, doc="Compress request bodies (`Content-Encoding: gzip`).")
    ca_certs: str | None = _f(None, doc=_TLS_DOC_CA)
    verify_certs: bool = _f(True, doc=_TLS_DOC_VERIFY)
    timeout: float = _f(30.0, doc="Request timeout in seconds.")


@dataclass(frozen=True, kw_only=True)
class SyslogSinkConfig(SinkConfig):
    """RFC 5424 syslog with the ECS document as JSON message, over TCP, TLS or UDP."""

    TYPE: ClassVar[str] = "syslog"
    EXAMPLE: ClassVar[str] = """\
[[sink]]
type = "syslog"
host = "syslog.example.net"
port = 6514
protocol = "tls"
ca_certs = "/etc/ssl/certs/syslog-ca.pem"
"""
    host: str = _f(doc="Server host name or address.")
    port: int = _f(514, doc="Server port (commonly 514 for TCP/UDP, 6514 for TLS).")
    protocol: Literal["tcp", "tls", "udp"] = _f("tcp", doc="`tcp` and `tls` use octet counting (RFC 6587).")
    ca_certs: str | None = _f(None, doc=_TLS_DOC_CA)
    verify_certs: bool = _f(True, doc=_TLS_DOC_VERIFY)
    certfile: str | None = _f(None, doc="Client certificate (PEM) for mutual TLS.")
    keyfile: str | None = _f(None, doc="Client key (PEM) for mutual TLS.")
    server_name: str | None = _f(None, doc="TLS server name to verify (default: `host`).")
    facility: int = _f(16, doc="Syslog facility number (16 = local0).")
    severity: int = _f(6, doc="Syslog severity number (6 = informational).")
    app_name: str = _f("exotrace", doc="APP-NAME field.")
    msgid: str = _f("messagetrace", doc="MSGID field.")
    hostname: str | None = _f(None, doc="HOSTNAME field (default: this machine's name).")
    max_message_bytes: int = _f(65_000, doc="Longer messages are dead-lettered (UDP datagrams cannot exceed ~64 KiB).")
    timeout: float = _f(30.0, doc="Connect/write timeout in seconds.")
    resend_window: float = _f(5.0, doc="TCP/TLS: when a connection breaks, messages written on it in the last "
                              "this many seconds are sent again on the next one (duplicates rather than "
                              "loss; at most 16 MiB are kept). 0 disables.")


@dataclass(frozen=True, kw_only=True)
class FileSinkConfig(SinkConfig):
    """NDJSON file with size and time rotation, optionally gzip-compressing rotated files."""

    TYPE: ClassVar[str] = "file"
    EXAMPLE: ClassVar[str] = """\
[[sink]]
type = "file"
path = "/var/log/exotrace/messagetrace.ndjson"
rotate_bytes = 104857600       # 100 MiB
rotate_interval = 86400        # daily
gzip = true
"""
    batch_max_events: int = _f(5000, doc="Most documents per write.")
    batch_timeout: float = _f(0.2, doc="Seconds to wait for a batch to fill.")
    path: str = _f(doc="Active file; rotated files get a UTC timestamp suffix (`.20260101T000000Z`).")
    rotate_bytes: int = _f(100 * 1024 * 1024, doc="Rotate once the file reaches this size (0: never).")
    rotate_interval: float = _f(0, doc="Rotate when the file is older than this many seconds (0: never).")
    gzip: bool = _f(False, doc="Compress rotated files to `.gz`.")
    fsync: bool = _f(False, doc="fsync after each batch (slower, survives power loss).")


@dataclass(frozen=True, kw_only=True)
class StdoutSinkConfig(SinkConfig):
    """NDJSON on standard output (pipes, containers)."""

    TYPE: ClassVar[str] = "stdout"
    EXAMPLE: ClassVar[str] = """\
[[sink]]
type = "stdout"
required = false
"""
    batch_timeout: float = _f(0.2, doc="Seconds to wait for a batch to fill.")


#: type -> config class
SINK_TYPES: dict[str, type[SinkConfig]] = {
    c.TYPE: c
    for c in (
        ElasticsearchSinkConfig,
        OpenSearchSinkConfig,
        SplunkHecSinkConfig,
        SentinelSinkConfig,
        HttpSinkConfig,
        SyslogSinkConfig,
        FileSinkConfig,
        StdoutSinkConfig,
    )
}

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def example_config(sink_type: str) -> str:
    """A minimal, loadable ``[[sink]]`` TOML example for ``sink_type``."""
    try:
        return SINK_TYPES[sink_type].EXAMPLE
    except KeyError:
        raise ConfigError(f"unknown sink type {sink_type!r} (known: {', '.join(SINK_TYPES)})",
                          key="type") from None


#: Sink options that name a file: relative ones are read against the config file's folder.
_PATH_FIELDS = ("path", "dead_letter", "ca_certs", "certfile", "keyfile")


def _relative_to(config: SinkConfig, base: Path) -> SinkConfig:
    """``config`` with its relative file paths and ``file:`` secret references resolved against ``base``."""
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.name in _PATH_FIELDS and isinstance(value, str) and value and not Path(value).is_absolute():
            changes[f.name] = str(base / value)
        elif isinstance(value, Secret) and value.ref.startswith("file:") and not Path(value.ref[5:]).is_absolute():
            changes[f.name] = Secret(f"file:{base / value.ref[5:]}")
    return dataclasses.replace(config, **changes) if changes else config


def load_sinks(tables: list[dict[str, Any]], base: Path | None = None) -> list[SinkConfig]:
    """Build sink configs from the TOML ``[[sink]]`` tables, rejecting unknown keys and inline secrets.

    ``base`` (the config file's folder) anchors relative paths, as everywhere else in the config file."""
    if not isinstance(tables, list):
        raise ConfigError("[[sink]] must be a list of tables", key="sink")
    configs: list[SinkConfig] = []
    seen: dict[str, int] = {}
    for number, table in enumerate(tables, 1):
        where = f"[[sink]] #{number}"
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: expected a table", key="sink")
        sink_type = table.get("type")
        if sink_type not in SINK_TYPES:
            raise ConfigError(f"{where}: unknown or missing type {sink_type!r} "
                              f"(known: {', '.join(SINK_TYPES)})", key="type")
        cls = SINK_TYPES[sink_type]
        data = dict(table)
        if not data.get("name"):
            seen[sink_type] = seen.get(sink_type, 0) + 1
            data["name"] = sink_type if seen[sink_type] == 1 else f"{sink_type}-{seen[sink_type]}"
        where = f"{where} ({data['name']})"
        config = _from_dict(cls, data, where)
        if base is not None:
            config = _relative_to(config, base)
        _validate(config, where)
        configs.append(config)
    names = [c.name for c in configs]
    for n in names:
        if names.count(n) > 1:
            raise ConfigError(f"[[sink]]: name {n!r} is used twice; give each sink a unique name", key="name")
    return configs


def _from_dict(cls: type[SinkConfig], data: dict[str, Any], where: str) -> SinkConfig:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, raw in data.items():
        if key not in fields:
            raise ConfigError(f"{where}: unknown key {key!r} for type {cls.TYPE!r}", key=key)
        values[key] = _coerce(raw, hints[key], f"{where}: {key}", key)
    for name, f in fields.items():
        if name not in values and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{where}: missing required key {name!r}", key=name)
    return cls(**values)


def _coerce(value: Any, hint: Any, where: str, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where, key)
    if hint is Secret:
        if not isinstance(value, str) or not value.startswith(("env:", "file:")) or len(value) < 5:
            raise ConfigError(f"{where} must be a reference \"env:NAME\" or \"file:/path\", "
                              "not an inline secret", key=key)
        return Secret(value)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where} must be one of {', '.join(repr(a) for a in args)}, not {value!r}", key=key)
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false", key=key)
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{where} must be a non-negative integer", key=key)
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ConfigError(f"{where} must be a non-negative number", key=key)
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string", key=key)
        return value
    if origin is list:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where} must be a list of strings", key=key)
        return list(value)
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise ConfigError(f"{where} must be a table of strings", key=key)
        return dict(value)
    raise ConfigError(f"{where}: unsupported value", key=key)  # pragma: no cover


_SECRET_HEADER = re.compile(r"(auth|token|key|secret|passw|cookie|credential|signature)", re.I)


def _validate(c: SinkConfig, where: str) -> None:
    if not _NAME_RE.match(c.name):
        raise ConfigError(f"{where}: name must be letters, digits, '.', '_' or '-'", key="name")
    for fname in ("batch_max_events", "batch_max_bytes", "buffer_max_events", "buffer_max_bytes", "concurrency"):
        if getattr(c, fname) < 1:
            raise ConfigError(f"{where}: {fname} must be at least 1", key=fname)
    if c.concurrency > 1 and isinstance(c, SyslogSinkConfig | FileSinkConfig | StdoutSinkConfig):
        raise ConfigError(f"{where}: concurrency must be 1 for {c.type} (one stream, in order)", key="concurrency")
    if isinstance(c, ElasticsearchSinkConfig):
        if not c.hosts and not c.cloud_id:
            raise ConfigError(f"{where}: set hosts or cloud_id", key="hosts")
        if c.password and not c.username:
            raise ConfigError(f"{where}: password needs username", key="username")
    if isinstance(c, OpenSearchSinkConfig):
        if not c.hosts:
            raise ConfigError(f"{where}: set hosts", key="hosts")
    if isinstance(c, ElasticsearchSinkConfig | OpenSearchSinkConfig):
        for h in c.hosts:
            _check_url(h, where, "hosts")
    if isinstance(c, SplunkHecSinkConfig | SentinelSinkConfig | HttpSinkConfig):
        _check_url(c.endpoint if isinstance(c, SentinelSinkConfig) else c.url, where,
                   "endpoint" if isinstance(c, SentinelSinkConfig) else "url")
    if isinstance(c, HttpSinkConfig):
        if c.preset == "sekoia" and c.intake_key is None:
            raise ConfigError(f"{where}: preset \"sekoia\" needs intake_key", key="intake_key")
        for h in c.headers:
            if _SECRET_HEADER.search(h):
                raise ConfigError(f"{where}: header {h!r} looks like a secret; use auth_header and "
                                  "auth_header_name with an env:/file: reference", key="headers")
    if isinstance(c, FileSinkConfig):
        if not str(c.path).strip() or Path(c.path).name == "":
            raise ConfigError(f"{where}: path must name a file, e.g. /var/log/exotrace/messagetrace.ndjson",
                              key="path")
        if Path(c.path).is_dir():
            raise ConfigError(f"{where}: path {c.path} is a folder; name a file in it, e.g. "
                              f"{Path(c.path) / 'messagetrace.ndjson'}", key="path")
    if isinstance(c, SentinelSinkConfig) and c.max_request_bytes > 1_000_000:
        raise ConfigError(f"{where}: max_request_bytes cannot exceed the 1 MB API limit", key="max_request_bytes")
    if isinstance(c, SyslogSinkConfig):
        if not 0 <= c.facility <= 23:
            raise ConfigError(f"{where}: facility must be 0..23", key="facility")
        if not 0 <= c.severity <= 7:
            raise ConfigError(f"{where}: severity must be 0..7", key="severity")
        if not 1 <= c.port <= 65535:
            raise ConfigError(f"{where}: port must be 1..65535", key="port")


def _check_url(url: str, where: str, key: str) -> None:
    if not re.match(r"^https?://[^/\s]+", url or ""):
        raise ConfigError(f"{where}: {key} must be an http(s) URL, not {url!r}", key=key)
    if URL_CREDENTIALS.match(url):
        raise ConfigError(f"{where}: {key}: credentials are not accepted inline in a URL; remove them and use "
                          "username/password, api_key, token or auth_header with an env:/file: reference", key=key)


# -- documentation ----------------------------------------------------------------------------------


def _type_name(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _type_name(inner[0])
    if hint is Secret:
        return "secret ref"
    if origin is Literal:
        return " \\| ".join(f'`"{a}"`' for a in args)
    if origin is list:
        return "list of strings"
    if origin is dict:
        return "table of strings"
    return {str: "string", int: "integer", float: "number", bool: "boolean"}.get(hint, str(hint))


def _default(f: dataclasses.Field[Any]) -> str:
    if f.name == "name":
        return "the type"
    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
        return "**required**"
    value = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
    if value is None:
        return ""
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str):
        return f'`"{value}"`'
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"`{value}`"


def docs_table(sink_type: str) -> str:
    """Markdown table of a sink type's own options (``"common"``: the options every sink has)."""
    base = {f.name: f for f in dataclasses.fields(SinkConfig)}
    if sink_type == "common":
        cls: type[SinkConfig] = SinkConfig
        fields = [f for f in base.values() if f.name != "type"]
    else:
        cls = SINK_TYPES[sink_type]
        fields = [f for f in dataclasses.fields(cls)
                  if f.name != "type" and (f.name not in base or _default(f) != _default(base[f.name]))]
    hints = typing.get_type_hints(cls)
    rows = ["| key | type | default | description |", "|---|---|---|---|"]
    for f in fields:
        doc = str(f.metadata.get("doc", "")).replace("|", "\\|")
        rows.append(f"| `{f.name}` | {_type_name(hints[f.name])} | {_default(f)} | {doc} |")
    return "\n".join(rows)


_TABLE_RE = re.compile(r"(<!-- config-table: (\w+) -->\n).*?(<!-- /config-table -->)", re.S)
_EXAMPLE_RE = re.compile(r"(<!-- config-example: (\w+) -->\n).*?(<!-- /config-example -->)", re.S)


def render_docs(markdown: str) -> str:
    """Fill the ``<!-- config-table: TYPE -->`` and ``<!-- config-example: TYPE -->`` blocks of a page."""
    markdown = _TABLE_RE.sub(lambda m: f"{m[1]}{docs_table(m[2])}\n{m[3]}", markdown)
    return _EXAMPLE_RE.sub(lambda m: f"{m[1]}```toml\n{example_config(m[2])}```\n{m[3]}", markdown)

