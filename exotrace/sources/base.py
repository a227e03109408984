"""What every API source shares: one authenticated, quota-governed, retrying GET.

A source pulls one window as pages of rows (:class:`Page`). :class:`ApiCaller.get_json` sends one GET
through the tenant's quota governor with a bearer token, and retries what can be retried: 429 (honouring
``Retry-After``, pausing the whole tenant), 5xx, timeouts, dropped connections, truncated or malformed
bodies (exponential backoff with jitter), and 401 for an expired token (new token, once). A 400 is
returned to the source as :class:`BadRequest` (it decides: repair the continuation or restart the window).
Permission problems raise :class:`~exotrace.errors.AuthError` with the service's text and the fix. Every
wait (token, quota, the request, backoff, ``Retry-After``) races the ``stop`` event: shutdown raises
:class:`~exotrace.collect.stop.Stopped` at once instead of waiting for the quota.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx
import orjson

from exotrace.auth import TokenProvider
from exotrace.clock import Clock
from exotrace.collect.quota import QuotaGovernor
from exotrace.collect.stop import unless_stopped
from exotrace.config import TenantConfig
from exotrace.errors import AuthError, ExotraceError, PermanentError, TransientError
from exotrace.net import Backoff, parse_retry_after, redact

log = logging.getLogger("exotrace.sources")

SP_APP_ID = "8bd644d1-64a1-4d4b-ae52-2e0cbf64e373"
FIX_SERVICE_PRINCIPAL = (
    f"create the Transport Data Platform service principal in the tenant: "
    f"`New-MgServicePrincipal -AppId {SP_APP_ID}` (Microsoft Graph PowerShell) or "
    f"POST /v1.0/servicePrincipals {{\"appId\":\"{SP_APP_ID}\"}}; provisioning can take several hours"
)
FIX_GRAPH_PERMISSION = (
    "grant the app the Microsoft Graph application permission ExchangeMessageTrace.Read.All and give "
    "admin consent (Entra ID > App registrations > API permissions)"
)
FIX_RWS_ROLE = (
    "give the app the Office 365 Exchange Online application permission ReportingWebService.Read.All with "
    "admin consent, and assign its service principal the Global Reader (or Security Reader) directory role"
)


#: RWS answers 500 UnknownError from ``$skiptoken=999999`` on (msapi.md 2.3): a window of about a million
#: rows. A 500 at an offset this high is taken as that limit (the window is split); below, as a fault.
RWS_OFFSET_LIMIT = 900_000
_RWS_SKIP = re.compile(r"[?&](?:\$|%24)skiptoken=(\d+)(?:&|$)", re.IGNORECASE)


class BadRequest(ExotraceError):
    """The service answered 400 (or refused a continuation): the source decides what to do."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class ContinuationFailed(TransientError):
    """A window's continuation kept failing after repairs and restarts: split the window."""


@dataclass(slots=True)
class Page:
    rows: list[dict[str, Any]]
    url: str
    fetched_at: datetime
    #: 0-based position of the first row within this read of the window.
    offset: int
    #: True on the first page of a (re)started read.
    first: bool = False


class Source(Protocol):
    """Pulls one window ``[start, end]`` (inclusive) as pages of rows."""

    shape: str

    def pages(self, start: datetime, end: datetime) -> AsyncIterator[Page]: ...


@dataclass
class Counters:
    requests: int = 0
    throttled: int = 0
    retries: int = 0
    restarts: int = 0
    repaired: int = 0
    errors: dict[str, int] = field(default_factory=dict)


