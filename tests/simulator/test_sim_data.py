"""The simulated tenant: deterministic, realistic variety, late rows, status timelines, horizon."""

from __future__ import annotations

import ipaddress
from collections import Counter
from datetime import timedelta

import pytest
from sim_helpers import START

from exotrace.errors import ConfigError
from exotrace.model import STATUSES
from exotrace.simulator import SimTenant, SimulatorConfig, start_simulator
from exotrace.simulator.config import parse_scenario
from exotrace.simulator.data import _DIURNAL, HOUR_US, TenantData, hour_of_trace_id, to_us
from exotrace.simulator.server import Simulator

HOUR0 = to_us(START) // HOUR_US


def _rows(seed: int = 7, rows_per_day: int = 2000, hours: int = 72) -> list:
    data = TenantData(SimTenant.default("contoso"), seed, rows_per_day)
    return [r for h in range(HOUR0 - hours, HOUR0) for r in data.bucket(h)]


def test_same_seed_same_rows_other_seed_other_rows() -> None:
    a, b, c = _rows(7, hours=6), _rows(7, hours=6), _rows(8, hours=6)
    assert a == b
    assert {r.trace_id for r in a}.isdisjoint({r.trace_id for r in c})


def test_same_seed_same_ground_truth_through_two_simulators() -> None:
    truths = []
    for _ in range(2):
        with start_simulator(SimulatorConfig(seed=5, start=START, history_days=3)) as sim:
            truths.append(sim.ground_truth(sim.tenants[0].tenant_id))
    assert truths[0] == truths[1] and len(truths[0]) > 1000


def test_tenant_ids_derive_from_name_and_seed() -> None:
    assert SimTenant.default("contoso") == SimTenant.default("contoso")
    assert SimTenant.default("contoso").tenant_id != SimTenant.default("contoso", seed=1).tenant_id
    assert SimTenant.default("fabrikam", rws_role=False).rws_role is False
    with pytest.raises(ConfigError):
        SimTenant.default("bad name!")


@pytest.mark.parametrize(("per_day", "days"), [(5, 40), (500, 4), (20000, 2)])
def test_rows_per_day_is_honoured(per_day: int, days: int) -> None:
    rows = _rows(rows_per_day=per_day, hours=24 * days)
    assert 0.75 * per_day * days <= len(rows) <= 1.25 * per_day * days


