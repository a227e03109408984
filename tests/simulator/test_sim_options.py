"""Options: where msapi.md marks a behaviour unconfirmed, the simulator has an option whose default is the
most likely behaviour (tested everywhere else); here each alternative, set through the scenario string or
``SimulatorConfig``, and the option machinery (``--set``, scenario ``key=value``, validation, docs)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx
import pytest
from sim_helpers import RWS_SCOPE, START, auth, graph_filter, keys_of, rws_page, token, window, z

from exotrace.errors import ConfigError
from exotrace.simulator import SimTenant, SimulatorConfig, start_simulator
from exotrace.simulator.config import (
    OPTION_CHOICES,
    OPTION_HELP,
    TENANT_OPTIONS,
    apply_options,
    describe_options,
    parse_scenario,
    scenario_options,
)
from exotrace.simulator.server import Simulator

DOCS = Path(__file__).resolve().parents[2] / "docs" / "simulator.md"
LIST = "/v1.0/admin/exchange/tracing/messageTraces"
#: every unconfirmed behaviour at its alternative (part through the scenario string, part as fields)
ALT_SCENARIO = "rws_index=page,rws_echo_top=false,rws_received_z=true,graph_beta_status=pascal"
ALT_FIELDS: dict[str, Any] = {
    "rws_old_start": "clip", "rws_top_over_max": "reject", "rws_filter": "lenient", "rws_orderby": "reject",
    "rws_default_format": "light", "rws_verbose_next": "relative",
    "rws_light_content_type": "application/json; charset=utf-8", "rws_401_body": "json",
    "graph_403": "request-denied", "graph_status_filter": "strict", "graph_requires_directory_role": True,
    "graph_details_page": 1, "graph_details_unknown": "404",
}


@pytest.fixture(scope="module")
def alt() -> Iterator[Simulator]:
    tenants = [SimTenant.default("contoso"), SimTenant.default("fabrikam", graph_permission=False),
               SimTenant.default("northwind", rws_role=False)]
    cfg = SimulatorConfig(seed=7, start=START, tenants=tenants, scenario=ALT_SCENARIO, **ALT_FIELDS)
    with start_simulator(cfg) as s:
        yield s


@pytest.fixture(scope="module")
def alt2() -> Iterator[Simulator]:
    cfg = SimulatorConfig(seed=7, start=START, history_days=5, rws_verbose_next="none", rws_401_body="html",
                          rws_default_format="verbose", graph_details_quota="separate", quota_requests=3)
    with start_simulator(cfg) as s:
        yield s


@pytest.fixture
def c(alt: Simulator) -> Iterator[httpx.Client]:
    with httpx.Client(verify=alt.ssl_context(), timeout=30) as client:
        yield client


def _rws(c: httpx.Client, sim: Simulator, params: dict[str, str], accept: str | None = "application/json",
         tenant: str = "contoso") -> httpx.Response:
    headers = auth(token(c, sim, sim.tenant(tenant), scope=RWS_SCOPE))
    if accept:
        headers["Accept"] = accept
    return c.get(f"{sim.rws_url}/MessageTrace", params=params, headers=headers)


def _flt(start: Any, end: Any, extra: str = "") -> str:
    f = f"StartDate eq datetime'{z(start)}' and EndDate eq datetime'{z(end)}'"
    return f"{f} and {extra}" if extra else f


# ---- the machinery -----------------------------------------------------------------------------------

def test_every_option_has_help_choices_are_valid_and_docs_name_them() -> None:
    fields = {f.name for f in dataclasses.fields(SimulatorConfig)} - {"tenants", "scenario"}
    assert set(OPTION_HELP) == fields
    defaults = SimulatorConfig()
    for key, allowed in OPTION_CHOICES.items():
        assert getattr(defaults, key) == allowed[0], f"{key}: the default comes first"
    docs = DOCS.read_text()
    missing = [k for k in [*OPTION_HELP, *TENANT_OPTIONS] if f"`{k}`" not in docs]
    assert not missing, f"not documented in docs/simulator.md: {missing}"
    text = describe_options()
    assert all(k in text for k in OPTION_HELP) and "rws_index = absolute" in text


def test_apply_options_converts_text_and_explains_mistakes() -> None:
    cfg = apply_options(SimulatorConfig(), ["rws_index=page", "quota_requests=20", "quota_window=60.5",
                                            "tls=false", "start=2026-05-01T12:00", "state_dir=",
                                            "*.rws_role=false", "contoso.rows_per_day=9",
                                            "contoso.domains=a.example+b.example"])
    assert (cfg.rws_index, cfg.quota_requests, cfg.quota_window, cfg.tls) == ("page", 20, 60.5, False)
    assert cfg.start == START and cfg.state_dir is None
    t = cfg.resolved_tenants()[0]
    assert (t.rws_role, t.rows_per_day, t.domains) == (False, 9, ["a.example", "b.example"])
    for bad, fragment in [("nope=1", "unknown option 'nope'"), ("rws_index=sideways", "must be one of absolute, page"),
                          ("quota_requests=many", "invalid literal"), ("tls=perhaps", "expected true or false"),
                          ("fabrikam.rws_role=false", "no tenant 'fabrikam'"), ("contoso.colour=red", "unknown tenant"),
                          ("rws_max_page=0", "at least 1"), ("novalue", "expected key=value")]:
        with pytest.raises(ConfigError, match=re.escape(fragment)):
            apply_options(SimulatorConfig(), [bad])
    with pytest.raises(ConfigError, match="rws_throttle_status must be one of 503, 429"):
        SimulatorConfig(rws_throttle_status=500)


def test_scenario_options_win_over_fields_and_are_stripped() -> None:
    text = "retired,rws_retired_status=410,throttle:0.3,*.graph_permission=false"
    assert parse_scenario(text) == {"retired": 1.0, "throttle": 0.3}
    assert scenario_options(text) == {"rws_retired_status": "410", "*.graph_permission": "false"}
    eff = SimulatorConfig(scenario=text, rws_retired_status=403).effective()
    assert eff.scenario == "retired,throttle:0.3" and eff.rws_retired_status == 410
    assert eff.resolved_tenants()[0].graph_permission is False
    assert eff.effective() is eff
    with pytest.raises(ConfigError, match="rws_retired_status"):
        SimulatorConfig(scenario="rws_retired_status=418").effective()


# ---- Reporting Web Service alternatives ----------------------------------------------------------------

def test_rws_index_per_page_top_not_echoed_received_with_z(alt: Simulator, c: httpx.Client) -> None:
    """rws_index=page, rws_echo_top=false, rws_received_z=true (set in the scenario string)."""
    assert alt.config.rws_index == "page" and alt.config.scenario == "default"
    start, end = window(alt, 0.5, 9 * 24)
    tid = alt.tenant("contoso").tenant_id
    r = _rws(c, alt, {"$filter": _flt(start, end), "$top": "100"})
    rows, nxt = rws_page(r, "light")
    assert len(rows) == 100 and [x["Index"] for x in rows] == list(range(100))
    assert nxt is not None and "$top" not in nxt and "$skiptoken=100" in nxt
    second, _ = rws_page(c.get(nxt, headers=r.request.headers), "light")
    assert len(second) == 2000 and second[0]["Index"] == 0  # the default page size once $top is dropped
    assert all(x["Received"].endswith("Z") for x in rows + second)
    truth = alt.ground_truth(tid, api="rws", start=start, end=end)
    for x in rows + second:
        assert truth[keys_of([x], graph=False)[0]]["Received"] == x["Received"]


def test_rws_default_format_light_content_type_and_verbose_relative_next(alt: Simulator, c: httpx.Client) -> None:
    start, end = window(alt, 1, 6)
    r = _rws(c, alt, {"$filter": _flt(start, end), "$top": "5"}, accept=None)
    assert r.headers["content-type"] == "application/json; charset=utf-8" and r.json()["value"]
    v = _rws(c, alt, {"$filter": _flt(start, end), "$top": "5", "$format": "json"}, accept=None).json()["d"]
    assert v["__next"].startswith("../../reportingwebservice/reporting.svc/MessageTrace?$format=json&")
    assert [x["Index"] for x in v["results"]] == list(range(5))
    nxt = c.get(urljoin(f"{alt.rws_url}/MessageTrace", v["__next"]), headers=auth(token(
        c, alt, alt.tenant("contoso"), scope=RWS_SCOPE)))
    assert nxt.status_code == 200 and nxt.json()["d"]["results"]


def test_rws_verbose_without_next_link_pages_by_skiptoken(alt2: Simulator) -> None:
    """rws_verbose_next=none: no ``__next``; a client advances ``$skiptoken`` until a page is empty."""
    with httpx.Client(verify=alt2.ssl_context()) as c:
        start, end = window(alt2, 1, 30)
        tok = token(c, alt2, alt2.tenants[0], scope=RWS_SCOPE)
        keys: list[str] = []
        skip = 0
        while True:  # rws_default_format=verbose: no $format needed
            r = c.get(f"{alt2.rws_url}/MessageTrace", params={"$filter": _flt(start, end), "$top": "100",
                                                             "$skiptoken": str(skip)}, headers=auth(tok))
            d = r.json()["d"]
            assert "__next" not in d
            if not d["results"]:
                break
            keys += keys_of(d["results"], graph=False)
            skip += len(d["results"])
        truth = alt2.ground_truth(alt2.tenants[0].tenant_id, api="rws", start=start, end=end)
        assert len(keys) == len(set(keys)) > 100 and set(keys) == set(truth)


def test_rws_401_bodies(alt: Simulator, alt2: Simulator, c: httpx.Client) -> None:
    r = c.get(f"{alt.rws_url}/MessageTrace", headers={"Authorization": "Bearer x.y.z", "Accept": "application/json"})
    assert r.status_code == 401 and "invalid_token" in r.headers["WWW-Authenticate"]
    assert r.json()["odata.error"]["message"]["value"] == "Access is denied due to invalid credentials."
    with httpx.Client(verify=alt2.ssl_context()) as c2:
        html = c2.get(f"{alt2.rws_url}/MessageTrace", headers={"Authorization": "Bearer x.y.z"})
    assert html.status_code == 401 and html.headers["content-type"].startswith("text/html")
    assert "<h2>401 - Unauthorized: Access is denied due to invalid credentials.</h2>" in html.text


def test_rws_lenient_filter_accepts_or_ne_and_functions(alt: Simulator, c: httpx.Client) -> None:
    start, end = window(alt, 1, 24)
    truth = alt.ground_truth(alt.tenant("contoso").tenant_id, api="rws", start=start, end=end)
    a, b = sorted({r["RecipientAddress"] for r in truth.values() if "'" not in r["RecipientAddress"]})[:2]

    def keys(extra: str) -> set[str]:
        r = _rws(c, alt, {"$filter": _flt(start, end, extra), "$top": "2000"})
        assert r.status_code == 200, r.text
        return set(keys_of(rws_page(r, "light")[0], graph=False))

    only_b = {k for k, r in truth.items() if r["RecipientAddress"] == b}
    assert keys(f"(RecipientAddress eq '{a}' or RecipientAddress eq '{b}')") == only_b  # the last value wins
    assert keys("Status ne 'Delivered'") == set(truth)  # ignored
    assert keys("startswith(SenderAddress, 'zzz')") == set(truth)  # ignored on addresses
    word = "invoice"
    assert keys(f"contains(Subject, '{word}')") == {k for k, r in truth.items() if word in r["Subject"].lower()}


def test_rws_orderby_reject_top_reject_and_clipped_start(alt: Simulator, c: httpx.Client, sim: Simulator,
                                                          client: httpx.Client) -> None:
    start, end = window(alt, 1, 3)
    r = _rws(c, alt, {"$filter": _flt(start, end), "$orderby": "Received desc"})
    assert r.status_code == 400 and "$orderby" in r.json()["odata.error"]["message"]["value"]
    ignored = _rws(client, sim, {"$filter": _flt(start, end), "$orderby": "Subject", "$top": "5"})  # the default
    plain = _rws(client, sim, {"$filter": _flt(start, end), "$top": "5"})
    assert ignored.json()["value"] == plain.json()["value"]  # ignored, and carried into the next link
    assert ignored.json()["odata.nextLink"].endswith("&$orderby=Subject&$top=5&$skiptoken=5")
    big = _rws(c, alt, {"$filter": _flt(start, end), "$top": "2001"})
    assert big.status_code == 400 and "The limit of '2000' for top query has been exceeded" in big.text
    old = alt.clock.now() - timedelta(days=12)
    clip = _rws(c, alt, {"$filter": _flt(old, alt.clock.now() - timedelta(days=9)), "$top": "2000"})
    assert clip.status_code == 200
    rows = clip.json()["value"]
    from exotrace.simulator.odata import parse_datetime

    ten = parse_datetime(z(alt.clock.now() - timedelta(days=10, seconds=-60)))
    assert rows and parse_datetime(rows[0]["StartDate"]) >= ten - 120 * 10**6
    assert min(parse_datetime(x["Received"]) for x in rows) >= parse_datetime(rows[0]["StartDate"])


# ---- Graph alternatives -------------------------------------------------------------------------------

def test_graph_beta_pascal_status_and_v1_unchanged(alt: Simulator, c: httpx.Client) -> None:
    tok = token(c, alt, alt.tenant("contoso"))
    start, end = window(alt, 2, 4)
    params = {"$filter": graph_filter(start, end), "$top": "5000"}
    beta = c.get(f"{alt.graph_url}/beta/admin/exchange/tracing/messageTraces", params=params, headers=auth(tok))
    v1 = c.get(f"{alt.graph_url}{LIST}", params=params, headers=auth(tok))
    statuses = {r["status"] for r in beta.json()["value"]}
    assert "Delivered" in statuses and "FilteredAsSpam" in statuses and all(st[0].isupper() for st in statuses)
    assert all(s[0].islower() for s in {r["status"] for r in v1.json()["value"]})


def test_graph_403_request_denied_and_directory_role(alt: Simulator, c: httpx.Client) -> None:
    for name in ("fabrikam", "northwind"):  # no permission; no directory role (graph_requires_directory_role)
        r = c.get(f"{alt.graph_url}{LIST}", headers=auth(token(c, alt, alt.tenant(name))))
        assert r.status_code == 403
        assert r.json()["error"]["code"] == "Authorization_RequestDenied"
        assert r.json()["error"]["message"] == "Insufficient privileges to complete the operation."
        assert alt.ground_truth(alt.tenant(name).tenant_id) == {} and not alt.serves(name)
    assert alt.serves("contoso") and alt.ground_truth(alt.tenant("contoso").tenant_id)


def test_graph_strict_status_filter(alt: Simulator, c: httpx.Client, sim: Simulator, client: httpx.Client) -> None:
    start, end = window(alt, 1, 6)
    for s, cl in ((alt, c), (sim, client)):
        tok = token(cl, s, s.tenant("contoso"))
        pascal = cl.get(f"{s.graph_url}{LIST}", params={"$filter": graph_filter(start, end, "status eq 'Delivered'")},
                        headers=auth(tok))
        camel = cl.get(f"{s.graph_url}{LIST}", params={"$filter": graph_filter(start, end, "status eq 'delivered'")},
                       headers=auth(tok))
        assert camel.status_code == 200 and camel.json()["value"]
        if s is alt:
            assert pascal.status_code == 400
            assert "'Delivered' is not a valid enumeration type constant" in pascal.json()["error"]["message"]
        else:
            assert pascal.status_code == 200 and keys_of(pascal.json()["value"]) == keys_of(camel.json()["value"])


def test_graph_details_paged_and_unknown_404(alt: Simulator, c: httpx.Client, sim: Simulator,
                                             client: httpx.Client) -> None:
    truth = alt.ground_truth(alt.tenant("contoso").tenant_id, start=START - timedelta(days=2),
                             end=START - timedelta(days=1))
    row = next(r for r in truth.values() if r["Status"] == "Delivered" and r["RecipientAddress"].startswith("o'"))
    path = (f"/v1.0/admin/exchange/tracing/messageTraces/{row['MessageTraceId']}"
            f"/getDetailsByRecipient(recipientAddress='{row['RecipientAddress'].replace(chr(39), chr(39) * 2)}')")
    tok = token(c, alt, alt.tenant("contoso"))
    events: list[dict[str, Any]] = []
    url: str | None = alt.graph_url + path
    pages = 0
    while url:
        body = c.get(url, headers=auth(tok)).json()
        assert len(body["value"]) <= 1
        events += body["value"]
        url = body.get("@odata.nextLink")
        pages += 1
    whole = client.get(sim.graph_url + path, headers=auth(token(client, sim, sim.tenant("contoso")))).json()
    assert "@odata.nextLink" not in whole and events == whole["value"] and pages >= 2
    unknown = c.get(alt.graph_url + path.replace(row["MessageTraceId"], "00000000-0000-0000-0000-000000000000"),
                    headers=auth(tok))
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "NotFound"


def test_graph_details_separate_quota(alt2: Simulator) -> None:
    """graph_details_quota=separate (a third party's claim; Microsoft says shared): details keep working
    when the list quota (3 here) is spent, and have their own 3."""
    with httpx.Client(verify=alt2.ssl_context()) as c:
        tok = token(c, alt2, alt2.tenants[0])
        start, end = window(alt2, 1, 1)
        params = {"$filter": graph_filter(start, end), "$top": "1"}
        codes = [c.get(f"{alt2.graph_url}{LIST}", params=params, headers=auth(tok)).status_code for _ in range(3)]
        row = c.get(f"{alt2.graph_url}{LIST}", params=params, headers=auth(tok))
        assert codes == [200, 200, 200] and row.status_code == 429
        truth = next(iter(alt2.ground_truth(alt2.tenants[0].tenant_id, start=start, end=end).values()))
        detail = (f"{alt2.graph_url}{LIST}/{truth['MessageTraceId']}/getDetailsByRecipient(recipientAddress="
                  f"'{truth['RecipientAddress'].replace(chr(39), chr(39) * 2)}')")
        assert [c.get(detail, headers=auth(tok)).status_code for _ in range(4)] == [200, 200, 200, 429]
