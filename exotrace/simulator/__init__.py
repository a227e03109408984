"""A local stand-in for Microsoft's message-trace endpoints: Entra ID tokens, Graph and the Reporting Web
Service, serving a deterministic simulated tenant with faults on demand. See docs/simulator.md.

    from exotrace.simulator import SimulatorConfig, SimTenant, start_simulator

    with start_simulator(SimulatorConfig(seed=7)) as sim:
        rows = sim.ground_truth(sim.tenants[0].tenant_id)
"""

from __future__ import annotations

from exotrace.simulator.config import SCENARIOS, SimTenant, SimulatorConfig, parse_scenario
from exotrace.simulator.server import Simulator, start_simulator

__all__ = ["SCENARIOS", "SimTenant", "Simulator", "SimulatorConfig", "parse_scenario", "start_simulator"]
