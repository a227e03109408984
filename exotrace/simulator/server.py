"""The simulator server: one ASGI app (Entra ID, Graph, RWS) run by uvicorn in a background thread."""

from __future__ import annotations

import asyncio
import logging
import math
import re
import shutil
import socket
import ssl
import tempfile
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import uvicorn
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from exotrace.clock import ScaledClock
from exotrace.model import row_key
from exotrace.simulator import entra, graph, rws
from exotrace.simulator.certs import load_cert, make_client_cert, make_server_pki, new_key
from exotrace.simulator.config import SimTenant, SimulatorConfig
from exotrace.simulator.data import US, TenantData, to_us
from exotrace.simulator.entra import Caller, TokenKey
from exotrace.simulator.faults import REQUEST_FAULTS, Faults, Quota
from exotrace.simulator.views import ground_truth_row

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


def _install_quiet_drops() -> None:
    logger = logging.getLogger("uvicorn.error")
    if _QUIET not in logger.filters:
        logger.addFilter(_QUIET)


class SimState:
    """Everything the request handlers share."""

    def __init__(self, config: SimulatorConfig, tenants: list[SimTenant], clock: ScaledClock,
                 token_key: TokenKey) -> None:
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
            if remaining is not None:
                fault = "throttle"
                request.state.retry_after = max(1, math.ceil(remaining))
            else:
                fault = state.faults.decide(key, applicable)
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
        if fault == "throttle":
            wait = request.state.retry_after
            if is_graph:
                return graph.error(state, request, 429, "TooManyRequests", graph.THROTTLED,
                                   headers={"Retry-After": str(wait)})
            return Response("", status_code=503, headers={"Retry-After": str(wait)})
        if fault == "flaky":
            code = (500, 502, 503, 504)[int(state.faults.value("code", request.url.query) * 4)]
            if is_graph:
                names = {500: "InternalServerError", 502: "BadGateway", 503: "ServiceUnavailable",
                         504: "GatewayTimeout"}
                return graph.error(state, request, code, names[code], "The service is temporarily unavailable.",
                                   headers={"Retry-After": "2"} if code == 503 else None)
            return rws.odata_error(code, "An error has occurred on the server.", False, code="UnknownError")
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
                return caller
            return await graph.list_traces(state, request, m.group(1).lower(), caller)
        m = _DETAILS.match(path)
        if m and method == "GET":
            state.count("requests_graph_details")
            caller = graph.guard(state, request)
            if not isinstance(caller, Caller):
                return caller
            return await graph.details(state, request, m.group(1).lower(), caller, m.group(2),
                                       m.group(3).replace("''", "'"))
        m = _RWS.match(path)
        if m:
            return await self._rws(request, (m.group(1) or "/").strip("/"))
        m = _TENANT_PATHS.match(path)
        if m:
            segment, what = m.group(1), m.group(2).lower()
            if what.endswith("token") and method == "POST":
                return await entra.token(state, request, segment, v2="v2.0" in what)
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
            return rws.odata_error(404, f"Resource not found for the segment '{rest}'.", False)
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


