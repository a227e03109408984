"""Windows meet one microsecond apart, Microsoft's Received has 100 ns ticks: no row falls between two.

Real reads over HTTPS against the simulator, whose rows carry a seventh fractional digit as Microsoft's do:
a window that ends in the microsecond of a row with a non-zero seventh digit, and the next one, together
return that row exactly once.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from collect_helpers import write_config

from exotrace.auth import TokenProvider
from exotrace.collect.quota import QuotaGovernor
from exotrace.config import load_config
from exotrace.net import make_async_client
from exotrace.simulator import SimTenant, SimulatorConfig, start_simulator
from exotrace.simulator.odata import parse_ticks
from exotrace.sources.base import ApiCaller
from exotrace.sources.graph import GraphSource
from exotrace.sources.rws import RwsSource
from exotrace.state.ledger import TICK


@pytest.mark.parametrize("api", ["graph", "rws"])
def test_a_row_in_the_last_microsecond_of_a_window_is_read_once(tmp_path: Path, api: str) -> None:
    with start_simulator(SimulatorConfig(seed=9, speed=60.0, rows_per_day=2000,
                                         tenants=[SimTenant.default("contoso", 9)])) as sim:
        now = sim.clock.now()
        truth = sim.ground_truth(sim.tenants[0].tenant_id, start=now - timedelta(hours=6),
                                 end=now - timedelta(hours=3), api=api)
        ticks = {key: parse_ticks(str(row["Received"])) for key, row in truth.items()}
        key, edge = next((k, t) for k, t in sorted(ticks.items()) if t % 10)  # a seventh digit above 0
        us = edge // 10
        end = datetime.fromtimestamp(us // 1_000_000, UTC).replace(microsecond=us % 1_000_000)
        cfg = load_config(write_config(sim, tmp_path, api=api))
        tenant = cfg.tenants[0]

        async def read(start: datetime, stop: datetime) -> list[str]:
            async with make_async_client(ca_bundle=tenant.ca_bundle) as client:
                caller = ApiCaller(tenant, client, TokenProvider(tenant, sim.clock),
                                   QuotaGovernor(90, timedelta(minutes=5), sim.clock), sim.clock)
                source = GraphSource(caller) if api == "graph" else RwsSource(caller)
                keys = []
                async for page in source.pages(start, stop):
                    for row in page.rows:
                        trace = row.get("id") or row.get("MessageTraceId")
                        rcpt = row.get("recipientAddress") or row.get("RecipientAddress")
                        keys.append(f"{trace}|{rcpt}".lower())
                return keys

        first = asyncio.run(read(end - timedelta(minutes=10), end))  # ends in the row's microsecond
        second = asyncio.run(read(end + TICK, end + timedelta(minutes=10)))  # starts one TICK later
    assert (first + second).count(key.lower()) == 1, (key, edge)
    assert key.lower() in first  # the row is on the earlier side: its microsecond is the window's end
