"""Quota, token expiry and every fault scenario: each fault shows up, and a patient reader still gets
exactly the ground truth. Scenarios run with a fast simulated clock so waits stay short."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import httpx
import jwt
import pytest
from sim_helpers import (
    START,
    PatientGraphReader,
    PatientRwsReader,
    auth,
    graph_filter,
    repair,
    token,
    window,
    z,
)

from exotrace.simulator import SimTenant, SimulatorConfig, start_simulator
from exotrace.simulator.server import Simulator

LIST = "/v1.0/admin/exchange/tracing/messageTraces"


def _sim(scenario: str, speed: float = 1.0, **kw: object) -> Simulator:
    tenants = [SimTenant.default("contoso"), SimTenant.default("fabrikam")]
    return start_simulator(SimulatorConfig(seed=11, scenario=scenario, speed=speed, start=START, tenants=tenants,
                                           rows_per_day=400, **kw))  # type: ignore[arg-type]


@pytest.fixture
def client_for() -> Iterator[object]:
    clients: list[httpx.Client] = []

    def make(sim: Simulator, timeout: float = 30) -> httpx.Client:
        c = httpx.Client(verify=sim.ssl_context(), timeout=timeout)
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.close()


def test_quota_101st_request_in_300s_is_429_shared_by_details(client_for: object) -> None:
    with _sim("default") as sim:
        c = client_for(sim)  # type: ignore[operator]
        tok = token(c, sim, sim.tenant("contoso"))
        start, end = window(sim, 1, 1)
        params = {"$filter": graph_filter(start, end), "$top": "1"}
        for _ in range(99):
            assert c.get(f"{sim.graph_url}{LIST}", params=params, headers=auth(tok)).status_code == 200
        row = c.get(f"{sim.graph_url}{LIST}", params=params, headers=auth(tok)).json()["value"][0]
        detail = (f"{sim.graph_url}/v1.0/admin/exchange/tracing/messageTraces/{row['id']}"
                  f"/getDetailsByRecipient(recipientAddress='{row['recipientAddress']}')")
        r = c.get(detail, headers=auth(tok))
        assert r.status_code == 429
        assert r.json()["error"]["message"] == ("Your recent queries have surpassed the permitted limit, "
                                                "please try again later.")
        wait = int(r.headers["Retry-After"])
        assert 1 <= wait <= 300
        assert c.get(f"{sim.graph_url}{LIST}", params=params, headers=auth(tok)).status_code == 429
        # another tenant has its own quota
        other = token(c, sim, sim.tenant("fabrikam"))
        assert c.get(f"{sim.graph_url}{LIST}", params=params, headers=auth(other)).status_code == 200
        sim.clock.advance(wait)  # what a collector sleeping Retry-After on the simulated clock sees
        assert c.get(detail, headers=auth(tok)).status_code == 200
        assert sim.stats()["quota_429"] == 2


def test_retry_after_is_simulated_seconds(client_for: object) -> None:
    with _sim("default", speed=100, quota_requests=3) as sim:
        c = client_for(sim)  # type: ignore[operator]
        tok = token(c, sim, sim.tenant("contoso"))
        start, end = window(sim, 1, 1)
        params = {"$filter": graph_filter(start, end), "$top": "1"}
        codes = []
        while 429 not in codes and len(codes) < 10:
            r = c.get(f"{sim.graph_url}{LIST}", params=params, headers=auth(tok))
            codes.append(r.status_code)
        assert codes == [200, 200, 200, 429]
        # waiting Retry-After on the simulated clock (3 real seconds at most here) is exactly enough
        sim.clock.sleep_sync(float(r.headers["Retry-After"]))
        assert c.get(f"{sim.graph_url}{LIST}", params=params, headers=auth(tok)).status_code == 200


def test_expire_scenario_kills_tokens_before_expires_in(client_for: object) -> None:
    with _sim("expire") as sim:
        c = client_for(sim)  # type: ignore[operator]
        t = sim.tenant("contoso")
        r = c.post(f"{sim.login_url}/{t.tenant_id}/oauth2/v2.0/token", data={
            "grant_type": "client_credentials", "client_id": t.client_id, "client_secret": t.client_secret,
            "scope": "https://graph.microsoft.com/.default"})
        body = r.json()
        claims = jwt.decode(body["access_token"], options={"verify_signature": False})
        assert body["expires_in"] == 3600 and claims["exp"] - claims["iat"] == 300
        start, end = window(sim, 1, 1)
        params = {"$filter": graph_filter(start, end), "$top": "1"}
        assert c.get(f"{sim.graph_url}{LIST}", params=params, headers=auth(body["access_token"])).status_code == 200
        sim.clock.advance(301)
        late = c.get(f"{sim.graph_url}{LIST}", params=params, headers=auth(body["access_token"]))
        assert late.status_code == 401 and "expired" in late.json()["error"]["message"]


def test_poisoned_skiptoken_is_rejected_like_microsoft_and_repairable(client_for: object) -> None:
    with _sim("poison:1") as sim:
        c = client_for(sim)  # type: ignore[operator]
        tok = token(c, sim, sim.tenant("contoso"))
        start, end = window(sim, 1, 6)
        body = c.get(f"{sim.graph_url}{LIST}", params={"$filter": graph_filter(start, end), "$top": "10"},
                     headers=auth(tok)).json()
        nxt = body["@odata.nextLink"]
        r = c.get(nxt, headers=auth(tok))
        assert r.status_code == 400
        assert "Cannot process argument transformation on parameter 'StartDate'" in r.json()["error"]["message"]
        fixed = c.get(repair(nxt), headers=auth(tok))
        assert fixed.status_code == 200 and fixed.json()["value"][0] != body["value"][-1]


@pytest.mark.parametrize(("scenario", "evidence"), [
    ("throttle", {"429"}),
    ("flaky", {"500", "502", "503", "504"}),
    ("drop", {"RemoteProtocolError"}),
    ("truncate", {"RemoteProtocolError"}),
    ("malformed", {"JSONDecodeError"}),
    ("badrcpt", {"400"}),
    ("poison", {"400"}),
    ("slow", {"ReadTimeout"}),
    ("expire", {"401"}),
    ("latency", set()),
    ("chaos", {"429", "RemoteProtocolError", "JSONDecodeError", "400"}),
])
def test_faults_show_up_and_leave_the_data_intact(client_for: object, scenario: str, evidence: set[str]) -> None:
    speed = 400.0 if scenario in ("slow", "expire", "chaos", "latency", "throttle") else 1.0
    cfg_kw = {"slow_seconds": 200.0} if scenario in ("slow", "chaos") else {}
    prob = "" if scenario in ("expire", "latency", "chaos") else ":1" if scenario == "throttle" else ":0.5"
    with _sim(scenario + prob, speed=speed, **cfg_kw) as sim:
        c = client_for(sim, timeout=0.3 if scenario in ("slow", "chaos") else 30)  # type: ignore[operator]
        start, end = window(sim, 2, 30)
        reader = PatientGraphReader(c, sim, sim.tenant("contoso"), top=50)
        if scenario in ("expire", "chaos"):
            reader.tok = token(c, sim, sim.tenant("contoso"))
            sim.clock.advance(301)
        got = reader.read(start, end)
        truth = sim.ground_truth(sim.tenant("contoso").tenant_id, start=start, end=end, prefer_unknown=False)
        assert set(got) == set(truth)
        for key, row in got.items():
            assert row["status"].lower() == truth[key]["Status"].lower()
        seen = set(reader.log)
        assert evidence <= seen or (evidence and seen & evidence), (scenario, reader.log)
        if not evidence:
            assert not reader.log
        stats = sim.stats()
        if scenario not in ("latency", "expire"):
            assert stats["faults_injected"] > 0


def test_faults_are_deterministic_from_the_seed(client_for: object) -> None:
    runs = []
    for _ in range(2):
        with _sim("flaky:0.3,drop:0.2,malformed:0.2,badrcpt:0.5,poison:0.5") as sim:
            c = client_for(sim)  # type: ignore[operator]
            start, end = window(sim, 2, 20)
            reader = PatientGraphReader(c, sim, sim.tenant("contoso"), top=150)
            reader.read(start, end)
            runs.append((reader.log, {k: v for k, v in sim.stats().items() if k.startswith("faults")}))
    assert runs[0] == runs[1] and runs[0][0]


def test_retired_scenario_and_rws_throttle_503(client_for: object) -> None:
    with _sim("retired") as sim:
        c = client_for(sim)  # type: ignore[operator]
        tok = token(c, sim, sim.tenant("contoso"), scope="https://outlook.office365.com/.default")
        r = c.get(f"{sim.rws_url}/MessageTrace", headers={**auth(tok), "Accept": "application/json"})
        assert r.status_code == 404
        tid = sim.tenant("contoso").tenant_id
        assert sim.ground_truth(tid, api="rws") == {} and sim.ground_truth(tid, api="graph")
    with _sim("throttle:1") as sim:
        c = client_for(sim)  # type: ignore[operator]
        tok = token(c, sim, sim.tenant("contoso"), scope="https://outlook.office365.com/.default")
        r = c.get(f"{sim.rws_url}/MessageTrace", headers={**auth(tok), "Accept": "application/json"})
        assert r.status_code == 503 and int(r.headers["Retry-After"]) >= 1


def test_late_scenario_publishes_more_rows_late() -> None:
    def late_share(scenario: str) -> float:
        with _sim(scenario) as sim:
            tid = sim.tenant("contoso").tenant_id
            start, end = window(sim, 0, 24)
            now_rows = sim.ground_truth(tid, start=start, end=end)
            later = sim.ground_truth(tid, at=sim.clock.now() + timedelta(days=2), start=start, end=end)
            assert set(now_rows) < set(later)
            return 1 - len(now_rows) / len(later)

    assert late_share("late") > late_share("default") * 2


def test_latency_is_2_to_4_seconds_per_5000_rows_of_simulated_time() -> None:
    """The ``latency`` scenario sleeps on the simulated clock (so ``speed`` scales it): 0.15 s plus
    2-4 s per 5000 rows. Recorded, not timed."""
    import asyncio

    from exotrace.clock import ScaledClock
    from exotrace.simulator.app import SimState
    from exotrace.simulator.certs import new_key
    from exotrace.simulator.entra import TokenKey

    def state(scenario: str) -> SimState:
        cfg = SimulatorConfig(seed=11, scenario=scenario, start=START, history_days=1)
        return SimState(cfg, [SimTenant.default("contoso")], ScaledClock(START, 50.0), TokenKey(new_key("token"), "k"))

    slept: list[float] = []

    async def record(seconds: float) -> None:
        slept.append(seconds)

    on, off = state("latency"), state("default")
    for s in (on, off):
        s.clock.sleep = record  # type: ignore[method-assign]
    for _ in range(40):
        asyncio.run(on.latency(5000))
    assert len(slept) == 40 and all(2.15 <= x <= 4.15 for x in slept)
    assert max(slept) - min(slept) > 1  # varies from page to page
    slept.clear()
    asyncio.run(on.latency(500))
    assert 0.15 + 0.2 <= slept[0] <= 0.15 + 0.4
    slept.clear()
    asyncio.run(off.latency(5000))
    assert slept == []


def test_throttle_bursts_refuse_everything_until_retry_after() -> None:
    from exotrace.simulator.faults import BURST_SLOT, Faults

    faults = Faults(11, {"throttle": 0.15})
    slot0 = 1_800_000_000 // BURST_SLOT * BURST_SLOT
    bursts = [s for s in range(400) if faults.burst(slot0 + s * BURST_SLOT + 1) is not None]
    assert 0.08 * 400 < len(bursts) < 0.25 * 400  # about the scenario's probability
    first = slot0 + bursts[0] * BURST_SLOT
    remaining = faults.burst(first + 1)
    assert remaining is not None and 29 <= remaining <= 149
    assert faults.burst(first + 1 + remaining - 0.5) is not None  # still refused just before the end
    assert faults.burst(first + 1 + remaining + 0.01) is None  # over when Retry-After says
    assert Faults(11, {"throttle": 0.15}).burst(first + 1) == remaining  # deterministic


def test_throttle_burst_through_the_api(client_for: object) -> None:
    """Inside a burst the same request is refused again and again (no two-failure cap), with a
    Retry-After that covers the burst; once it has passed the request goes through."""
    from exotrace.simulator.faults import BURST_SLOT, Faults

    faults = Faults(11, {"throttle": 0.15})
    slot = next(s for s in range(int(START.timestamp() // BURST_SLOT), 10**10) if faults.burst(s * BURST_SLOT + 1))
    at = START + timedelta(seconds=slot * BURST_SLOT + 1 - START.timestamp())
    with start_simulator(SimulatorConfig(seed=11, scenario="throttle", start=at, history_days=2,
                                         rows_per_day=100)) as sim:
        c = client_for(sim)  # type: ignore[operator]
        tok = token(c, sim, sim.tenant("contoso"))
        start, end = window(sim, 1, 1)
        params = {"$filter": graph_filter(start, end), "$top": "1"}
        waits = []
        for _ in range(4):
            r = c.get(f"{sim.graph_url}{LIST}", params=params, headers=auth(tok))
            assert r.status_code == 429 and "surpassed the permitted limit" in r.json()["error"]["message"]
            waits.append(int(r.headers["Retry-After"]))
        assert waits[0] >= 25
        sim.clock.advance(waits[-1] + 1)
        codes = [c.get(f"{sim.graph_url}{LIST}", params=params, headers=auth(tok)).status_code for _ in range(3)]
        assert 200 in codes  # isolated 429s (p=0.15) never fail one request more than twice in a row


def test_unconfirmed_rws_behaviours_are_options(client_for: object) -> None:
    """msapi.md marks the RWS page cap and the retired failure mode unconfirmed: both are options."""
    with _sim("default", rws_max_page=3000) as sim:
        c = client_for(sim)  # type: ignore[operator]
        tok = token(c, sim, sim.tenant("contoso"), scope="https://outlook.office365.com/.default")
        h = {**auth(tok), "Accept": "application/json"}
        start, end = window(sim, 0.5, 9 * 24)
        flt = f"StartDate eq datetime'{z(start)}' and EndDate eq datetime'{z(end)}'"
        page = c.get(f"{sim.rws_url}/MessageTrace", params={"$filter": flt}, headers=h).json()
        assert len(page["value"]) == 3000 and "$skiptoken=3000" in page["odata.nextLink"]
        capped = c.get(f"{sim.rws_url}/MessageTrace", params={"$filter": flt, "$top": "9000"}, headers=h).json()
        assert len(capped["value"]) == 3000
    with _sim("retired", rws_retired_status=410) as sim:
        c = client_for(sim)  # type: ignore[operator]
        tok = token(c, sim, sim.tenant("contoso"), scope="https://outlook.office365.com/.default")
        r = c.get(f"{sim.rws_url}/MessageTrace", headers={**auth(tok), "Accept": "application/json"})
        assert r.status_code == 410


@pytest.mark.parametrize(("scenario", "fmt", "evidence"), [
    ("flaky", "light", {"500", "502", "503", "504"}),
    ("flaky", "verbose", {"500", "502", "503", "504"}),
    ("flaky", "atom", {"500", "502", "503", "504"}),
    ("drop", "light", {"RemoteProtocolError"}),
    ("truncate", "verbose", {"RemoteProtocolError"}),
    ("truncate", "atom", {"RemoteProtocolError"}),
    ("malformed", "light", {"JSONDecodeError"}),
    ("malformed", "atom", {"ParseError"}),
    ("slow", "light", {"ReadTimeout"}),
    ("throttle", "light", {"503"}),
    ("throttle", "verbose", {"503"}),
    ("expire", "light", {"401"}),
    ("chaos", "atom", {"RemoteProtocolError", "ParseError", "503"}),
])
def test_rws_faults_show_up_and_leave_the_data_intact(client_for: object, scenario: str, fmt: str,
                                                      evidence: set[str]) -> None:
    """Every request fault on the Reporting Web Service, in each response format: a patient reader
    still reads exactly the ground truth (RWS offsets are stable for a window older than a day)."""
    speed = 400.0 if scenario in ("slow", "expire", "chaos", "throttle") else 1.0
    cfg_kw = {"slow_seconds": 200.0} if scenario in ("slow", "chaos") else {}
    prob = "" if scenario in ("expire", "chaos") else ":1" if scenario == "throttle" else ":0.5"
    with _sim(scenario + prob, speed=speed, **cfg_kw) as sim:
        c = client_for(sim, timeout=0.3 if scenario in ("slow", "chaos") else 30)  # type: ignore[operator]
        end = START - timedelta(days=2)  # fixed (the clock runs fast): the same requests, the same faults
        start = end - timedelta(hours=30)
        reader = PatientRwsReader(c, sim, sim.tenant("contoso"), fmt=fmt, top=150)
        if scenario in ("expire", "chaos"):
            reader.tok = token(c, sim, sim.tenant("contoso"), scope="https://outlook.office365.com/.default")
            sim.clock.advance(301)
        got = reader.read(start, end)
        truth = sim.ground_truth(sim.tenant("contoso").tenant_id, api="rws", start=start, end=end)
        assert set(got) == set(truth) and len(got) > 300
        assert all(row["Status"] == truth[key]["Status"] for key, row in got.items())
        seen = set(reader.log)
        assert seen & evidence, (scenario, reader.log)
        assert sim.stats().get("faults_injected", 0) > 0 or scenario == "expire"
        for status, ctype, body in reader.error_bodies:
            if status >= 500 and body:  # flaky: an OData error in the format the request asked for
                if fmt == "atom":
                    assert ctype.startswith("application/xml") and b"<m:error" in body
                elif fmt == "verbose":
                    assert ctype.startswith("application/json;odata=verbose") and b'"error":' in body
                else:
                    assert "odata=minimalmetadata" in ctype and b'"odata.error":' in body
            elif status == 503:  # throttling: an empty 503 with Retry-After
                assert scenario in ("throttle", "chaos")


def test_rws_flaky_503_has_no_retry_after_and_throttle_503_has_one(client_for: object) -> None:
    with _sim("flaky:1") as sim:
        c = client_for(sim)  # type: ignore[operator]
        tok = token(c, sim, sim.tenant("contoso"), scope="https://outlook.office365.com/.default")
        codes = {}
        for n in range(40):
            r = c.get(f"{sim.rws_url}/MessageTrace", params={"$top": str(n + 1)},
                      headers={**auth(tok), "Accept": "application/json"})
            codes[r.status_code] = r
        assert 503 in codes and "Retry-After" not in codes[503].headers
        assert codes[503].json()["odata.error"]["code"] == "UnknownError"
    with _sim("throttle:1") as sim:
        c = client_for(sim)  # type: ignore[operator]
        tok = token(c, sim, sim.tenant("contoso"), scope="https://outlook.office365.com/.default")
        r = c.get(f"{sim.rws_url}/MessageTrace", headers={**auth(tok), "Accept": "application/json"})
        assert r.status_code == 503 and r.content == b"" and int(r.headers["Retry-After"]) >= 1


@pytest.mark.parametrize("fmt", ["light", "verbose", "atom"])
def test_rws_throttle_as_429_option(client_for: object, fmt: str) -> None:
    """``rws_throttle_status=429`` (RWS throttling is unconfirmed): 429 with the quota text as an OData
    error in the requested format, and Retry-After; a patient reader still gets everything."""
    with _sim("throttle:1", speed=400.0, rws_throttle_status=429) as sim:
        c = client_for(sim)  # type: ignore[operator]
        tok = token(c, sim, sim.tenant("contoso"), scope="https://outlook.office365.com/.default")
        params = {"$format": "json"} if fmt == "verbose" else {}
        headers = {**auth(tok), **({"Accept": "application/json"} if fmt == "light" else {})}
        r = c.get(f"{sim.rws_url}/MessageTrace", params=params, headers=headers)
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
        assert b"surpassed the permitted limit" in r.content
        assert (b"<m:error" in r.content) == (fmt == "atom") and (b'"odata.error"' in r.content) == (fmt == "light")
        start, end = window(sim, 2, 20)
        reader = PatientRwsReader(c, sim, sim.tenant("contoso"), fmt=fmt, top=200)
        got = reader.read(start, end)
        assert "429" in reader.log
        assert set(got) == set(sim.ground_truth(sim.tenant("contoso").tenant_id, api="rws", start=start, end=end))
