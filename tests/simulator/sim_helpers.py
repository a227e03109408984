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


class PatientGraphReader:
    """A small, correct Graph reader: retries faults, honours Retry-After on the simulated clock,
    re-acquires expired tokens and repairs poisoned continuation tokens. Used to prove that faults
    leave the data intact."""

    def __init__(self, client: httpx.Client, sim: Simulator, tenant: SimTenant, top: int = 200) -> None:
        self.client, self.sim, self.tenant, self.top = client, sim, tenant, top
        self.tok = ""
        self.log: list[str] = []

    def _token(self) -> str:
        if not self.tok:
            self.tok = token(self.client, self.sim, self.tenant)
        return self.tok

    def get(self, url: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        for _ in range(60):
            try:
                r = self.client.get(url, params=params, headers=auth(self._token()))
                if r.status_code == 200:
                    body: dict[str, Any] = r.json()
                    return body
            except (httpx.TransportError, ValueError) as exc:
                self.log.append(type(exc).__name__)
                continue
            self.log.append(str(r.status_code))
            if r.status_code == 401:
                self.tok = ""
            elif r.status_code == 429:
                self.sim.clock.sleep_sync(float(r.headers["Retry-After"]))
            elif r.status_code == 400:
                msg = r.json()["error"]["message"]
                if "Cannot process argument transformation" in msg:
                    url = repair(url)
                    params = None
                elif "Invalid starting recipient address" not in msg:
                    raise AssertionError(msg)
            elif r.status_code < 500:
                raise AssertionError(r.text)
        raise AssertionError("gave up: " + ",".join(self.log[-10:]))

    def read(self, start: datetime, end: datetime) -> dict[str, dict[str, Any]]:
        url = f"{self.sim.graph_url}/v1.0/admin/exchange/tracing/messageTraces"
        params: dict[str, str] | None = {"$filter": graph_filter(start, end), "$top": str(self.top)}
        out: dict[str, dict[str, Any]] = {}
        while True:
            body = self.get(url, params)
            for r in body["value"]:
                key = row_key(r["id"], r["recipientAddress"])
                assert key not in out, f"duplicate row {key}"
                out[key] = r
            if "@odata.nextLink" not in body:
                return out
            url, params = body["@odata.nextLink"], None


def repair(url: str) -> str:
    """Undo Microsoft's double JSON encoding inside a $skiptoken."""
    import base64
    import json

    u = httpx.URL(url)
    raw = u.params["$skiptoken"]
    obj = json.loads(base64.b64decode(raw + "=" * (-len(raw) % 4)))
    fixed = {k: json.loads(v) if isinstance(v, str) and v.startswith('"') else v for k, v in obj.items()}
    tok = base64.b64encode(json.dumps(fixed).encode()).decode()
    return str(u.copy_set_param("$skiptoken", tok))


ATOM_NS = {"a": "http://www.w3.org/2005/Atom",
           "m": "http://schemas.microsoft.com/ado/2007/08/dataservices/metadata",
           "d": "http://schemas.microsoft.com/ado/2007/08/dataservices"}


def rws_page(r: httpx.Response, fmt: str) -> tuple[list[dict[str, Any]], str | None]:
    """Rows and the absolute next URL of one RWS page in ``fmt`` (light, verbose, atom); raises
    ValueError (JSON) or ParseError (XML) for a broken body."""
    import xml.etree.ElementTree as ET

    if fmt == "atom":
        feed = ET.fromstring(r.content)
        rows = []
        for props in feed.iterfind("a:entry/a:content/m:properties", ATOM_NS):
            row: dict[str, Any] = {}
            for el in props:
                name = el.tag.rpartition("}")[2]
                row[name] = None if el.get(f"{{{ATOM_NS['m']}}}null") == "true" else (el.text or "")
            rows.append(row)
        nxt = feed.find("a:link[@rel='next']", ATOM_NS)
        return rows, nxt.get("href") if nxt is not None else None
    body = r.json()
    if fmt == "verbose":
        d = body["d"]
        return [{k: v for k, v in x.items() if k != "__metadata"} for x in d["results"]], d.get("__next")
    nxt = body.get("odata.nextLink")
    return body["value"], urljoin(str(r.url), nxt) if nxt else None


class PatientRwsReader:
    """A small, correct RWS reader in any response format: retries faults (5xx, drops, broken bodies,
    timeouts), honours ``Retry-After`` on 503/429 on the simulated clock, re-acquires expired tokens."""

    def __init__(self, client: httpx.Client, sim: Simulator, tenant: SimTenant, fmt: str = "light",
                 top: int = 200) -> None:
        self.client, self.sim, self.tenant, self.fmt, self.top = client, sim, tenant, fmt, top
        self.tok = ""
        self.log: list[str] = []
        self.error_bodies: list[tuple[int, str, bytes]] = []

    def _headers(self) -> dict[str, str]:
        if not self.tok:
            self.tok = token(self.client, self.sim, self.tenant, scope=RWS_SCOPE)
        h = auth(self.tok)
        if self.fmt == "light":
            h["Accept"] = "application/json"
        return h

    def get(self, url: str, params: dict[str, str] | None) -> tuple[list[dict[str, Any]], str | None]:
        import xml.etree.ElementTree as ET

        for _ in range(60):
            try:
                r = self.client.get(url, params=params, headers=self._headers())
                if r.status_code == 200:
                    return rws_page(r, self.fmt)
            except (httpx.TransportError, ValueError, KeyError, ET.ParseError) as exc:
                self.log.append(type(exc).__name__)
                continue
            self.log.append(str(r.status_code))
            self.error_bodies.append((r.status_code, r.headers.get("content-type", ""), r.content))
            if r.status_code == 401:
                self.tok = ""
            elif r.status_code in (429, 503) and "Retry-After" in r.headers:
                self.sim.clock.sleep_sync(float(r.headers["Retry-After"]))
            elif r.status_code < 500:
                raise AssertionError(r.text)
        raise AssertionError("gave up: " + ",".join(self.log[-10:]))

    def read(self, start: datetime, end: datetime) -> dict[str, dict[str, Any]]:
        url = f"{self.sim.rws_url}/MessageTrace"
        params: dict[str, str] | None = {
            "$filter": f"StartDate eq datetime'{z(start)}' and EndDate eq datetime'{z(end)}'", "$top": str(self.top)}
        if self.fmt == "verbose":
            params["$format"] = "json"  # type: ignore[index]
        out: dict[str, dict[str, Any]] = {}
        while True:
            rows, nxt = self.get(url, params)
            for r in rows:
                key = row_key(r["MessageTraceId"], r["RecipientAddress"])
                assert key not in out, f"duplicate row {key}"
                out[key] = r
            if not nxt:
                return out
            url, params = nxt, None
