"""The simulator handle: certificates, a uvicorn server in a background thread, ground truth, counters."""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import ssl
import tempfile
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvicorn

from exotrace.clock import ScaledClock
from exotrace.model import row_key
from exotrace.simulator.app import SimApp, SimState, install_quiet_drops
from exotrace.simulator.certs import make_client_cert, make_server_pki, new_key
from exotrace.simulator.config import SimTenant, SimulatorConfig
from exotrace.simulator.data import TICKS_PER_US, to_us
from exotrace.simulator.entra import TokenKey
from exotrace.simulator.odata import parse_ticks
from exotrace.simulator.views import ground_truth_row

log = logging.getLogger("exotrace.simulator")


class Simulator:
    """A running simulator. Use as a context manager, or call :meth:`stop`."""

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        #: the configuration with the scenario's ``key=value`` options applied
        self.config = (config or SimulatorConfig()).effective()
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
        install_quiet_drops()
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
        """Every row ``api`` serves at ``at`` (default: now), keyed by ``row_key``: exactly what a
        complete read of the API returns.

        Graph serves 90 days; RWS serves ``rws_max_age_days`` (10) back from ``at``. A tenant the API
        refuses (Graph: ``service_principal`` or ``graph_permission`` off, or ``rws_role`` off when
        ``graph_requires_directory_role``; RWS: ``rws_role`` off, ``rws_retired`` or the ``retired``
        scenario) has no rows. Rows use legacy field names and canonical ``Status``; ``start``/``end``
        optionally restrict ``Received`` (inclusive). ``prefer_unknown=False`` gives Graph's
        ``unknownFutureValue`` where a client without the ``Prefer`` header would see it. For very large
        tenants prefer :meth:`iter_ground_truth`, which streams.
        """
        return dict(self.iter_ground_truth(tenant_id, at, api, prefer_unknown, start, end))

    def serves(self, tenant_id: str, api: str = "graph") -> bool:
        """Whether ``api`` serves this tenant's message trace at all (see :meth:`ground_truth`)."""
        t = self.tenant(tenant_id)
        cfg = self.config
        if api == "rws":
            return t.rws_role and not t.rws_retired and "retired" not in cfg.scenario_map()
        if api != "graph":
            raise ValueError(f"api must be 'graph' or 'rws', not {api!r}")
        return t.service_principal and t.graph_permission and (t.rws_role or not cfg.graph_requires_directory_role)

    def iter_ground_truth(self, tenant_id: str, at: datetime | None = None, api: str = "graph",
                          prefer_unknown: bool = True, start: datetime | None = None,
                          end: datetime | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        """:meth:`ground_truth` as a stream of ``(row_key, row)``, newest first; memory stays flat."""
        if not self.serves(tenant_id, api):
            if self.state is None:
                raise RuntimeError("simulator not started")
            return
        oldest = None
        if api == "rws":
            oldest = to_us(at or self.clock.now()) - self.config.rws_max_age_days * 86400 * 10**6
        yield from self._iter_rows(tenant_id, at, api, prefer_unknown, start, end, oldest)

    def _iter_rows(self, tenant_id: str, at: datetime | None, api: str, prefer_unknown: bool,
                   start: datetime | None, end: datetime | None, oldest_us: int | None = None
                   ) -> Iterator[tuple[str, dict[str, Any]]]:
        """The tenant's visible rows in ``api``'s view, whatever the tenant's access (for exports)."""
        if self.state is None:
            raise RuntimeError("simulator not started")
        tenant = self.tenant(tenant_id)
        now_us = to_us(at or self.clock.now())
        horizon = self.state.horizon_us(now_us)
        if oldest_us is not None:
            horizon = max(horizon, oldest_us)
        lo = horizon if start is None else max(to_us(start), horizon)
        hi = now_us if end is None else min(to_us(end), now_us)
        z = self.config.rws_received_z
        for row in self.state.data[tenant.name].iter_desc(lo * TICKS_PER_US, hi * TICKS_PER_US + TICKS_PER_US - 1,
                                                          now_us, lo):
            yield row_key(row.trace_id, row.recipient), ground_truth_row(row, now_us, api, prefer_unknown, z)

    def export_powershell(self, tenant_id: str, path: str | Path, start: datetime, end: datetime,
                          style: str = "elastic", array: bool = False, bom: bool = False, *,
                          fields: str = "v1", remoting: bool = False, encoding: str = "utf-8",
                          utc_offset: int = 60, at: datetime | None = None) -> int:
        """Write the rows of ``[start, end]`` as a PowerShell export (``Get-MessageTrace | ConvertTo-Json``);
        returns the number of rows written. See :mod:`exotrace.simulator.export` for ``style`` (``elastic``,
        ``ps51``, ``ps51-offset``, ``ps51-wrapped``, ``ps7``, ``ps7-local``, ``ps7-unspecified``),
        ``fields`` (``v1``: the 14 legacy fields; ``v2``: without StartDate, EndDate, Index), ``remoting``
        (implicit-remoting properties), ``encoding`` (``utf-8`` or ``utf-16``) and ``utc_offset`` (minutes,
        for the local-time styles). The cmdlets serve 90 days whatever RWS does, so the tenant's API
        access does not matter here."""
        from exotrace.simulator.export import write_powershell_export

        rows = dict(self._iter_rows(tenant_id, at, "rws", True, start, end))
        if fields == "v2":  # V1 spells statuses as RWS does; V2 has no None and knows Recalled and Resolved
            for key, g in self._iter_rows(tenant_id, at, "v2", True, start, end):
                rows[key]["Status"] = g["Status"]
        ordered = sorted(rows.values(), key=lambda r: (r["Received"], r["RecipientAddress"].lower()))
        ordered.sort(key=lambda r: parse_ticks(str(r["Received"])), reverse=True)  # newest first, ties by rcpt
        return write_powershell_export(path, ordered, to_us(start), to_us(end), style, array, bom, fields=fields,
                                       remoting=remoting, encoding=encoding, utc_offset=utc_offset)

    def stats(self) -> dict[str, int]:
        """Counters: requests per endpoint, 429s, faults injected, tokens issued, rows served."""
        if self.state is None:
            raise RuntimeError("simulator not started")
        return self.state.counters()


def start_simulator(config: SimulatorConfig | None = None) -> Simulator:
    """Start a simulator in a background thread and return it (a context manager)."""
    return Simulator(config).start()
