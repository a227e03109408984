"""Sink health for ``exotrace doctor``: start each configured sink, run its healthcheck, explain failures.

A check sends no document. What it proves depends on the destination (see each sink's ``healthcheck``):
Elasticsearch checks the index privileges, Splunk HEC the token, Sentinel the Entra ID credentials;
syslog over TCP/TLS connects (and verifies the certificate); a generic HTTP endpoint answers a GET.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

from exotrace.errors import AuthError, ConfigError, PrivilegeError
from exotrace.sinks.config import SinkConfig

__all__ = ["SinkHealth", "check_sink_health", "check_sinks", "destination"]

#: Upper bound of one sink's check (its own timeouts normally end it much sooner).
CHECK_TIMEOUT = 60.0

_AUTH_FIXES = {
    "elasticsearch": "check api_key (or username and password); in data_stream mode the key needs create_doc "
                     "and auto_configure on logs-microsoft_exchange_online_message_trace.log-*, in index mode "
                     "index and create_index on the index (docs/sinks.md#elasticsearch)",
    "opensearch": "check username and password (or api_key) and the user's index permissions",
    "splunk_hec": "check token: the HEC token must exist and be enabled (Settings > Data inputs > HTTP Event "
                  "Collector), with indexer acknowledgement enabled if ack = true",
    "sentinel": "check tenant_id, client_id and client_secret of the app registration in Entra ID (an "
                "expired secret needs a new one)",
    "http": "check auth_header / auth_header_name (Sekoia.io: intake_key)",
    "syslog": "check certfile and keyfile (mutual TLS)",
}


@dataclass(frozen=True)
class SinkHealth:
    """One sink's check; ``kind`` classifies a failure like ``exotrace doctor`` does: auth | network | config."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    kind: str = "network"


def destination(cfg: SinkConfig) -> str:
    """Where a sink sends, for messages (never a secret)."""
    cloud_id, hosts, host = (getattr(cfg, k, None) for k in ("cloud_id", "hosts", "host"))
    if cloud_id:
        return f"cloud id {cloud_id.split(':', 1)[0]}"
    if hosts:
        return ", ".join(hosts)
    if host:
        return f"{getattr(cfg, 'protocol', 'tcp')}://{host}:{getattr(cfg, 'port', '')}"
    return str(getattr(cfg, "url", None) or getattr(cfg, "endpoint", None) or getattr(cfg, "path", None)
               or cfg.type)


def _explain(cfg: SinkConfig, exc: BaseException) -> tuple[str, str]:
    """(kind, fix) for a failed check."""
    text = str(exc)
    if isinstance(exc, PrivilegeError):
        return "auth", "grant the missing privileges to the sink's API key or role (docs/sinks.md#elasticsearch)"
    if isinstance(exc, AuthError):
        return "auth", _AUTH_FIXES.get(cfg.type, "check the sink's credentials")
    if isinstance(exc, ConfigError):
        return "config", f"correct the [[sink]] table {cfg.name!r} (docs/sinks.md#{cfg.type})"
    if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
        if "Hostname mismatch" in text or "IP address mismatch" in text:
            return "network", "connect with the name in the server's certificate (syslog: server_name)"
        return "network", ("set ca_certs to the PEM file of the CA that signed the server's certificate "
                           "(certificates are always verified unless verify_certs = false)")
    return "network", f"check that {destination(cfg)} is up and reachable from this machine (address, port, " \
                      "firewall, proxy)"


async def _check(cfg: SinkConfig) -> SinkHealth:
    from exotrace.sinks.pipeline import build_sink

    where = f"{cfg.type} {destination(cfg)}"
    sink = build_sink(cfg)
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            await sink.start()
            detail = await sink.healthcheck()
        return SinkHealth(cfg.name, True, f"{where}: {detail}")
    except TimeoutError as exc:
        return SinkHealth(cfg.name, False, f"{where}: no answer within {CHECK_TIMEOUT:g}s", _explain(cfg, exc)[1])
    except Exception as exc:  # every failure becomes a line with its fix
        kind, fix = _explain(cfg, exc)
        return SinkHealth(cfg.name, False, f"{where}: {exc or type(exc).__name__}", fix, kind)
    finally:
        with contextlib.suppress(Exception):
            await sink.close()


async def check_sink_health(configs: Sequence[SinkConfig]) -> list[SinkHealth]:
    """Check every sink (concurrently); results in configuration order."""
    return list(await asyncio.gather(*(_check(cfg) for cfg in configs)))


async def check_sinks(configs: Sequence[SinkConfig]) -> dict[str, str]:
    """name -> "" when the sink's check passed, else the reason."""
    return {h.name: "" if h.ok else h.detail for h in await check_sink_health(configs)}
