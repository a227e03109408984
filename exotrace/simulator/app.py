"""The simulator's ASGI application: routing, authentication order, fault injection, shared state."""

from __future__ import annotations

import asyncio
import logging
import math
import re
import threading
from collections import Counter
from datetime import timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from exotrace.clock import ScaledClock
from exotrace.simulator import entra, graph, rws
from exotrace.simulator.certs import load_cert
from exotrace.simulator.config import SimTenant, SimulatorConfig
from exotrace.simulator.data import US, TenantData, to_us
from exotrace.simulator.entra import Caller, TokenKey
from exotrace.simulator.faults import REQUEST_FAULTS, Faults, Quota

log = logging.getLogger("exotrace.simulator")

_DETAILS = re.compile(
    r"^/(v1\.0|beta)/admin/exchange/tracing/messagetraces/([^/]+)/getdetailsbyrecipient"
    r"\(recipientaddress='(.*)'\)/?$", re.IGNORECASE)
_LIST = re.compile(r"^/(v1\.0|beta)/admin/exchange/tracing/messagetraces/?$", re.IGNORECASE)
_RWS = re.compile(r"^/ecp/reportingwebservice/reporting\.svc(/.*)?$", re.IGNORECASE)
_TENANT_PATHS = re.compile(
    r"^/([^/]+)/(oauth2/v2\.0/token|oauth2/token|v2\.0/\.well-known/openid-configuration|"
    r"\.well-known/openid-configuration|discovery/instance|discovery/v2\.0/keys|discovery/keys)/?$",
    re.IGNORECASE)


