"""Fixtures: simulators over real HTTPS on 127.0.0.1, and clients that trust their CA."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from sim_helpers import START

from exotrace.simulator import SimTenant, SimulatorConfig, start_simulator
from exotrace.simulator.server import Simulator


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    """One default tenant (contoso) plus broken ones, 500 rows a day, simulated clock at START."""
    tenants = [
        SimTenant.default("contoso"),
        SimTenant.default("fabrikam", graph_permission=False),
        SimTenant.default("northwind", service_principal=False, rws_role=False),
        SimTenant.default("adatum", secret_expired=True, rws_retired=True),
    ]
    with start_simulator(SimulatorConfig(seed=7, start=START, tenants=tenants)) as s:
        yield s


@pytest.fixture
def client(sim: Simulator) -> Iterator[httpx.Client]:
    with httpx.Client(verify=sim.ssl_context(), timeout=30) as c:
        yield c