def test_variety_of_the_mail_flow() -> None:
    rows = _rows(rows_per_day=3000, hours=72)
    final = Counter(r.timeline[-1][1] for r in rows)
    assert set(STATUSES) - {"GettingStatus"} <= set(final), final
    assert final.most_common(1)[0][0] == "Delivered"
    assert any(r.timeline[0][1] == "GettingStatus" and len(r.timeline) > 1 for r in rows)
    assert any(any(s == "Pending" for _, s in r.timeline[:-1]) for r in rows)  # deferred, then final
    ndr = [r for r in rows if r.sender == "<>"]
    assert ndr and all(r.from_ip is None for r in ndr)
    assert any(r.from_ip == "" for r in rows) and any(r.message_id is None for r in rows)
    ips = [r.from_ip for r in rows if r.from_ip] + [r.to_ip for r in rows if r.to_ip]
    versions = Counter(ipaddress.ip_address(ip).version for ip in ips)
    assert versions[4] and versions[6]
    assert {"81.2.69.144", "216.160.83.56", "2a02:cf43:eae5:4877:400b:d6af:8d9f:b62b", "89.160.20.112",
            "1.128.0.0"} <= set(ips)
    addrs = {r.sender for r in rows} | {r.recipient for r in rows}
    assert any(a.endswith(".co.uk") for a in addrs) and any(a.endswith(".onmicrosoft.com") for a in addrs)
    assert any(a.endswith("contoso.onmicrosoft.com") for a in addrs)
    subjects = {r.subject for r in rows}
    assert "" in subjects and any(not s.isascii() for s in subjects)
    # distribution groups: the Expanded row and member rows share the trace id
    group = next(r for r in rows if r.timeline[-1][1] == "Expanded")
    members = [r for r in rows if r.trace_id == group.trace_id and r is not group]
    assert members and all(m.received_us == group.received_us for m in members)
    per_message = Counter(r.trace_id for r in rows)
    assert max(per_message.values()) > 3
    keys = Counter((r.trace_id, r.rcpt_lower) for r in rows)
    assert max(keys.values()) == 1
    assert all(hour_of_trace_id(r.trace_id) == r.received_us // HOUR_US for r in rows)


def test_publish_delays_mostly_minutes_some_up_to_a_day() -> None:
    rows = _rows(rows_per_day=3000, hours=48)
    delays = sorted((r.visible_us - r.received_us) / 60e6 for r in rows)
    assert delays[len(delays) // 2] < 10
    assert 0.003 < sum(d > 180 for d in delays) / len(delays) < 0.05
    assert max(delays) <= 24 * 60


@pytest.fixture(scope="module")
def small() -> Simulator:
    with start_simulator(SimulatorConfig(seed=3, start=START, history_days=100, rows_per_day=300)) as s:
        yield s  # type: ignore[misc]


def test_ground_truth_moves_with_time(small: Simulator) -> None:
    tid = small.tenants[0].tenant_id
    now = small.clock.now()
    start, end = now - timedelta(hours=6), now
    early = small.ground_truth(tid, at=now, start=start, end=end)
    later = small.ground_truth(tid, at=now + timedelta(days=1), start=start, end=end)
    assert set(early) < set(later)  # late rows were published meanwhile
    changed = [k for k in early if early[k]["Status"] != later[k]["Status"]]
    assert changed and all(early[k]["Status"] in ("GettingStatus", "Pending", "Delivered") for k in changed)
    assert Counter(r["Status"] for r in early.values())["GettingStatus"] > 0


def test_iter_ground_truth_streams_the_same_rows(small: Simulator) -> None:
    tid = small.tenants[0].tenant_id
    at = small.clock.now()
    streamed = list(small.iter_ground_truth(tid, at=at, api="rws"))
    assert dict(streamed) == small.ground_truth(tid, at=at, api="rws")
    assert len(streamed) == len(dict(streamed))


def test_ground_truth_stops_at_the_90_day_horizon(small: Simulator) -> None:
    tid = small.tenants[0].tenant_id
    truth = small.ground_truth(tid)
    oldest = min(to_us(small.clock.now() - timedelta(days=90)), 10**20)
    assert truth and all(True for _ in truth)
    from exotrace.simulator.odata import parse_datetime

    assert min(parse_datetime(r["Received"]) for r in truth.values()) >= oldest
    assert min(parse_datetime(r["Received"]) for r in truth.values()) < oldest + 86400 * 10**6


def test_history_days_limits_the_data() -> None:
    with start_simulator(SimulatorConfig(seed=3, start=START, history_days=2, tls=False)) as s:
        from exotrace.simulator.odata import parse_datetime

        truth = s.ground_truth(s.tenants[0].tenant_id)
        assert s.base_url.startswith("http://")
        assert min(parse_datetime(r["Received"]) for r in truth.values()) >= to_us(START - timedelta(days=2))


def test_rws_view_differs_only_where_the_services_differ(small: Simulator) -> None:
    tid = small.tenants[0].tenant_id
    at = small.clock.now()
    g, r = small.ground_truth(tid, at=at), small.ground_truth(tid, at=at, api="rws")
    from exotrace.simulator.odata import parse_datetime

    # RWS serves 10 days (rws_max_age_days), Graph 90: the RWS truth is Graph's last 10 days
    ten_days = to_us(at - timedelta(days=10))
    assert set(r) == {k for k, v in g.items() if parse_datetime(v["Received"]) >= ten_days} and len(r) < len(g)
    diff = Counter((g[k]["Status"], r[k]["Status"]) for k in r if g[k]["Status"] != r[k]["Status"])
    # RWS predates recall; a redirected recipient (V2's Resolved) is Graph's unknownFutureValue, RWS's None
    assert set(diff) <= {("Recalled", "Delivered"), ("Failed", "None"), ("unknownFutureValue", "None")}
    assert all(r[k]["Organization"] == "contoso.onmicrosoft.com" for k in r)
    assert any(v["ToIP"] is None for v in r.values()) and not any(v["ToIP"] is None for v in g.values())


def test_scenario_parsing() -> None:
    assert parse_scenario("throttle,flaky:0.3") == {"throttle": 0.15, "flaky": 0.3}
    assert parse_scenario("default") == {}
    assert "expire" in parse_scenario("chaos")
    for bad in ("nope", "flaky:2", "flaky:x"):
        with pytest.raises(ConfigError):
            parse_scenario(bad)


def test_async_start_does_not_block_the_event_loop() -> None:
    import asyncio

    import httpx

    from exotrace.simulator.server import Simulator

    async def main() -> int:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        task = asyncio.create_task(ticker())
        async with Simulator(SimulatorConfig(start=START, history_days=1)) as sim:
            async with httpx.AsyncClient(verify=sim.ssl_context()) as c:
                r = await c.get(f"{sim.login_url}/{sim.tenants[0].tenant_id}/v2.0/.well-known/openid-configuration")
                assert r.status_code == 200
        task.cancel()
        return ticks

    assert asyncio.run(main()) > 0


def test_start_and_stop_without_context_manager() -> None:
    sim = start_simulator(SimulatorConfig(start=START, history_days=1, tls=False))
    try:
        assert sim.stats() == {} and sim.base_url.startswith("http://127.0.0.1:")
    finally:
        sim.stop()
    sim.stop()  # idempotent


def test_memory_stays_bounded_and_evicted_hours_regenerate_identically() -> None:
    data = TenantData(SimTenant.default("contoso"), 7, 20000, cache_rows=3000)
    first = list(data.bucket(HOUR0 - 100))
    biggest = 0
    for h in range(HOUR0 - 99, HOUR0):
        biggest = max(biggest, len(data.bucket(h)))
        assert data._cached_rows <= 3000 + biggest  # the budget, plus at most the newest hour
    assert HOUR0 - 100 not in data._cache and len(data._cache) < 10
    assert data.bucket(HOUR0 - 100) == first  # regenerated from the seed, not kept


def test_millions_of_rows_per_day_are_generated_an_hour_at_a_time() -> None:
    per_day = 3_000_000
    data = TenantData(SimTenant.default("contoso"), 7, per_day, cache_rows=1000)
    quiet = HOUR0 - HOUR0 % 24 + 2  # 02:00 UTC, among the quietest hours (~0.25 of an average hour)
    rows = data.bucket(quiet)
    expected = per_day / 24 * _DIURNAL[2]
    assert 0.85 * expected <= len(rows) <= 1.15 * expected
    assert len({(r.trace_id, r.rcpt_lower) for r in rows}) == len(rows)
    assert len(data._cache) == 1  # one hour in memory, nothing else generated
