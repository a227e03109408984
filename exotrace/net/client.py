"""HTTP clients with verified TLS (system CAs + an optional extra bundle) and an optional proxy."""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import ssl
import tempfile
from pathlib import Path
from typing import Any

import certifi
import httpx
import requests

from exotrace import __version__

USER_AGENT = f"exotrace/{__version__}"


def ssl_context(ca_bundle: Path | None = None) -> ssl.SSLContext:
    """A verifying TLS context trusting certifi's roots plus ``ca_bundle`` when given."""
    ctx = ssl.create_default_context(cafile=certifi.where())
    if ca_bundle is not None:
        ctx.load_verify_locations(cafile=str(ca_bundle))
    return ctx


_BUNDLES: dict[str, str] = {}  # combined bundle text digest -> this process's private file


def _combined_bundle(ca_bundle: Path) -> str:
    """certifi's roots plus ``ca_bundle`` in one private temp file (requests takes a single path).

    The file is created afresh by this process (``mkstemp``: exclusive, mode 0600) and removed at exit. A
    predictable name in the shared temp folder would let another local user plant a bundle of their own
    (and with it a CA that reads the token requests), so an existing file is never reused.
    """
    combined = Path(certifi.where()).read_text() + "\n" + ca_bundle.read_text()
    digest = hashlib.sha256(combined.encode()).hexdigest()
    found = _BUNDLES.get(digest)
    if found is not None and os.path.exists(found):
        return found
    fd, path = tempfile.mkstemp(prefix="exotrace-ca-", suffix=".pem")
    with os.fdopen(fd, "w") as out:
        out.write(combined)
    if not _BUNDLES:
        atexit.register(_remove_bundles)
    _BUNDLES[digest] = path
    return path


def _remove_bundles() -> None:
    for path in _BUNDLES.values():
        with contextlib.suppress(OSError):
            os.unlink(path)
    _BUNDLES.clear()


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


class _Session(requests.Session):
    """A session whose ``verify`` is not overridden by REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE."""

    def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any,
                                   cert: Any) -> dict[str, Any]:
        merged: dict[str, Any] = super().merge_environment_settings(url, proxies, stream, verify, cert)
        if isinstance(self.verify, str):
            merged["verify"] = self.verify
        return merged


def make_requests_session(*, ca_bundle: Path | None = None, proxy: str | None = None) -> requests.Session:
    """A requests session for MSAL (its ``http_client``): same CA and proxy as the API client."""
    s = _Session()
    s.headers["User-Agent"] = USER_AGENT
    if ca_bundle is not None:
        s.verify = _combined_bundle(ca_bundle)
    if proxy:
        s.proxies = {"http": proxy, "https": proxy}
        s.trust_env = False
    return s
