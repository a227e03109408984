"""Reporting Web Service ``MessageTrace`` source (legacy): JSON light pages, integer ``$skiptoken``.

``$filter=StartDate eq datetime'…' and EndDate eq datetime'…'`` with ``$top=2000`` and
``Accept: application/json``; the relative ``odata.nextLink`` is resolved against the request URL. Verbose
JSON (``d.results``/``__next``) is read too. The service allows about a million rows per window
(``$skiptoken`` >= 999999 answers 500): such a window is split.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any
from urllib.parse import urljoin

from exotrace.errors import PermanentError
from exotrace.sources.base import ApiCaller, BadRequest, ContinuationFailed, Page, api_time

log = logging.getLogger("exotrace.sources.rws")


class RwsSource:
    """Pulls RWS message traces for one tenant."""

    shape = "rws"

    def __init__(self, caller: ApiCaller, *, max_restarts: int = 3) -> None:
        self.caller = caller
        self.base = f"{caller.tenant.rws_url}/MessageTrace"
        self.page_size = caller.tenant.page_size
        self.max_restarts = max_restarts

    async def pages(self, start: datetime, end: datetime) -> AsyncIterator[Page]:
        params = {
            "$filter": f"StartDate eq datetime'{api_time(start)}' and EndDate eq datetime'{api_time(end, end=True)}'",
            "$top": str(self.page_size),
        }
        restarts = 0
        while True:
            url: str = self.base
            query: dict[str, str] | None = params
            offset, first = 0, True
            try:
                while True:
                    try:
                        data, final_url, fetched = await self.caller.get_json(url, query)
                    except BadRequest as exc:
                        if exc.status == 500:
                            raise ContinuationFailed(f"window too large for RWS paging: {exc}") from None
                        if query is not None:
                            raise PermanentError(str(exc)) from None
                        raise
                    rows, nxt = _rows_and_next(data)
                    del data
                    n = len(rows)
                    yield Page(rows, final_url, fetched, offset, first)
                    del rows
                    offset += n
                    first = False
                    if not nxt or not n:
                        return
                    url, query = urljoin(final_url, nxt), None
            except BadRequest as exc:
                restarts += 1
                self.caller.counters.restarts += 1
                if restarts > self.max_restarts:
                    raise ContinuationFailed(f"continuation kept failing: {exc}") from None
                log.warning("restarting window tenant=%s reason=%s", self.caller.tenant.name, str(exc)[:200])


def _rows_and_next(data: dict[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
    if "d" in data and isinstance(data["d"], dict | list):
        d = data["d"]
        rows = d.get("results", []) if isinstance(d, dict) else d
        nxt = d.get("__next") if isinstance(d, dict) else None
        clean = [{k: v for k, v in r.items() if k != "__metadata"} for r in rows if isinstance(r, dict)]
        return clean, nxt
    rows = data.get("value", [])
    if not isinstance(rows, list):
        rows = []
    return [r for r in rows if isinstance(r, dict)], data.get("odata.nextLink") or data.get("@odata.nextLink")
