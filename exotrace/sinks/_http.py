"""HTTP plumbing shared by the HTTP sinks: client construction, TLS, and status -> exotrace error."""

from __future__ import annotations

import ssl
from typing import Any

import httpx

from exotrace import __version__
from exotrace.errors import AuthError, ConfigError, SinkError, ThrottledError, TransientError
from exotrace.net.retry import parse_retry_after

__all__ = ["USER_AGENT", "check_response", "make_client", "ssl_context", "transport_error"]

USER_AGENT = f"exotrace/{__version__}"


def ssl_context(ca_certs: str | None, verify: bool, certfile: str | None = None,
                keyfile: str | None = None) -> ssl.SSLContext:
    """A client TLS context: system trust (or ``ca_certs``), verification on unless told otherwise."""
    try:
        ctx = ssl.create_default_context(cafile=ca_certs) if ca_certs else ssl.create_default_context()
        if certfile:
            ctx.load_cert_chain(certfile, keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load TLS files ({ca_certs or certfile}): {exc}", key="ca_certs") from exc
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def make_client(cfg: Any, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
    """An AsyncClient for a sink config with ``ca_certs``, ``verify_certs`` and ``timeout``."""
    return httpx.AsyncClient(
        verify=ssl_context(cfg.ca_certs, cfg.verify_certs),
        timeout=httpx.Timeout(cfg.timeout),
        headers={"User-Agent": USER_AGENT, **(headers or {})},
        limits=httpx.Limits(max_connections=4, max_keepalive_connections=4),
    )


def transport_error(exc: Exception, url: str) -> TransientError:
    """Connection refused/reset, timeouts, TLS failures: retry later."""
    return TransientError(f"{url}: {type(exc).__name__}: {exc or 'connection failed'}")


def check_response(resp: httpx.Response, what: str, body_hint: str = "") -> None:
    """Raise the exotrace error that a non-2xx status means; return for 2xx."""
    code = resp.status_code
    if 200 <= code < 300:
        return
    detail = body_hint or _short(resp)
    msg = f"{what}: HTTP {code}" + (f" {detail}" if detail else "")
    if code == 429:
        raise ThrottledError(msg, retry_after=parse_retry_after(resp.headers.get("retry-after")))
    if code >= 500 or code == 408:
        raise TransientError(msg, retry_after=parse_retry_after(resp.headers.get("retry-after")))
    if code in (401, 403):
        raise AuthError(msg)
    if code in (400, 413, 422):
        raise SinkError(msg)
    raise ConfigError(msg)


def _short(resp: httpx.Response) -> str:
    try:
        text = resp.text
    except Exception:  # undecodable body
        return ""
    text = " ".join(text.split())
    return text[:300]
