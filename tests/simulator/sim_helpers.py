"""Helpers for the simulator tests: tokens, windows, paging loops."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urljoin

import httpx

from exotrace.model import row_key
from exotrace.simulator.config import SimTenant
from exotrace.simulator.server import Simulator

START = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
GRAPH_SCOPE = "https://graph.microsoft.com/.default"
RWS_SCOPE = "https://outlook.office365.com/.default"


def token(client: httpx.Client, sim: Simulator, tenant: SimTenant, scope: str = GRAPH_SCOPE) -> str:
    r = client.post(f"{sim.login_url}/{tenant.tenant_id}/oauth2/v2.0/token", data={
        "grant_type": "client_credentials", "client_id": tenant.client_id,
        "client_secret": tenant.client_secret, "scope": scope})
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


def auth(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


def z(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def window(sim: Simulator, days_back: float, hours: float) -> tuple[datetime, datetime]:
    """A window of ``hours`` ending ``days_back`` days before the simulated now (whole seconds)."""
    end = (sim.clock.now() - timedelta(days=days_back)).replace(microsecond=0)
    return end - timedelta(hours=hours), end


def graph_filter(start: datetime, end: datetime, extra: str = "") -> str:
    f = f"receivedDateTime ge {z(start)} and receivedDateTime le {z(end)}"
    return f"{f} and {extra}" if extra else f


def graph_pages(client: httpx.Client, sim: Simulator, tok: str, params: dict[str, str],
                headers: dict[str, str] | None = None, version: str = "v1.0") -> list[list[dict[str, Any]]]:
    """Follow @odata.nextLink to the end; every response must be 200."""
    url = f"{sim.graph_url}/{version}/admin/exchange/tracing/messageTraces"
    pages = []
    r = client.get(url, params=params, headers={**auth(tok), **(headers or {})})
    while True:
        assert r.status_code == 200, r.text
        body = r.json()
        pages.append(body["value"])
        nxt = body.get("@odata.nextLink")
        if not nxt:
            return pages
        r = client.get(nxt, headers={**auth(tok), **(headers or {})})


def rws_pages(client: httpx.Client, sim: Simulator, tok: str, params: dict[str, str]) -> list[list[dict[str, Any]]]:
    """JSON light paging: follow the relative odata.nextLink, resolved against the request URL."""
    url = f"{sim.rws_url}/MessageTrace"
    pages = []
    r = client.get(url, params=params, headers={**auth(tok), "Accept": "application/json"})
    while True:
        assert r.status_code == 200, r.text
        body = r.json()
        pages.append(body["value"])
        nxt = body.get("odata.nextLink")
        if not nxt:
            return pages
        assert nxt.startswith("../../reportingwebservice/reporting.svc/MessageTrace?")
        r = client.get(urljoin(str(r.url), nxt), headers={**auth(tok), "Accept": "application/json"})


def keys_of(rows: list[dict[str, Any]], graph: bool = True) -> list[str]:
    if graph:
        return [row_key(r["id"], r["recipientAddress"]) for r in rows]
    return [row_key(r["MessageTraceId"], r["RecipientAddress"]) for r in rows]
