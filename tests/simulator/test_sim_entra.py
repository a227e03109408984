"""Entra ID: token endpoints, errors in Entra's shape, discovery, and MSAL as a real client."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx
import jwt
import msal
import pytest
import requests
from sim_helpers import GRAPH_SCOPE, RWS_SCOPE

from exotrace.simulator.server import Simulator


def _post(client: httpx.Client, sim: Simulator, tenant_seg: str, data: dict[str, str], v2: bool = True
          ) -> httpx.Response:
    path = "oauth2/v2.0/token" if v2 else "oauth2/token"
    return client.post(f"{sim.login_url}/{tenant_seg}/{path}", data={"grant_type": "client_credentials", **data})


def _claims(tok: str) -> dict:
    return jwt.decode(tok, options={"verify_signature": False})


def test_secret_v2_token_carries_tid_roles_aud_exp(sim: Simulator, client: httpx.Client) -> None:
    t = sim.tenant("contoso")
    r = _post(client, sim, t.tenant_id, {"client_id": t.client_id, "client_secret": t.client_secret,
                                         "scope": GRAPH_SCOPE})
    assert r.status_code == 200
    body = r.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
    claims = _claims(body["access_token"])
    assert jwt.get_unverified_header(body["access_token"])["alg"] == "RS256"
    assert claims["tid"] == t.tenant_id
    assert claims["aud"] == "https://graph.microsoft.com"
    assert claims["roles"] == ["ExchangeMessageTrace.Read.All"]
    assert claims["exp"] - claims["iat"] == 3600
    assert claims["iat"] == pytest.approx(sim.clock.now().timestamp(), abs=60)


def test_v1_resource_token_for_rws_by_domain(sim: Simulator, client: httpx.Client) -> None:
    t = sim.tenant("contoso")
    r = _post(client, sim, "contoso.onmicrosoft.com", {"client_id": t.client_id, "client_secret": t.client_secret,
                                                       "resource": "https://outlook.office365.com"}, v2=False)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["expires_in"] == "3600" and body["resource"] == "https://outlook.office365.com"
    assert _claims(body["access_token"])["roles"] == ["ReportingWebService.Read.All"]


def test_tenant_without_permission_gets_no_role(sim: Simulator, client: httpx.Client) -> None:
    t = sim.tenant("fabrikam")
    r = _post(client, sim, t.tenant_id, {"client_id": t.client_id, "client_secret": t.client_secret,
                                         "scope": GRAPH_SCOPE})
    assert _claims(r.json()["access_token"])["roles"] == []


@pytest.mark.parametrize(("case", "status", "error", "code"), [
    ("bad_secret", 401, "invalid_client", 7000215),
    ("expired_secret", 401, "invalid_client", 7000222),
    ("unknown_app", 400, "unauthorized_client", 700016),
    ("unknown_tenant", 400, "invalid_request", 90002),
    ("bad_scope", 400, "invalid_scope", 1002012),
    ("unknown_resource", 400, "invalid_resource", 500011),
])
def test_errors_in_entra_shape(sim: Simulator, client: httpx.Client, case: str, status: int, error: str,
                               code: int) -> None:
    t = sim.tenant("contoso")
    seg, data = t.tenant_id, {"client_id": t.client_id, "client_secret": t.client_secret, "scope": GRAPH_SCOPE}
    if case == "bad_secret":
        data["client_secret"] = "nope"
    elif case == "expired_secret":
        a = sim.tenant("adatum")
        seg, data["client_id"], data["client_secret"] = a.tenant_id, a.client_id, a.client_secret
    elif case == "unknown_app":
        data["client_id"] = str(uuid.uuid4())
    elif case == "unknown_tenant":
        seg = str(uuid.uuid4())
    elif case == "bad_scope":
        data["scope"] = "https://graph.microsoft.com/ExchangeMessageTrace.Read.All"
    elif case == "unknown_resource":
        data["scope"] = "https://example.invalid/.default"
    r = _post(client, sim, seg, data)
    assert r.status_code == status
    body = r.json()
    assert body["error"] == error
    assert body["error_codes"] == [code]
    assert body["error_description"].startswith(f"AADSTS{code}: ")
    assert "Trace ID: " in body["error_description"] and "Correlation ID: " in body["error_description"]
    assert body["trace_id"] and body["correlation_id"] and body["timestamp"]


def _assertion(sim: Simulator, tenant_seg: str, client_id: str, key_pem: bytes, aud: str | None = None,
               exp_delta: int = 600) -> str:
    now = int(time.time())
    return jwt.encode({"aud": aud or f"{sim.login_url}/{tenant_seg}/oauth2/v2.0/token", "iss": client_id,
                       "sub": client_id, "jti": str(uuid.uuid4()), "nbf": now - 10, "exp": now + exp_delta},
                      key_pem, algorithm="RS256")


def test_client_assertion_verified_against_registered_cert(sim: Simulator, client: httpx.Client) -> None:
    t = sim.tenant("contoso")
    key = Path(t.key_pem).read_bytes()
    other = Path(sim.tenant("fabrikam").key_pem).read_bytes()
    base = {"client_id": t.client_id, "scope": RWS_SCOPE,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}
    ok = _post(client, sim, t.tenant_id, {**base, "client_assertion": _assertion(sim, t.tenant_id, t.client_id, key)})
    assert ok.status_code == 200, ok.text
    assert _claims(ok.json()["access_token"])["aud"] == "https://outlook.office365.com"
    wrong_key = _post(client, sim, t.tenant_id,
                      {**base, "client_assertion": _assertion(sim, t.tenant_id, t.client_id, other)})
    assert wrong_key.status_code == 401 and wrong_key.json()["error_codes"] == [700027]
    expired = _post(client, sim, t.tenant_id, {
        **base, "client_assertion": _assertion(sim, t.tenant_id, t.client_id, key, exp_delta=-3600)})
    assert expired.status_code == 401 and expired.json()["error_codes"] == [700024]
    wrong_aud = _post(client, sim, t.tenant_id, {
        **base, "client_assertion": _assertion(sim, t.tenant_id, t.client_id, key, aud="https://elsewhere/x")})
    assert wrong_aud.status_code == 401 and wrong_aud.json()["error"] == "invalid_client"
    # the right path on another host is another token service: Entra ID checks the whole URL
    other_host = f"https://login.microsoftonline.com/{t.tenant_id}/oauth2/v2.0/token"
    elsewhere = _post(client, sim, t.tenant_id, {
        **base, "client_assertion": _assertion(sim, t.tenant_id, t.client_id, key, aud=other_host)})
    assert elsewhere.status_code == 401 and elsewhere.json()["error_codes"] == [50027]


def test_discovery_documents(sim: Simulator, client: httpx.Client) -> None:
    t = sim.tenant("contoso")
    v2 = client.get(f"{sim.login_url}/{t.tenant_id}/v2.0/.well-known/openid-configuration").json()
    assert v2["token_endpoint"] == f"{sim.login_url}/{t.tenant_id}/oauth2/v2.0/token"
    v1 = client.get(f"{sim.login_url}/contoso.onmicrosoft.com/.well-known/openid-configuration").json()
    assert v1["token_endpoint"] == f"{sim.login_url}/{t.tenant_id}/oauth2/token"
    keys = client.get(v2["jwks_uri"]).json()["keys"]
    assert keys[0]["kty"] == "RSA"
    inst = client.get(f"{sim.login_url}/common/discovery/instance", params={
        "api-version": "1.0", "authorization_endpoint": f"{sim.login_url}/{t.tenant_id}/oauth2/v2.0/authorize"})
    assert inst.json()["tenant_discovery_endpoint"] == (
        f"{sim.login_url}/{t.tenant_id}/v2.0/.well-known/openid-configuration")
    missing = client.get(f"{sim.login_url}/{uuid.uuid4()}/v2.0/.well-known/openid-configuration")
    assert missing.status_code == 400 and missing.json()["error_codes"] == [90002]


def _msal_app(sim: Simulator, credential: object, discovery: object) -> msal.ConfidentialClientApplication:
    session = requests.Session()
    session.verify = sim.ca_file
    session.trust_env = False  # else REQUESTS_CA_BUNDLE from the environment overrides session.verify
    t = sim.tenant("contoso")
    return msal.ConfidentialClientApplication(
        t.client_id, client_credential=credential, authority=f"{sim.login_url}/{t.tenant_id}",
        http_client=session, instance_discovery=discovery)


@pytest.mark.parametrize("discovery", ["url", False])
def test_msal_with_secret(sim: Simulator, discovery: object) -> None:
    url = f"{sim.login_url}/common/discovery/instance"
    before = sim.stats().get("requests_instance_discovery", 0)
    openid_before = sim.stats().get("requests_openid", 0)
    app = _msal_app(sim, sim.tenant("contoso").client_secret, url if discovery == "url" else False)
    result = app.acquire_token_for_client(scopes=[GRAPH_SCOPE])
    assert "access_token" in result, result
    assert _claims(result["access_token"])["tid"] == sim.tenant("contoso").tenant_id
    # cached: a second call does not hit the token endpoint
    again = app.acquire_token_for_client(scopes=[GRAPH_SCOPE])
    assert again["token_source"] == "cache"
    asked = sim.stats().get("requests_instance_discovery", 0) - before
    assert asked == (1 if discovery == "url" else 0)
    assert sim.stats().get("requests_openid", 0) - openid_before == 1  # MSAL read the OpenID metadata first


@pytest.mark.parametrize("style", ["public_certificate", "sha1_thumbprint"])
def test_msal_with_certificate(sim: Simulator, style: str) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    t = sim.tenant("contoso")
    cred: dict[str, str] = {"private_key": Path(t.key_pem).read_text()}
    if style == "public_certificate":
        cred["public_certificate"] = Path(t.cert_pem).read_text()
    else:
        cert = x509.load_pem_x509_certificate(Path(t.cert_pem).read_bytes())
        cred["thumbprint"] = cert.fingerprint(hashes.SHA1()).hex().upper()  # noqa: S303 - what MSAL sends
    result = _msal_app(sim, cred, False).acquire_token_for_client(scopes=[RWS_SCOPE])
    assert "access_token" in result, result
    assert _claims(result["access_token"])["roles"] == ["ReportingWebService.Read.All"]


def test_msal_surfaces_entra_errors(sim: Simulator) -> None:
    result = _msal_app(sim, "wrong-secret", False).acquire_token_for_client(scopes=[GRAPH_SCOPE])
    assert result["error"] == "invalid_client"
    assert result["error_description"].startswith("AADSTS7000215")
    assert result.get("correlation_id")


def test_token_lifetime_is_configurable_and_enforced() -> None:
    from sim_helpers import START

    from exotrace.simulator import SimulatorConfig, start_simulator

    with start_simulator(SimulatorConfig(start=START, history_days=1, token_lifetime=120, speed=2.0)) as s:
        t = s.tenants[0]
        with httpx.Client(verify=s.ssl_context()) as c:
            body = _post(c, s, t.tenant_id, {"client_id": t.client_id, "client_secret": t.client_secret,
                                             "scope": GRAPH_SCOPE}).json()
            claims = _claims(body["access_token"])
            assert claims["exp"] - claims["iat"] == 120
            assert body["expires_in"] == 60  # wall-clock seconds at speed 2
            url = f"{s.graph_url}/v1.0/admin/exchange/tracing/messageTraces"
            headers = {"Authorization": f"Bearer {body['access_token']}"}
            assert c.get(url, params={"$top": "1"}, headers=headers).status_code == 200
            s.clock.advance(121)
            late = c.get(url, params={"$top": "1"}, headers=headers)
            assert late.status_code == 401 and "expired" in late.json()["error"]["message"]


def test_the_token_endpoint_answers_other_methods_as_entra_id_does(sim: Simulator, client: httpx.Client) -> None:
    t = sim.tenant("contoso")
    r = client.get(f"{sim.login_url}/{t.tenant_id}/oauth2/v2.0/token")
    assert r.status_code == 400 and r.json()["error"] == "invalid_request" and r.json()["error_codes"] == [900561]
    assert "Received a GET request" in r.json()["error_description"]