class Simulator:
    """A running simulator. Use as a context manager, or call :meth:`stop`."""

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = config or SimulatorConfig()
        self.clock = ScaledClock(start=self.config.start or datetime.now(UTC), speed=self.config.speed)
        self.tenants: list[SimTenant] = self.config.resolved_tenants()
        self._tmp: str | None = None
        self._thread: threading.Thread | None = None
        self._server: uvicorn.Server | None = None
        self.base_url = ""
        self.ca_file = ""
        self.state: SimState | None = None

    # ---- lifecycle -----------------------------------------------------------------------------
    def start(self) -> Simulator:
        cfg = self.config
        if cfg.state_dir:
            directory = Path(cfg.state_dir)
        else:
            self._tmp = tempfile.mkdtemp(prefix="exotrace-sim-")
            directory = Path(self._tmp)
        directory.mkdir(parents=True, exist_ok=True)
        for t in self.tenants:
            if not t.cert_pem or not Path(t.cert_pem).exists():
                t.cert_pem, t.key_pem = make_client_cert(directory / "clients", t.name)
        self.state = state = SimState(cfg, self.tenants, self.clock, TokenKey(new_key("token"), "exotrace-sim-1"))
        family = socket.AF_INET6 if ":" in cfg.host else socket.AF_INET
        # proto given explicitly: asyncio then sets TCP_NODELAY on accepted connections (else 40 ms stalls)
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((cfg.host, cfg.port))
        sock.listen(128)
        sock.setblocking(False)
        port = sock.getsockname()[1]
        kwargs: dict[str, Any] = {}
        if cfg.tls:
            pki = make_server_pki(directory, [cfg.host, "127.0.0.1", "localhost"])
            self.ca_file = pki.ca_file
            kwargs = {"ssl_certfile": pki.cert_file, "ssl_keyfile": pki.key_file}
        host = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
        self.base_url = f"{'https' if cfg.tls else 'http'}://{host}:{port}"
        state.base_url = self.base_url
        _install_quiet_drops()
        uconfig = uvicorn.Config(SimApp(state), log_level="warning", lifespan="off", http="h11",
                                 access_log=False, proxy_headers=False, server_header=False,
                                 timeout_graceful_shutdown=1, timeout_keep_alive=30, log_config=None, **kwargs)
        self._server = server = uvicorn.Server(uconfig)
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(server.serve(sockets=[sock]))
            except BaseException as exc:  # noqa: BLE001 - reported to the starting thread
                errors.append(exc)
            finally:
                for conn in list(server.server_state.connections):
                    transport = getattr(conn, "transport", None)
                    if transport is not None:
                        transport.abort()  # no TLS close_notify dance with idle clients
                loop.run_until_complete(asyncio.sleep(0))
                pending = asyncio.all_tasks(loop)  # e.g. "slow" responses still sleeping
                for task in pending:
                    task.cancel()
                if pending:
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.close()

        self._thread = threading.Thread(target=run, name="exotrace-simulator", daemon=True)
        self._thread.start()
        while not server.started and self._thread.is_alive():
            self._thread.join(0.01)
        if not server.started:
            raise RuntimeError(f"simulator failed to start: {errors[0] if errors else 'unknown error'}")
        log.info("Simulator listening on %s.", self.base_url)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            self._server.force_exit = True  # idle TLS keep-alive connections would hold shutdown for a second
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    async def astart(self) -> Simulator:
        """Start without blocking the caller's event loop."""
        return await asyncio.to_thread(self.start)

    async def astop(self) -> None:
        await asyncio.to_thread(self.stop)

    def __enter__(self) -> Simulator:
        if self._thread is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> Simulator:
        if self._thread is None:
            await self.astart()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.astop()

    # ---- URLs ----------------------------------------------------------------------------------
    @property
    def login_url(self) -> str:
        return self.base_url

    @property
    def graph_url(self) -> str:
        return self.base_url

    @property
    def rws_url(self) -> str:
        return f"{self.base_url}/ecp/reportingwebservice/reporting.svc"

    def ssl_context(self) -> ssl.SSLContext:
        """A client TLS context trusting only the simulator's CA (``httpx.Client(verify=sim.ssl_context())``)."""
        return ssl.create_default_context(cafile=self.ca_file or None)

    def tenant(self, name_or_id: str) -> SimTenant:
        for t in self.tenants:
            if name_or_id.lower() in (t.name, t.tenant_id.lower()):
                return t
        raise KeyError(name_or_id)

    # ---- truth and counters --------------------------------------------------------------------
    def ground_truth(self, tenant_id: str, at: datetime | None = None, api: str = "graph",
                     prefer_unknown: bool = True, start: datetime | None = None,
                     end: datetime | None = None) -> dict[str, dict[str, Any]]:
        """Every row visible through ``api`` at ``at`` (default: now), keyed by ``row_key``.

        Rows use legacy field names and canonical ``Status``; ``start``/``end`` optionally restrict
        ``Received`` (inclusive). ``prefer_unknown=False`` gives Graph's ``unknownFutureValue`` where a
        client without the ``Prefer`` header would see it.
        """
        assert self.state is not None, "simulator not started"
        tenant = self.tenant(tenant_id)
        now_us = to_us(at or self.clock.now())
        lo = self.state.horizon_us(now_us) if start is None else max(to_us(start), self.state.horizon_us(now_us))
        hi = now_us if end is None else min(to_us(end), now_us)
        out: dict[str, dict[str, Any]] = {}
        for row in self.state.data[tenant.name].iter_desc(lo, hi, now_us, lo):
            out[row_key(row.trace_id, row.recipient)] = ground_truth_row(row, now_us, api, prefer_unknown)
        return out

    def export_powershell(self, tenant_id: str, path: str | Path, start: datetime, end: datetime,
                          style: str = "elastic", array: bool = False, bom: bool = False) -> int:
        """Write the rows of ``[start, end]`` as a PowerShell export (see :mod:`exotrace.simulator.export`:
        styles ``elastic``, ``ps51``, ``ps7``); returns the number of rows written."""
        from exotrace.simulator.export import write_powershell_export

        rows = self.ground_truth(tenant_id, api="rws", start=start, end=end)
        ordered = sorted(rows.values(), key=lambda r: (r["Received"], r["RecipientAddress"].lower()))
        ordered.sort(key=lambda r: r["Received"], reverse=True)  # newest first, ties by recipient
        return write_powershell_export(path, ordered, to_us(start), to_us(end), style, array, bom)

    def stats(self) -> dict[str, int]:
        """Counters: requests per endpoint, 429s, faults injected, tokens issued, rows served."""
        assert self.state is not None, "simulator not started"
        return self.state.counters()


def start_simulator(config: SimulatorConfig | None = None) -> Simulator:
    """Start a simulator in a background thread and return it (a context manager)."""
    return Simulator(config).start()
