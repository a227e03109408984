"""collect --once against the simulator over HTTPS: complete, exact, no duplicates, under every fault."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from collect_helpers import check_complete, collect, write_config

from exotrace.archive import Archive
from exotrace.simulator import SimTenant, SimulatorConfig, start_simulator
from exotrace.state.ledger import Ledger

SCENARIOS = ["default", "throttle", "flaky", "slow", "drop", "truncate", "malformed", "poison", "badrcpt",
             "expire", "late", "throttle:0.6", "chaos,late"]
#: Long enough that every row the first run saw young has reached its final status (24 h late + 4 h pending).
SETTLE = timedelta(hours=31)


def run_then_reread(tmp_path: Path, scenario: str, api: str, seed: int,
                    **options: Any) -> tuple[Any, dict[str, int]]:
    """`collect --once` (complete at that moment), then, 31 simulated hours later, `collect --once` again,
    which re-reads the windows that were young: their range must then equal the ground truth exactly."""
    # a day-long token: one token per run, so `tokens_issued` shows reuse (`expire` kills it after 300 s)
    cfg = SimulatorConfig(seed=seed, scenario=scenario, speed=1200.0, rows_per_day=1500, token_lifetime=86400,
                          tenants=[SimTenant.default("contoso", seed)], **options)
    with start_simulator(cfg) as sim:
        path = write_config(sim, tmp_path, api=api,
                            collector='page_size = 150\nrereads = ["15m", "1h", "4h", "30h"]')
        reports, t0, t_end = collect(sim, path, since=timedelta(days=3))
        assert reports[0].ok, reports[0].error
        stats = check_complete(sim, tmp_path / "archive.db", sim.tenants[0], t0, t_end, api=api)
        assert stats["old"] > 1000
        with Archive.open(tmp_path / "archive.db") as arch:
            first_end = Ledger(arch.conn).bounds("contoso")[1]  # type: ignore[index]
        sim.clock.advance(SETTLE.total_seconds())
        again, t1, t_end2 = collect(sim, path)
        assert again[0].ok, again[0].error
        exact = check_complete(sim, tmp_path / "archive.db", sim.tenants[0], t1, t_end2, api=api,
                               exact_until=first_end)
        assert exact["rows"] > stats["old"]
        served = sim.stats()
    reports[0].restarts += again[0].restarts
    reports[0].repaired += again[0].repaired
    reports[0].throttled += again[0].throttled
    return reports[0], served


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_once_complete_then_exact_under_faults(tmp_path: Path, scenario: str) -> None:
    report, served = run_then_reread(tmp_path, scenario, "graph", 11)
    names = set(scenario.replace(",", " ").replace(":0.6", "").split())
    if names & {"poison", "badrcpt", "chaos"}:
        assert report.restarts + report.repaired > 0, served
    if names & {"throttle", "chaos"}:
        assert report.throttled > 0
    assert served.get("quota_429", 0) == 0  # the governor keeps below Microsoft's quota (90 of 100)
    requests = served["requests_graph_list"]
    if names & {"expire", "chaos"}:
        # tokens die mid-run: the 401s were answered with a new token and the runs still ended exact
        assert served["expired_tokens_rejected"] > 0 and served["tokens_issued"] > 2
    else:
        assert served["tokens_issued"] == 2 and requests > 40  # one token per run, reused for every request
        assert served.get("expired_tokens_rejected", 0) == 0


@pytest.mark.parametrize("scenario", ["flaky", "expire", "throttle:0.6", "chaos,late"])
def test_rws_complete_then_exact_under_faults(tmp_path: Path, scenario: str) -> None:
    report, served = run_then_reread(tmp_path, scenario, "rws", 3)
    assert served["requests_rws_messagetrace"] > 0 and served.get("requests_graph_list", 0) == 0
    if "throttle" in scenario or "chaos" in scenario:
        assert served.get("faults_throttle", 0) > 0
    if "expire" in scenario or "chaos" in scenario:
        assert served.get("rws_401", 0) > 0


def test_rws_answering_403_to_an_expired_token_is_no_missing_role(tmp_path: Path) -> None:
    # RWS's error page lists wrong credentials under 403: a fresh token is tried before the role is blamed
    report, served = run_then_reread(tmp_path, "expire", "rws", 3, rws_bad_token_status=403)
    assert served.get("rws_403_bad_token", 0) > 0 and served["tokens_issued"] > 2
    assert report.ok


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
