"""Microsoft Graph ``messageTraces`` source: one window -> pages of rows, newest first.

Asks for the largest page (``$top=5000``), follows ``@odata.nextLink`` as given, repairs continuation
tokens whose values were JSON-encoded twice (Elastic #18134) before sending them, and when a continuation
is still refused (400 "Invalid starting recipient address", a repeated 400) re-reads the whole window from
its first page: rows are upserted by (MessageTraceId, RecipientAddress), so a re-read is idempotent.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any
from urllib.parse import quote, unquote

import orjson

from exotrace.errors import PermanentError
from exotrace.sources.base import ApiCaller, BadRequest, ContinuationFailed, Page, api_time

log = logging.getLogger("exotrace.sources.graph")

_SKIP = re.compile(r"([?&]\$skiptoken=)([^&#]*)", re.IGNORECASE)


def _b64decode(token: str) -> tuple[bytes, bool, bool] | None:
    """Decode standard or URL-safe base64, padded or not -> (bytes, was_padded, urlsafe)."""
    padded = token.endswith("=")
    body = token + "=" * (-len(token) % 4)
    for urlsafe in (False, True):
        try:
            raw = (base64.urlsafe_b64decode if urlsafe else base64.b64decode)(body.encode())
            if not urlsafe and ("-" in token or "_" in token):
                continue
            return raw, padded, urlsafe
        except (binascii.Error, ValueError):
            continue
    return None


def _unwrap(value: Any) -> Any:
    """``"\\"2026-03-26T15:43:20Z\\""`` -> ``"2026-03-26T15:43:20Z"`` (any depth)."""
    for _ in range(5):
        if isinstance(value, str) and len(value) >= 2 and value[0] == '"' and value[-1] == '"':
            try:
                inner = orjson.loads(value)
            except orjson.JSONDecodeError:
                return value
            if not isinstance(inner, str):
                return value
            value = inner
        else:
            return value
    return value


def repair_skiptoken(token: str) -> str | None:
    """The token with double-encoded JSON values unwrapped, or None when it needs no repair."""
    decoded = _b64decode(token)
    if decoded is None:
        return None
    raw, padded, urlsafe = decoded
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict):
        return None
    fixed = {k: _unwrap(v) for k, v in obj.items()}
    if fixed == obj:
        return None
    out = (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(orjson.dumps(fixed)).decode()
    return out if padded else out.rstrip("=")


def repair_next_link(url: str) -> str | None:
    """``url`` with its ``$skiptoken`` repaired, or None when there is nothing to repair."""
    m = _SKIP.search(url)
    if not m:
        return None
    fixed = repair_skiptoken(unquote(m.group(2)))
    if fixed is None:
        return None
    return url[: m.start(2)] + quote(fixed, safe="") + url[m.end(2):]


class _Restart(Exception):
    pass


class GraphSource:
    """Pulls Graph message traces for one tenant."""

    shape = "graph"

    def __init__(self, caller: ApiCaller, *, max_restarts: int = 3) -> None:
        self.caller = caller
        t = caller.tenant
        self.base = f"{t.graph_url}/{t.graph_version}/admin/exchange/tracing/messageTraces"
        self.page_size = t.page_size
        self.max_restarts = max_restarts
        self.headers = {"Prefer": "include-unknown-enum-members"}

    async def pages(self, start: datetime, end: datetime) -> AsyncIterator[Page]:
        params = {
            "$filter": f"receivedDateTime ge {api_time(start)} and receivedDateTime le {api_time(end, end=True)}",
            "$top": str(self.page_size),
        }
        restarts = 0
        while True:
            try:
                async for page in self._read(params):
                    yield page
                return
            except _Restart as exc:
                restarts += 1
                self.caller.counters.restarts += 1
                if restarts > self.max_restarts:
                    raise ContinuationFailed(
                        f"continuation kept failing after {self.max_restarts} restarts: {exc}") from None
                log.warning("restarting window tenant=%s window=%s..%s reason=%s", self.caller.tenant.name,
                            api_time(start), api_time(end, end=True), str(exc)[:200])

    async def _read(self, params: dict[str, str]) -> AsyncIterator[Page]:
        url: str = self.base
        query: dict[str, str] | None = params
        offset = 0
        first = True
        repaired_once = False
        while True:
            try:
                data, final_url, fetched = await self.caller.get_json(url, query, self.headers)
            except BadRequest as exc:
                if query is not None:  # the first page: our query itself was refused
                    raise PermanentError(str(exc)) from None
                fixed = None if repaired_once else repair_next_link(url)
                if fixed:
                    repaired_once = True
                    self.caller.counters.repaired += 1
                    url = fixed
                    continue
                raise _Restart(str(exc)) from None
            rows = data.get("value")
            nxt = data.get("@odata.nextLink")
            del data
            if not isinstance(rows, list):
                raise _Restart(f"response without a value array from {final_url[:200]}")
            n = len(rows)
            rows = [r for r in rows if isinstance(r, dict)]
            yield Page(rows, final_url, fetched, offset, first)
            del rows
            offset += n
            first = False
            if not nxt:
                return
            fixed = repair_next_link(str(nxt))
            if fixed:
                self.caller.counters.repaired += 1
            url, query, repaired_once = fixed or str(nxt), None, False
