"""collect --once against the simulator over HTTPS: complete, exact, no duplicates, under every fault."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from collect_helpers import check_complete, collect, write_config

from exotrace.simulator import SimTenant, SimulatorConfig, start_simulator

SCENARIOS = ["default", "throttle", "flaky", "slow", "drop", "truncate", "malformed", "poison", "badrcpt",
             "expire", "throttle:0.6", "chaos,late"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_once_complete_under_faults(tmp_path: Path, scenario: str) -> None:
    cfg = SimulatorConfig(seed=11, scenario=scenario, speed=600.0, rows_per_day=1500,
                          tenants=[SimTenant.default("contoso", 11)])
    with start_simulator(cfg) as sim:
        path = write_config(sim, tmp_path, collector='page_size = 150\nrereads = ["15m", "1h", "4h", "30h"]')
        reports, t0, t_end = collect(sim, path, since=timedelta(days=3))
        assert reports[0].ok, reports[0].error
        stats = check_complete(sim, tmp_path / "archive.db", sim.tenants[0], t0, t_end)
        assert stats["old"] > 1000
        served = sim.stats()
    if scenario in ("poison", "badrcpt"):
        assert reports[0].restarts + reports[0].repaired > 0, served
    if scenario.startswith("throttle"):
        assert reports[0].throttled > 0


def test_settled_run_is_exact(tmp_path: Path) -> None:
    """--once --settle: late rows and status changes caught by the re-reads; archive == truth."""
    cfg = SimulatorConfig(seed=5, scenario="late,poison,badrcpt,flaky,throttle", speed=20000.0,
                          rows_per_day=1500, tenants=[SimTenant.default("contoso", 5)])
    with start_simulator(cfg) as sim:
        path = write_config(sim, tmp_path, collector='page_size = 200\nrereads = ["15m", "1h", "4h", "30h"]')
        reports, t0, t_end = collect(sim, path, mode="settle", since=timedelta(days=2))
        assert reports[0].ok, reports[0].error
        check_complete(sim, tmp_path / "archive.db", sim.tenants[0], t0, t_end, exact=True)
        tid = sim.tenants[0].tenant_id
        before = sim.ground_truth(tid, at=t0, start=t0 - timedelta(days=2), end=t0)
        after = sim.ground_truth(tid, at=t_end, start=t0 - timedelta(days=2), end=t0)
    # rows that became visible, or changed status, after the first read were caught by re-reads
    late = set(after) - set(before)
    changed = {k for k in before if before[k]["Status"] != after[k]["Status"]}
    assert len(late) + len(changed) > 10


def test_rws_path(tmp_path: Path) -> None:
    cfg = SimulatorConfig(seed=3, scenario="flaky", speed=600.0, rows_per_day=1500,
                          tenants=[SimTenant.default("contoso", 3)])
    with start_simulator(cfg) as sim:
        path = write_config(sim, tmp_path, api="rws", collector="page_size = 150")
        reports, t0, t_end = collect(sim, path, since=timedelta(days=3))
        assert reports[0].ok, reports[0].error
        stats = check_complete(sim, tmp_path / "archive.db", sim.tenants[0], t0, t_end, api="rws")
        assert stats["old"] > 1000
        assert sim.stats().get("requests_rws", sum(v for k, v in sim.stats().items() if "rws" in k)) > 0


def test_second_run_resumes_without_duplicates(tmp_path: Path) -> None:
    cfg = SimulatorConfig(seed=2, speed=600.0, rows_per_day=1000, tenants=[SimTenant.default("contoso", 2)])
    with start_simulator(cfg) as sim:
        path = write_config(sim, tmp_path, collector="page_size = 500")
        r1, t0, _ = collect(sim, path, since=timedelta(days=2))
        r2, _, t_end = collect(sim, path)
        assert r1[0].ok and r2[0].ok
        assert r2[0].windows_read >= 1
        check_complete(sim, tmp_path / "archive.db", sim.tenants[0], t0, t_end)


def test_graph_beta(tmp_path: Path) -> None:
    cfg = SimulatorConfig(seed=6, speed=600.0, rows_per_day=800, tenants=[SimTenant.default("contoso", 6)])
    with start_simulator(cfg) as sim:
        path = write_config(sim, tmp_path, extra='graph_version = "beta"', collector="page_size = 300")
        reports, t0, t_end = collect(sim, path, since=timedelta(days=2))
        assert reports[0].ok, reports[0].error
        check_complete(sim, tmp_path / "archive.db", sim.tenants[0], t0, t_end)
