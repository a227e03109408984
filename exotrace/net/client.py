"""HTTP clients with verified TLS (system CAs + an optional extra bundle) and an optional proxy."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import certifi
import httpx
import requests
from requests.adapters import HTTPAdapter

from exotrace import __version__

USER_AGENT = f"exotrace/{__version__}"


def ssl_context(ca_bundle: Path | None = None) -> ssl.SSLContext:
    """A verifying TLS context trusting certifi's roots plus ``ca_bundle`` when given."""
    ctx = ssl.create_default_context(cafile=certifi.where())
    if ca_bundle is not None:
        ctx.load_verify_locations(cafile=str(ca_bundle))
    return ctx


def make_async_client(*, ca_bundle: Path | None = None, proxy: str | None = None,
                      timeout: float = 120.0, max_connections: int = 10) -> httpx.AsyncClient:
    """An httpx client for Graph/RWS calls. TLS is always verified."""
    return httpx.AsyncClient(
        verify=ssl_context(ca_bundle),
        proxy=proxy,
        timeout=httpx.Timeout(timeout, connect=min(timeout, 30.0)),
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        headers={"User-Agent": USER_AGENT},
        follow_redirects=False,
        trust_env=proxy is None,
    )


class _ContextAdapter(HTTPAdapter):
    """Connections (direct or through a proxy's tunnel) verified by one ``SSLContext``: no CA file on disk,
    so none that another local user could swap."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self._context = context
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["ssl_context"] = self._context
        super().init_poolmanager(*args, **kwargs)

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
        kwargs["ssl_context"] = self._context
        return super().proxy_manager_for(proxy, **kwargs)


class _Session(requests.Session):
    """A session that verifies TLS with its own adapters' context: ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE``
    cannot replace it."""

    def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any,
                                   cert: Any) -> dict[str, Any]:
        merged: dict[str, Any] = super().merge_environment_settings(url, proxies, stream, verify, cert)
        merged["verify"] = True
        return merged


def make_requests_session(*, ca_bundle: Path | None = None, proxy: str | None = None) -> requests.Session:
    """A requests session for MSAL (its ``http_client``): the API client's CAs (certifi's roots plus
    ``ca_bundle``) and proxy."""
    s = _Session()
    s.headers["User-Agent"] = USER_AGENT
    s.mount("https://", _ContextAdapter(ssl_context(ca_bundle)))
    if proxy:
        s.proxies = {"http": proxy, "https": proxy}
        s.trust_env = False
    return s
