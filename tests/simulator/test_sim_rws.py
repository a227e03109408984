"""Reporting Web Service over real HTTPS: JSON light and verbose paging, filters, errors, detail."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest
from sim_helpers import RWS_SCOPE, auth, keys_of, rws_pages, token, window, z

from exotrace.simulator.server import Simulator


@pytest.fixture
def tok(sim: Simulator, client: httpx.Client) -> str:
    return token(client, sim, sim.tenant("contoso"), scope=RWS_SCOPE)


def _flt(start: object, end: object, extra: str = "") -> str:
    f = f"StartDate eq datetime'{z(start)}' and EndDate eq datetime'{z(end)}'"  # type: ignore[arg-type]
    return f"{f} and {extra}" if extra else f


def test_json_light_paging_complete_and_in_service_order(sim: Simulator, client: httpx.Client, tok: str) -> None:
    start, end = window(sim, 1, 40)
    pages = rws_pages(client, sim, tok, {"$filter": _flt(start, end), "$top": "300"})
    assert len(pages) >= 3 and all(len(p) == 300 for p in pages[:-1])
    rows = [r for p in pages for r in p]
    keys = keys_of(rows, graph=False)
    assert len(keys) == len(set(keys))
    truth = sim.ground_truth(sim.tenant("contoso").tenant_id, api="rws", start=start, end=end)
    assert set(keys) == set(truth)
    first = rows[0]
    assert list(first) == ["Organization", "MessageId", "Received", "SenderAddress", "RecipientAddress", "Subject",
                           "Status", "ToIP", "FromIP", "Size", "MessageTraceId", "StartDate", "EndDate", "Index"]
    assert first["Organization"] == "contoso.onmicrosoft.com"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}", first["Received"])
    assert first["StartDate"] == z(start) and first["EndDate"] == z(end)
    assert [r["Index"] for r in rows] == list(range(len(rows)))
    assert any(r["ToIP"] is None for r in rows) and any(r["FromIP"] is None for r in rows)
    for r in rows:
        t = truth[keys_of([r], graph=False)[0]]
        assert {k: r[k] for k in t} == t


def test_default_page_2000_empty_past_end_and_skiptoken_limit(sim: Simulator, client: httpx.Client,
                                                               tok: str) -> None:
    url = f"{sim.rws_url}/MessageTrace"
    h = {**auth(tok), "Accept": "application/json"}
    start, end = window(sim, 0.5, 9 * 24)
    body = client.get(url, params={"$filter": _flt(start, end)}, headers=h).json()
    assert len(body["value"]) == 2000 and "$skiptoken=2000" in body["odata.nextLink"]
    assert "DateTime'" in body["odata.nextLink"]
    assert body["odata.metadata"].endswith("/ecp/ReportingWebService/Reporting.svc/$metadata#MessageTrace")
    big = client.get(url, params={"$filter": _flt(start, end), "$top": "5000"}, headers=h).json()
    assert len(big["value"]) == 2000
    past = client.get(url, params={"$filter": _flt(start, end), "$skiptoken": "900000"}, headers=h)
    assert past.status_code == 200 and past.json()["value"] == [] and "odata.nextLink" not in past.json()
    boom = client.get(url, params={"$filter": _flt(start, end), "$skiptoken": "999999"}, headers=h)
    assert boom.status_code == 500
    assert boom.content == (b'{"odata.error":{"code":"UnknownError","message":{"lang":"",'
                            b'"value":"An error has occurred on the server."}}}')


def test_verbose_json_with_date_literals(sim: Simulator, client: httpx.Client, tok: str) -> None:
    start, end = window(sim, 1, 3)
    r = client.get(f"{sim.rws_url.upper().replace('HTTPS://', 'https://')}/MESSAGETRACE".replace(
        sim.base_url.upper(), sim.base_url), params={"$filter": _flt(start, end), "$format": "json", "$top": "10"},
        headers=auth(tok))
    assert r.status_code == 200
    assert '"\\/Date(' in r.text  # escaped slashes on the wire
    d = r.json()["d"]
    assert len(d["results"]) == 10
    row = d["results"][0]
    assert row["__metadata"]["type"] == "TenantReporting.MessageTrace"
    assert re.fullmatch(r"/Date\(\d+\)/", row["Received"]) and re.fullmatch(r"/Date\(\d+\)/", row["StartDate"])
    assert "$skiptoken=10" in d["__next"] and d["__next"].startswith("https://")


def test_filters_and_guid_literal(sim: Simulator, client: httpx.Client, tok: str) -> None:
    start, end = window(sim, 1, 24)
    truth = sim.ground_truth(sim.tenant("contoso").tenant_id, api="rws", start=start, end=end)
    sample = next(r for r in truth.values() if "'" not in r["RecipientAddress"] and r["Status"] == "Delivered")
    by_id = rws_pages(client, sim, tok, {"$filter": _flt(
        start, end, f"MessageTraceId eq guid'{sample['MessageTraceId']}'")})
    assert {r["MessageTraceId"] for p in by_id for r in p} == {sample["MessageTraceId"]}
    both = rws_pages(client, sim, tok, {"$filter": _flt(
        start, end, f"RecipientAddress eq '{sample['RecipientAddress']}' and Status eq 'Delivered'")})
    rows = [r for p in both for r in p]
    assert rows and all(r["RecipientAddress"] == sample["RecipientAddress"] and r["Status"] == "Delivered"
                        for r in rows)
    assert {keys_of(rows, graph=False)[0]} <= set(truth)


@pytest.mark.parametrize(("flt", "fragment"), [
    ("StartDate eq datetime'{s}'", "you must also supply StartDate"),
    ("StartDate eq datetime'{old}' and EndDate eq datetime'{e}'", "can't be older than 10 days"),
    ("StartDate eq datetime'{s}' and EndDate eq datetime'{e}' or Status eq 'Failed'", "not supported"),
    ("Colour eq 'red'", "No property 'Colour'"),
    # WCF Data Services checks literal types and the case of property names
    ("StartDate eq '{s}' and EndDate eq '{e}'", "operand types 'System.DateTime' and 'System.String'"),
    ("startdate eq datetime'{s}' and enddate eq datetime'{e}'", "No property 'startdate'"),
])
def test_bad_requests(sim: Simulator, client: httpx.Client, tok: str, flt: str, fragment: str) -> None:
    start, end = window(sim, 1, 3)
    old, _ = window(sim, 11, 1)
    r = client.get(f"{sim.rws_url}/MessageTrace", params={"$filter": flt.format(s=z(start), e=z(end), old=z(old))},
                   headers={**auth(tok), "Accept": "application/json"})
    assert r.status_code == 400
    assert fragment in r.json()["odata.error"]["message"]["value"]


def test_no_role_403_exact_body_and_retired(sim: Simulator, client: httpx.Client) -> None:
    nrole = token(client, sim, sim.tenant("northwind"), scope=RWS_SCOPE)
    r = client.get(f"{sim.rws_url}/MessageTrace", headers={**auth(nrole), "Accept": "application/json"})
    assert r.status_code == 403
    assert r.content == b'{"ErrorCode":"","Message":"No permission to access the report for the organization ."}'
    retired_tenant = sim.tenant("adatum")
    cert_tok = _cert_token(client, sim, retired_tenant)
    gone = client.get(f"{sim.rws_url}/MessageTrace", headers={**auth(cert_tok), "Accept": "application/json"})
    assert gone.status_code == 404
    assert "MessageTrace" in gone.json()["odata.error"]["message"]["value"]
    bad = client.get(f"{sim.rws_url}/MessageTrace", headers={"Authorization": "Bearer x.y.z"})
    assert bad.status_code == 401 and "invalid_token" in bad.headers["WWW-Authenticate"]
    for answer in (r, gone, bad):  # every answer, refusals too, names the service version
        assert answer.headers["X-RWS-Version"] == "2013-V1" and answer.headers["request-id"]


def _cert_token(client: httpx.Client, sim: Simulator, tenant: object) -> str:
    """adatum's secret is expired: use its certificate."""
    import time
    import uuid

    import jwt

    t = tenant
    now = int(time.time())
    assertion = jwt.encode({"aud": f"{sim.login_url}/{t.tenant_id}/oauth2/token", "iss": t.client_id,  # type: ignore[attr-defined]
                            "sub": t.client_id, "jti": str(uuid.uuid4()), "exp": now + 300},  # type: ignore[attr-defined]
                           Path(t.key_pem).read_bytes(), algorithm="RS256")  # type: ignore[attr-defined]
    r = client.post(f"{sim.login_url}/{t.tenant_id}/oauth2/token", data={  # type: ignore[attr-defined]
        "grant_type": "client_credentials", "client_id": t.client_id,  # type: ignore[attr-defined]
        "resource": "https://outlook.office365.com", "client_assertion": assertion,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"})
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


def test_message_trace_detail(sim: Simulator, client: httpx.Client, tok: str) -> None:
    start, end = window(sim, 1, 6)
    truth = sim.ground_truth(sim.tenant("contoso").tenant_id, api="rws", start=start, end=end)
    row = next(r for r in truth.values() if r["Status"] == "Delivered" and "'" not in r["RecipientAddress"])
    flt = (f"MessageTraceId eq guid'{row['MessageTraceId']}' and RecipientAddress eq '{row['RecipientAddress']}' "
           f"and StartDate eq datetime'{z(start)}' and EndDate eq datetime'{z(sim.clock.now())}'")
    r = client.get(f"{sim.rws_url}/MessageTraceDetail", params={"$filter": flt},
                   headers={**auth(tok), "Accept": "application/json"})
    assert r.status_code == 200, r.text
    events = r.json()["value"]
    assert events[0]["Event"] == "Receive" and events[-1]["Event"] in ("Deliver", "Send external")
    assert all(e["MessageTraceId"] == row["MessageTraceId"] for e in events)
    verbose = client.get(f"{sim.rws_url}/messagetracedetail", params={"$filter": flt, "$format": "json"},
                         headers=auth(tok))
    assert json.loads(verbose.text)["d"]["results"][0]["Date"].startswith("/Date(")


def test_atom_feed_when_no_json_is_asked_for(sim: Simulator, client: httpx.Client, tok: str) -> None:
    import xml.etree.ElementTree as ET

    ns = {"a": "http://www.w3.org/2005/Atom", "m": "http://schemas.microsoft.com/ado/2007/08/dataservices/metadata",
          "d": "http://schemas.microsoft.com/ado/2007/08/dataservices"}
    start, end = window(sim, 1, 8)
    url: str | None = f"{sim.rws_url}/MessageTrace?$top=150&$filter=" + _flt(start, end)
    keys = []
    while url:
        r = client.get(url, headers=auth(tok))
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/atom+xml")
        feed = ET.fromstring(r.content)
        for props in feed.iterfind("a:entry/a:content/m:properties", ns):
            tid = props.findtext("d:MessageTraceId", namespaces=ns)
            rcpt = props.findtext("d:RecipientAddress", namespaces=ns)
            keys.append(keys_of([{"MessageTraceId": tid, "RecipientAddress": rcpt}], graph=False)[0])
        nxt = feed.find("a:link[@rel='next']", ns)
        url = nxt.get("href") if nxt is not None else None
    truth = sim.ground_truth(sim.tenant("contoso").tenant_id, api="rws", start=start, end=end)
    assert len(keys) == len(set(keys)) and set(keys) == set(truth) and len(keys) > 150
    err = client.get(f"{sim.rws_url}/MessageTrace", params={"$filter": "Colour eq 'red'"}, headers=auth(tok))
    assert err.status_code == 400 and b"<m:error" in err.content


@pytest.mark.parametrize("form", ["z", "offset_micro", "naive", "seven_digits"])
def test_datetime_literal_forms(sim: Simulator, client: httpx.Client, tok: str, form: str) -> None:
    """Checklist 2: ``datetime'...'`` with Z, an offset (``+`` percent-encoded), no zone, 7 digits."""
    start, end = window(sim, 1, 3)
    text = {"z": z, "offset_micro": lambda d: d.isoformat(timespec="microseconds"),
            "naive": lambda d: d.strftime("%Y-%m-%dT%H:%M:%S"),
            "seven_digits": lambda d: d.strftime("%Y-%m-%dT%H:%M:%S.0000000Z")}[form]
    assert form != "offset_micro" or "+00:00" in text(start)
    flt = f"StartDate eq datetime'{text(start)}' and EndDate eq datetime'{text(end)}'"
    rows = [r for p in rws_pages(client, sim, tok, {"$filter": flt}) for r in p]
    truth = sim.ground_truth(sim.tenant("contoso").tenant_id, api="rws", start=start, end=end)
    assert truth and set(keys_of(rows, graph=False)) == set(truth)
    assert rows[0]["StartDate"] == z(start) and rows[0]["EndDate"] == z(end)


@pytest.mark.parametrize("field", ["SenderAddress", "MessageId", "FromIP", "ToIP", "Subject"])
def test_more_eq_filters(sim: Simulator, client: httpx.Client, tok: str, field: str) -> None:
    start, end = window(sim, 1, 24)
    truth = sim.ground_truth(sim.tenant("contoso").tenant_id, api="rws", start=start, end=end)
    sample = next(r for r in truth.values() if r["FromIP"] and r["ToIP"] and r["MessageId"] and r["Subject"])
    value = sample[field].replace("'", "''")
    rows = [r for p in rws_pages(client, sim, tok, {"$filter": _flt(start, end, f"{field} eq '{value}'")}) for r in p]
    want = {k for k, r in truth.items() if (r[field] or "").lower() == sample[field].lower()}
    assert want and set(keys_of(rows, graph=False)) == want


def test_newest_first_ties_by_recipient(sim: Simulator, client: httpx.Client, tok: str) -> None:
    from exotrace.simulator.odata import parse_datetime

    start, end = window(sim, 1, 30)
    rows = [r for p in rws_pages(client, sim, tok, {"$filter": _flt(start, end), "$top": "200"}) for r in p]
    order = [(-parse_datetime(r["Received"]), r["RecipientAddress"].lower()) for r in rows]
    assert len(rows) > 200 and order == sorted(order)
    assert any(a[0] == b[0] for a, b in zip(order, order[1:], strict=False)), "expected multi-recipient ties"


def test_no_dates_means_the_last_48_hours_pinned_in_the_next_links(sim: Simulator, client: httpx.Client,
                                                                   tok: str) -> None:
    from exotrace.simulator.data import to_us
    from exotrace.simulator.odata import parse_datetime

    now = to_us(sim.clock.now())
    light = client.get(f"{sim.rws_url}/MessageTrace", params={"$top": "50"},
                       headers={**auth(tok), "Accept": "application/json"}).json()
    first = light["value"][0]
    start, end = parse_datetime(first["StartDate"]), parse_datetime(first["EndDate"])
    assert end - start == 48 * 3600 * 10**6 and abs(end - now) < 60 * 10**6
    assert all(start <= parse_datetime(r["Received"]) <= end for r in light["value"])
    # the continuation carries the window, so later pages do not slide with the clock
    assert f"DateTime'{first['StartDate']}'".replace(":", "%3A") in light["odata.nextLink"]
    verbose = client.get(f"{sim.rws_url}/MessageTrace", params={"$top": "50", "$format": "json"},
                         headers=auth(tok)).json()["d"]
    nxt = httpx.URL(verbose["__next"])
    assert "StartDate eq DateTime'" in nxt.params["$filter"] and nxt.params["$skiptoken"] == "50"


def test_select_returns_only_the_chosen_fields_in_service_order(sim: Simulator, client: httpx.Client,
                                                                tok: str) -> None:
    from sim_helpers import rws_page

    start, end = window(sim, 1, 20)
    params = {"$filter": _flt(start, end), "$select": "Size,SenderAddress,RecipientAddress", "$top": "50"}
    url = f"{sim.rws_url}/MessageTrace"
    light = client.get(url, params=params, headers={**auth(tok), "Accept": "application/json"})
    rows, nxt = rws_page(light, "light")
    assert rows and all(list(r) == ["SenderAddress", "RecipientAddress", "Size"] for r in rows)
    assert nxt and "$select=SenderAddress,RecipientAddress,Size" in nxt
    assert all(list(r) == ["SenderAddress", "RecipientAddress", "Size"] for r in rws_page(
        client.get(nxt, headers={**auth(tok), "Accept": "application/json"}), "light")[0])
    verbose = client.get(url, params={**params, "$format": "json"}, headers=auth(tok)).json()["d"]
    assert list(verbose["results"][0]) == ["__metadata", "SenderAddress", "RecipientAddress", "Size"]
    atom_rows, _ = rws_page(client.get(url, params=params, headers=auth(tok)), "atom")
    assert set(atom_rows[0]) == {"SenderAddress", "RecipientAddress", "Size"}
    star = client.get(url, params={**params, "$select": "*"}, headers={**auth(tok), "Accept": "application/json"})
    assert len(star.json()["value"][0]) == 14
    bad = client.get(url, params={**params, "$select": "Colour"}, headers={**auth(tok), "Accept": "application/json"})
    assert bad.status_code == 400 and "No property 'Colour'" in bad.json()["odata.error"]["message"]["value"]


def test_organization_received_and_size_filters(sim: Simulator, client: httpx.Client, tok: str) -> None:
    start, end = window(sim, 1, 24)
    truth = sim.ground_truth(sim.tenant("contoso").tenant_id, api="rws", start=start, end=end)

    def keys(extra: str) -> set[str]:
        pages = rws_pages(client, sim, tok, {"$filter": _flt(start, end, extra)})
        return set(keys_of([r for p in pages for r in p], graph=False))

    assert keys("Organization eq 'contoso.onmicrosoft.com'") == set(truth)
    assert keys("Organization eq 'fabrikam.onmicrosoft.com'") == set()
    from collections import Counter

    per_message = Counter(r["MessageTraceId"] for r in truth.values())
    group = next(r for r in truth.values() if per_message[r["MessageTraceId"]] > 2)
    received = group["Received"]
    same_time = {k for k, r in truth.items() if r["Received"] == received}
    assert len(same_time) > 2 and keys(f"Received eq datetime'{received}'") == same_time
    size = group["Size"]
    assert keys(f"Size eq {size}") == {k for k, r in truth.items() if r["Size"] == size}
    r = client.get(f"{sim.rws_url}/MessageTrace", params={"$filter": _flt(start, end, "Size eq 'big'")},
                   headers={**auth(tok), "Accept": "application/json"})
    assert r.status_code == 400 and "Edm.Int32" in r.text


def test_verbose_json_pages_to_the_end_through_next(sim: Simulator, client: httpx.Client, tok: str) -> None:
    start, end = window(sim, 1, 40)
    url: str | None = f"{sim.rws_url}/MessageTrace"
    params: dict[str, str] | None = {"$filter": _flt(start, end), "$format": "json", "$top": "250"}
    keys, indexes, pages = [], [], 0
    while url:
        r = client.get(url, params=params, headers=auth(tok))
        assert r.status_code == 200
        d = r.json()["d"]
        keys += keys_of(d["results"], graph=False)
        indexes += [x["Index"] for x in d["results"]]
        assert all(x["__metadata"]["uri"].endswith(f"MessageTrace({x['Index']})") for x in d["results"])
        url, params, pages = d.get("__next"), None, pages + 1
        assert url is None or "$format=json" in url
    truth = sim.ground_truth(sim.tenant("contoso").tenant_id, api="rws", start=start, end=end)
    assert pages >= 3 and len(keys) == len(set(keys)) and set(keys) == set(truth)
    assert indexes == list(range(len(keys)))


def test_status_changes_and_late_rows_show_through_rws() -> None:
    from datetime import timedelta

    from sim_helpers import START

    from exotrace.simulator import SimulatorConfig, start_simulator

    with start_simulator(SimulatorConfig(seed=9, start=START, rows_per_day=2000, history_days=5)) as s:
        with httpx.Client(verify=s.ssl_context()) as c:
            tid = s.tenants[0].tenant_id
            end = s.clock.now().replace(microsecond=0)
            start = end - timedelta(hours=3)

            def read() -> dict[str, str]:
                t = token(c, s, s.tenants[0], scope=RWS_SCOPE)
                rows = [r for p in rws_pages(c, s, t, {"$filter": _flt(start, end), "$top": "500"}) for r in p]
                return {k: r["Status"] for k, r in zip(keys_of(rows, graph=False), rows, strict=True)}

            first = read()
            assert set(first) == set(s.ground_truth(tid, api="rws", start=start, end=end))
            assert "GettingStatus" in first.values()
            s.clock.advance(2 * 86400)
            second = read()
            truth = s.ground_truth(tid, api="rws", start=start, end=end)
            assert set(first) < set(second) == set(truth), "late rows must appear later"
            assert second == {k: r["Status"] for k, r in truth.items()}
            assert "GettingStatus" not in second.values()
            assert any(first[k] != second[k] for k in first)


@pytest.mark.parametrize(("how", "ok"), [("header", True), ("param", True), ("header", False), ("param", False)])
def test_rws_version_header_and_parameter(sim: Simulator, client: httpx.Client, tok: str, how: str, ok: bool) -> None:
    version = "2013-V1" if ok else "2099-V9"
    params = {"rws-version": version} if how == "param" else {}
    headers = {**auth(tok), "Accept": "application/json", **({"X-RWS-Version": version} if how == "header" else {})}
    r = client.get(f"{sim.rws_url}/MessageTrace", params={**params, "$top": "1"}, headers=headers)
    assert r.headers["X-RWS-Version"] == "2013-V1"
    if ok:
        assert r.status_code == 200
    else:
        assert r.status_code == 400
        assert b"<Message>The version specified in the request is unsupported.</Message>" in r.content


def test_ground_truth_is_exactly_what_each_api_serves(sim: Simulator, client: httpx.Client) -> None:
    """Ground truth follows the API's limits: RWS serves 10 days, and a tenant an API refuses has no rows
    through it (Graph: no permission, no service principal; RWS: no role, retired)."""
    from datetime import timedelta

    from exotrace.simulator.odata import parse_datetime

    at = sim.clock.now()
    tid = sim.tenant("contoso").tenant_id
    rws_truth = sim.ground_truth(tid, at=at, api="rws")
    oldest = parse_datetime(z(at - timedelta(days=10))) - 10**6
    assert rws_truth and min(parse_datetime(r["Received"]) for r in rws_truth.values()) >= oldest
    graph_old = sim.ground_truth(tid, at=at, start=at - timedelta(days=12), end=at - timedelta(days=10, hours=1))
    assert graph_old and not set(graph_old) & set(rws_truth)  # Graph serves what RWS no longer does
    # RWS itself refuses what the truth leaves out
    tok = token(client, sim, sim.tenant("contoso"), scope=RWS_SCOPE)
    flt = _flt(at - timedelta(days=11), at - timedelta(days=9))
    old = client.get(f"{sim.rws_url}/MessageTrace", params={"$filter": flt},
                     headers={**auth(tok), "Accept": "application/json"})
    assert old.status_code == 400
    expected = {"contoso": (True, True), "fabrikam": (False, True), "northwind": (False, False),
                "adatum": (True, False)}
    for name, (graph_ok, rws_ok) in expected.items():
        t = sim.tenant(name)
        assert (sim.serves(name, "graph"), sim.serves(name, "rws")) == (graph_ok, rws_ok)
        for api, ok in (("graph", graph_ok), ("rws", rws_ok)):
            assert (next(sim.iter_ground_truth(t.tenant_id, api=api), None) is not None) == ok, (name, api)