class ApiCaller:
    """One tenant's HTTP access: token, quota, retries."""

    def __init__(self, tenant: TenantConfig, client: httpx.AsyncClient, tokens: TokenProvider,
                 quota: QuotaGovernor, clock: Clock, *, max_attempts: int = 8,
                 stop: asyncio.Event | None = None) -> None:
        self.tenant = tenant
        self.stop = stop
        self.client = client
        self.tokens = tokens
        self.quota = quota
        self.clock = clock
        self.max_attempts = max_attempts
        self.counters = Counters()
        self.origins = {_origin(u) for u in (tenant.graph_url, tenant.rws_url) if u}
        #: Called as each request is counted against the quota, just before it is sent.
        self.on_request: Callable[[], None] | None = None

    def check_origin(self, url: str) -> None:
        """Refuse a URL off the configured API origins (scheme, host, port): the token goes with every GET,
        and a next link from a response must not send it elsewhere (or over plain HTTP)."""
        if _origin(url) not in self.origins:
            shown = redact(url.split("?", 1)[0])[:200]
            raise PermanentError(
                f"refusing to send the token to {shown}: a next link left the configured API origin "
                f"({', '.join(sorted(f'{s}://{h}:{p}' for s, h, p in self.origins))}); check graph_url/rws_url "
                "and any proxy rewriting responses")

    async def get_json(self, url: str, params: dict[str, str] | None = None,
                       headers: dict[str, str] | None = None) -> tuple[dict[str, Any], str, datetime]:
        """GET ``url``; return (decoded JSON object, final URL, fetch time)."""
        backoff = Backoff(base=2.0, cap=120.0)
        auth_retries = throttles = 0
        last: Exception | None = None
        attempt = 0
        self.check_origin(url)
        while attempt < self.max_attempts:
            attempt += 1
            token = await unless_stopped(self.tokens.token(), self.stop)
            await unless_stopped(self.quota.acquire(), self.stop)
            self.counters.requests += 1
            if self.on_request is not None:
                self.on_request()
            hdrs = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
            hdrs.update(headers or {})
            try:
                resp, body = await unless_stopped(self._get(url, params, hdrs), self.stop)
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                last = TransientError(f"{type(exc).__name__}: {redact(exc) or 'connection failed'}")
                self._count(type(exc).__name__)
                await self._sleep(backoff.next())
                continue
            fetched = self.clock.now()
            status = resp.status_code
            shown = redact(str(resp.request.url))
            log.debug("response tenant=%s status=%d bytes=%d url=%s", self.tenant.name, status, len(body), shown)
            if status == 200:
                try:
                    data = orjson.loads(body)
                    if not isinstance(data, dict):
                        raise ValueError("not a JSON object")
                except (orjson.JSONDecodeError, ValueError) as exc:
                    last = TransientError(f"malformed response body from {shown}: {exc}")
                    self._count("malformed")
                    await self._sleep(backoff.next())
                    continue
                return data, str(resp.request.url), fetched
            text = redact(_error_text(body))
            if status == 429:
                self.counters.throttled += 1
                wait = parse_retry_after(resp.headers.get("Retry-After"), fetched)
                wait = wait if wait is not None else backoff.next()
                self.quota.pause(wait)
                log.warning("throttled tenant=%s retry_after=%.0fs", self.tenant.name, wait)
                last = TransientError(f"throttled (429) by {shown}", retry_after=wait)
                throttles += 1
                if throttles < 100:  # a 429 storm is waited out, not counted as failed attempts
                    attempt -= 1
                continue
            if status == 401:
                if _sp_missing(text):
                    raise AuthError(f"tenant {self.tenant.name}: Graph answered 401: {text[:400]} -> "
                                    f"{FIX_SERVICE_PRINCIPAL}")
                if auth_retries < 2:
                    auth_retries += 1
                    attempt -= 1
                    self.tokens.invalidate()
                    log.info("token refused tenant=%s; acquiring a new one", self.tenant.name)
                    continue
                if "expired" in text.lower() or "lifetime" in text.lower():
                    last = TransientError(f"tokens expire before use (clock skew?): {text[:200]}")
                    await self._sleep(backoff.next())
                    continue
                raise AuthError(f"tenant {self.tenant.name}: {shown} answered 401 with a fresh token: "
                                f"{text[:300]}")
            if status == 403 and self.tenant.api == "rws" and auth_retries == 0:
                # RWS lists wrong credentials under 403 too: a fresh token first, then it is the role
                auth_retries += 1
                attempt -= 1
                self.tokens.invalidate()
                log.info("403 from RWS tenant=%s; trying a new token before reporting the role", self.tenant.name)
                continue
            if status == 403:
                fix = FIX_GRAPH_PERMISSION if self.tenant.api == "graph" else FIX_RWS_ROLE
                raise AuthError(f"tenant {self.tenant.name}: access denied (403): {text[:300]} -> {fix}")
            if status == 400:
                raise BadRequest(f"400 from {shown}: {text[:500]}")
            if status == 404:
                raise PermanentError(f"tenant {self.tenant.name}: {shown} not found (404): {text[:300]}; "
                                     f"check graph_url/rws_url (RWS message trace may be retired for this tenant)")
            if status >= 500 or status == 408:
                self._count(str(status))
                last = TransientError(f"{status} from {shown}: {text[:300]}")
                if status == 500 and "UnknownError" in text and _rws_offset(shown) >= RWS_OFFSET_LIMIT:
                    raise BadRequest(f"500 from {shown}: {text[:300]}", status=500)
                await self._sleep(backoff.next(), parse_retry_after(resp.headers.get("Retry-After"), fetched))
                continue
            raise PermanentError(f"tenant {self.tenant.name}: unexpected HTTP {status} from {shown}: {text[:300]}")
        raise last or TransientError("request failed")

    async def _get(self, url: str, params: dict[str, str] | None,
                   headers: dict[str, str]) -> tuple[httpx.Response, bytes]:
        resp = await self.client.get(url, params=params, headers=headers)
        return resp, await resp.aread()

    def _count(self, kind: str) -> None:
        self.counters.retries += 1
        self.counters.errors[kind] = self.counters.errors.get(kind, 0) + 1

    async def _sleep(self, seconds: float, retry_after: float | None = None) -> None:
        await unless_stopped(self.clock.sleep(max(seconds, retry_after or 0.0)), self.stop)