class _QuietDrops(logging.Filter):
    """Hide uvicorn's complaints about the connections the simulator drops on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = str(record.msg)
        if msg.startswith("Exception in ASGI application") and record.exc_info:
            return not issubclass(record.exc_info[0] or Exception, asyncio.CancelledError | GeneratorExit)
        return not msg.startswith(("ASGI callable", "Cancel "))


_QUIET = _QuietDrops()


def install_quiet_drops() -> None:
    logger = logging.getLogger("uvicorn.error")
    if _QUIET not in logger.filters:
        logger.addFilter(_QUIET)


class SimState:
    """Everything the request handlers share."""

    def __init__(self, config: SimulatorConfig, tenants: list[SimTenant], clock: ScaledClock,
                 token_key: TokenKey) -> None:
        config = config.effective()  # scenario key=value options
        self.config = config
        self.tenants = tenants
        self.clock = clock
        self.token_key = token_key
        self.scenarios = config.scenario_map()
        self.faults = Faults(config.seed, self.scenarios)
        self.quota = Quota(config.quota_requests, config.quota_window)
        late = "late" in self.scenarios
        self.data = {t.name: TenantData(t, config.seed, t.rows_per_day if t.rows_per_day is not None
                                        else config.rows_per_day, late=late, cache_rows=config.cache_rows)
                     for t in tenants}
        start = clock.now()
        self.data_start_us = to_us(start - timedelta(days=config.history_days))
        self.base_url = ""
        self.sts_issuer = "https://sts.windows.net"
        #: registered app certificates, loaded once (the files may live in another simulator's directory)
        self.client_certs: dict[str, Any] = {}
        for t in tenants:
            try:
                self.client_certs[t.name] = load_cert(t.cert_pem)
            except (OSError, ValueError):
                pass
        self._counters: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._latency_n = 0

    @property
    def login_url(self) -> str:
        return self.base_url

    @property
    def graph_url(self) -> str:
        return self.base_url

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counters[name] += n

    def counters(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counters)

    def horizon_us(self, now_us: int) -> int:
        """Oldest received time the APIs still serve: 90 days back, and no earlier than the data."""
        return max(now_us - 90 * 86400 * US, self.data_start_us)

    async def latency(self, rows: int) -> None:
        """Realistic page latency (2-4 s per 5000 rows, simulated time) when the scenario asks for it."""
        if "latency" not in self.scenarios:
            return
        with self._lock:
            self._latency_n += 1
            n = self._latency_n
        seconds = 0.15 + (2 + 2 * self.faults.value("latency", n)) * rows / 5000
        await self.clock.sleep(seconds)


class SimApp:
    """The ASGI application. Faults that break the transport are applied here."""

    def __init__(self, state: SimState) -> None:
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> Any:
        if scope["type"] != "http":
            return None
        state = self.state
        request = Request(scope, receive)
        path = scope["path"]
        api = bool(_LIST.match(path) or _DETAILS.match(path) or _RWS.match(path))
        fault = None
        if api:
            key = f"{scope['method']} {path}?{scope.get('query_string', b'').decode('latin-1')}"
            applicable = tuple(f for f in REQUEST_FAULTS
                               if f != "badrcpt" or (_LIST.match(path) and "$skiptoken" in request.query_params))
            remaining = state.faults.burst(state.clock.now().timestamp())
            if remaining is not None:  # inside a throttling burst: refused until it ends
                fault = "throttle"
                request.state.retry_after = max(1, math.ceil(remaining))
            else:
                fault = state.faults.decide(key, applicable)
                if fault == "throttle":  # an isolated 429
                    request.state.retry_after = 1 + int(state.faults.value("retry", key) * 20)
            if fault:
                state.count(f"faults_{fault}")
                state.count("faults_injected")
        if fault == "drop":
            return "drop"  # uvicorn closes the connection without a response
        if fault == "slow":
            await asyncio.sleep(state.config.slow_seconds / state.clock.speed)
        response = await self._fault_response(fault, request) if fault else None
        if response is None:
            try:
                response = await self.dispatch(request, path)
            except Exception:  # noqa: BLE001 - the simulator must answer like a server, not crash
                log.exception("simulator handler failed for %s", path)
                response = JSONResponse({"error": {"code": "InternalServerError", "message": "simulator bug"}},
                                        status_code=500)
        if fault in ("truncate", "malformed") and response.status_code == 200:
            body = bytes(response.body)
            cut = body[: max(1, len(body) // 2)]
            if fault == "malformed":
                response = Response(cut, status_code=200, media_type=response.media_type,
                                    headers={k: v for k, v in response.headers.items() if k != "content-length"})
            else:
                await send({"type": "http.response.start", "status": 200, "headers": response.raw_headers})
                await send({"type": "http.response.body", "body": cut, "more_body": True})
                return "truncated"  # uvicorn closes the connection mid-body
        await response(scope, receive, send)
        return None

    async def _fault_response(self, fault: str, request: Request) -> Response | None:
        state = self.state
        is_graph = not _RWS.match(request.url.path)
        fmt = rws.state_format(state, request)
        light_ct = state.config.rws_light_content_type
        if fault == "throttle":
            wait = request.state.retry_after
            if is_graph:
                return graph.error(state, request, 429, "TooManyRequests", graph.THROTTLED,
                                   headers={"Retry-After": str(wait)})
            if state.config.rws_throttle_status == 429:
                return rws.odata_error(429, rws.THROTTLED, fmt, code="TooManyRequests",
                                       headers={"Retry-After": str(wait)}, light_ct=light_ct)
            return Response("", status_code=503, headers={"Retry-After": str(wait)})
        if fault == "flaky":
            code = (500, 502, 503, 504)[int(state.faults.value("code", request.url.query) * 4)]
            if is_graph:
                names = {500: "InternalServerError", 502: "BadGateway", 503: "ServiceUnavailable",
                         504: "GatewayTimeout"}
                return graph.error(state, request, code, names[code], "The service is temporarily unavailable.",
                                   headers={"Retry-After": "2"} if code == 503 else None)
            # RWS: an OData error in the format the request asked for (no Retry-After)
            return rws.odata_error(code, "An error has occurred on the server.", fmt, code="UnknownError",
                                   lang="", light_ct=light_ct)
        if fault == "badrcpt":
            return graph.bad_request(state, request, "|System.ArgumentException|Invalid starting recipient address")
        return None

    async def dispatch(self, request: Request, path: str) -> Response:
        state = self.state
        method = request.method
        m = _LIST.match(path)
        if m and method == "GET":
            state.count("requests_graph_list")
            caller = graph.guard(state, request)
            if not isinstance(caller, Caller):
                return graph.with_ids(caller, request)
            return graph.with_ids(await graph.list_traces(state, request, m.group(1).lower(), caller), request)
        m = _DETAILS.match(path)
        if m and method == "GET":
            state.count("requests_graph_details")
            caller = graph.guard(state, request, details=True)
            if not isinstance(caller, Caller):
                return graph.with_ids(caller, request)
            return graph.with_ids(await graph.details(state, request, m.group(1).lower(), caller, m.group(2),
                                                      m.group(3).replace("''", "'")), request)
        m = _RWS.match(path)
        if m:
            return rws.with_service_headers(await self._rws(request, (m.group(1) or "/").strip("/")))
        m = _TENANT_PATHS.match(path)
        if m:
            segment, what = m.group(1), m.group(2).lower()
            if what.endswith("token") and method == "POST":
                return await entra.token(state, request, segment, v2="v2.0" in what)
            if what.endswith("token"):  # oauth2/token or oauth2/v2.0/token, not asked with POST
                return entra.wrong_method(state, method)
            if what.endswith("openid-configuration"):
                state.count("requests_openid")
                return entra.openid_configuration(state, request, segment, v2=what.startswith("v2.0"))
            if what == "discovery/instance":
                state.count("requests_instance_discovery")
                return entra.instance_discovery(state, request)
            if what.endswith("keys"):
                return entra.jwks(state)
        return JSONResponse({"error": {"code": "NotFound", "message": f"No route for {method} {path}"}},
                            status_code=404)

    async def _rws(self, request: Request, rest: str) -> Response:
        state = self.state
        low = rest.lower()
        report = {"messagetrace": "MessageTrace", "messagetracedetail": "MessageTraceDetail"}.get(low)
        if report is None:
            if low in ("", "$metadata"):
                caller = rws.guard(state, request, "MessageTrace")
                if not isinstance(caller, Caller):
                    return caller
                return Response(_RWS_METADATA if low else _RWS_SERVICE_DOC,
                                media_type="application/xml;charset=utf-8")
            return rws.odata_error(404, f"Resource not found for the segment '{rest}'.",
                                   rws.state_format(state, request), light_ct=state.config.rws_light_content_type)
        state.count("requests_rws_" + low)
        caller = rws.guard(state, request, report)
        if not isinstance(caller, Caller):
            return caller
        return await rws.message_trace(state, request, caller, report)


_RWS_SERVICE_DOC = (
    '<?xml version="1.0" encoding="utf-8"?><service xmlns="http://www.w3.org/2007/app" '
    'xmlns:atom="http://www.w3.org/2005/Atom"><workspace><atom:title>Default</atom:title>'
    '<collection href="MessageTrace"><atom:title>MessageTrace</atom:title></collection>'
    '<collection href="MessageTraceDetail"><atom:title>MessageTraceDetail</atom:title></collection>'
    '</workspace></service>')
_RWS_METADATA = (
    '<?xml version="1.0" encoding="utf-8"?><edmx:Edmx Version="1.0" '
    'xmlns:edmx="http://schemas.microsoft.com/ado/2007/06/edmx"><edmx:DataServices><Schema '
    'Namespace="TenantReporting" xmlns="http://schemas.microsoft.com/ado/2009/11/edm"><EntityType '
    'Name="MessageTrace"><Key><PropertyRef Name="Index"/></Key></EntityType></Schema></edmx:DataServices>'
    '</edmx:Edmx>')
