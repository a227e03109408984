"""The simulator is shared by threads: the server thread answers requests while the test (or the
collector's process) asks for the ground truth. Rows must be the same whoever generated them."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import httpx
from sim_helpers import START, graph_filter, graph_pages, keys_of, token

from exotrace.model import row_key
from exotrace.simulator import SimulatorConfig, start_simulator
from exotrace.simulator.data import HOUR_US, TenantData, to_us
from exotrace.simulator.views import graph_item


def _static(item: dict[str, Any]) -> tuple[Any, ...]:
    return (item["id"], item["messageId"], item["receivedDateTime"], item["senderAddress"],
            item["recipientAddress"], item["subject"], item["size"], item["fromIP"], item["toIP"])


def test_ground_truth_concurrent_with_graph_paging_gives_every_row_its_deterministic_value() -> None:
    seed, per_day = 21, 4000
    # a tiny cache: every query regenerates hours, in both threads at once
    cfg = SimulatorConfig(seed=seed, start=START, rows_per_day=per_day, history_days=12, cache_rows=300, tls=False,
                          quota_requests=10_000)
    with start_simulator(cfg) as sim, httpx.Client(timeout=60) as c:
        tenant = sim.tenants[0]
        reference = TenantData(tenant, seed, per_day)  # private to this thread: the deterministic values
        now = sim.clock.now()
        expected: dict[str, tuple[Any, ...]] = {}

        def expect(hour: int) -> None:
            for row in reference.bucket(hour):
                expected.setdefault(row_key(row.trace_id, row.recipient),
                                    _static(graph_item(row, to_us(now), True, beta=False)))

        windows = [(now - timedelta(days=d, hours=6), now - timedelta(days=d)) for d in (1, 3, 5)]
        churn_windows = [(now - timedelta(days=d, hours=2), now - timedelta(days=d)) for d in (2, 4, 6, 7, 8)]
        for s, e in windows + churn_windows:
            for h in range(to_us(s) // HOUR_US, to_us(e) // HOUR_US + 1):
                expect(h)

        stop = threading.Event()
        bad: list[str] = []
        truths = 0

        def churn() -> None:
            nonlocal truths
            k = 0
            while not stop.is_set():
                s, e = churn_windows[k % len(churn_windows)]
                for key, row in sim.iter_ground_truth(tenant.tenant_id, start=s, end=e):
                    got = (row["MessageTraceId"], row["MessageId"], row["Received"], row["SenderAddress"],
                           row["RecipientAddress"], row["Subject"], row["Size"], row["FromIP"], row["ToIP"])
                    if got != expected[key]:
                        bad.append(f"ground truth {key}: {got} != {expected[key]}")
                truths += 1
                k += 1

        worker = threading.Thread(target=churn, name="ground-truth-churn")
        worker.start()
        served = 0
        try:
            tok = token(c, sim, tenant)
            for _ in range(3):
                for s, e in windows:
                    pages = graph_pages(c, sim, tok, {"$filter": graph_filter(s, e), "$top": "100"})
                    for r in (r for p in pages for r in p):
                        served += 1
                        key = keys_of([r])[0]
                        if _static(r) != expected[key]:
                            bad.append(f"served {key}: {_static(r)} != {expected[key]}")
        finally:
            stop.set()
            worker.join(60)
        assert served > 1000 and truths > 3
        assert not bad, f"{len(bad)} rows differ, e.g. {bad[:3]}"


def test_threads_generating_different_hours_at_once_get_the_deterministic_rows() -> None:
    """Many threads, one TenantData with no room to cache: each hour is regenerated over and over while
    other hours are being generated, and must always equal a private single-threaded copy."""
    from exotrace.simulator import SimTenant

    tenant = SimTenant.default("contoso")
    shared = TenantData(tenant, 5, 6000, cache_rows=1)
    hours = [to_us(START) // HOUR_US - h for h in range(1, 25)]
    reference = {h: TenantData(tenant, 5, 6000).bucket(h) for h in hours}
    bad: list[int] = []

    def work(offset: int) -> None:
        for n in range(60):
            h = hours[(offset * 7 + n) % len(hours)]
            if shared.bucket(h) != reference[h]:
                bad.append(h)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not bad