def api_time(t: datetime, *, end: bool = False) -> str:
    """A query bound as ISO 8601 UTC with ``Z`` (fractional seconds only when needed).

    Microsoft keeps ``Received`` in 100 ns ticks and windows meet one microsecond apart (the ledger's
    ``TICK``), so an ``end`` is written to the last tick of its microsecond (``...59.9999999Z``): a row
    at ``...59.9999995`` falls in this window, not between two.
    """
    t = t.astimezone(UTC)
    if end:
        return t.strftime("%Y-%m-%dT%H:%M:%S.%f") + "9Z"
    if t.microsecond:
        return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _error_text(body: bytes) -> str:
    """The useful part of an error body: Graph ``code: message``, RWS ``Message``, OData ``message``."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:2000].decode("utf-8", "replace")
    if isinstance(data, dict):
        err = data.get("error") or data.get("odata.error")
        if isinstance(err, dict):
            msg = err.get("message")
            if isinstance(msg, dict):
                msg = msg.get("value")
            return f"{err.get('code') or 'error'}: {msg}"
        if isinstance(data.get("Message"), str):
            return str(data["Message"])
    return body[:2000].decode("utf-8", "replace")


def _rws_offset(url: str) -> int:
    """The integer ``$skiptoken`` (RWS row offset) of ``url``; -1 when there is none."""
    m = _RWS_SKIP.search(url)
    return int(m.group(1)) if m else -1


def _sp_missing(text: str) -> bool:
    t = text.lower()
    return "service principal" in t and SP_APP_ID in t


def _origin(url: str) -> tuple[str, str, int]:
    u = httpx.URL(url)
    return u.scheme, u.host, u.port or (443 if u.scheme == "https" else 80)
