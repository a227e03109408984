"""Entra ID (the token service): client credentials with a secret or a certificate, discovery documents.

Access tokens are RS256 JWTs signed by the simulator's key, carrying ``tid``, ``aud``, ``roles`` and an
``exp`` in *simulated* time. ``expires_in`` is reported in wall-clock seconds (lifetime / speed) so
MSAL's cache, which runs on the wall clock, refreshes in time.
"""

from __future__ import annotations

import base64
import math
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import jwt
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from exotrace.simulator.certs import load_cert, thumbprints
from exotrace.simulator.config import SimTenant

if TYPE_CHECKING:
    from exotrace.simulator.app import SimState

GRAPH_RESOURCE = "https://graph.microsoft.com"
RWS_RESOURCE = "https://outlook.office365.com"
#: resource URI or app id -> (api, audience written into tokens)
RESOURCES = {
    GRAPH_RESOURCE: "graph",
    "00000003-0000-0000-c000-000000000000": "graph",
    RWS_RESOURCE: "rws",
    "https://outlook.office.com": "rws",
    "00000002-0000-0ff1-ce00-000000000000": "rws",
}
AUDIENCE = {"graph": GRAPH_RESOURCE, "rws": RWS_RESOURCE}
GRAPH_ROLE = "ExchangeMessageTrace.Read.All"
RWS_ROLE = "ReportingWebService.Read.All"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def wrong_method(state: SimState, method: str) -> JSONResponse:
    """The token endpoint asked with another method than POST (AADSTS900561)."""
    return _error(state, 400, "invalid_request", 900561,
                  f"The endpoint only accepts POST, OPTIONS requests. Received a {method} request.")


def _error(state: SimState, status: int, error: str, code: int, text: str) -> JSONResponse:
    trace_id, corr = str(uuid.uuid4()), str(uuid.uuid4())
    stamp = state.clock.now().strftime("%Y-%m-%d %H:%M:%SZ")
    body = {
        "error": error,
        "error_description": f"AADSTS{code}: {text}\r\nTrace ID: {trace_id}\r\nCorrelation ID: {corr}\r\n"
                             f"Timestamp: {stamp}",
        "error_codes": [code],
        "timestamp": stamp,
        "trace_id": trace_id,
        "correlation_id": corr,
        "error_uri": f"{state.login_url}/error?code={code}",
    }
    state.count("token_errors")
    return JSONResponse(body, status_code=status)


def find_tenant(state: SimState, segment: str) -> SimTenant | None:
    """A tenant by id or by any of its domains."""
    seg = segment.lower()
    for t in state.tenants:
        if seg == t.tenant_id.lower() or seg in t.all_domains():
            return t
    return None


@dataclass
class TokenKey:
    """The simulator's token-signing key."""

    private_key: Any
    kid: str

    def jwk(self) -> dict[str, Any]:
        nums = self.private_key.public_key().public_numbers()

        def b64(n: int) -> str:
            raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
            return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

        return {"kty": "RSA", "use": "sig", "kid": self.kid, "alg": "RS256", "n": b64(nums.n), "e": b64(nums.e)}


def openid_configuration(state: SimState, request: Request, segment: str, v2: bool) -> Response:
    tenant = find_tenant(state, segment)
    if tenant is None:
        return _tenant_not_found(state, segment)
    base = f"{state.login_url}/{tenant.tenant_id}"
    ver = "/v2.0" if v2 else ""
    doc = {
        "token_endpoint": f"{base}/oauth2{ver}/token",
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": f"{state.login_url}/{tenant.tenant_id}/discovery{ver}/keys",
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": f"{state.login_url}/{tenant.tenant_id}/v2.0" if v2 else f"{state.sts_issuer}/{tenant.tenant_id}/",
        "request_uri_parameter_supported": False,
        "authorization_endpoint": f"{base}/oauth2{ver}/authorize",
        "device_authorization_endpoint": f"{base}/oauth2{ver}/devicecode",
        "http_logout_supported": True,
        "frontchannel_logout_supported": True,
        "end_session_endpoint": f"{base}/oauth2{ver}/logout",
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "tid", "roles"],
        "tenant_region_scope": "WW",
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
    }
    return JSONResponse(doc)


def instance_discovery(state: SimState, request: Request) -> Response:
    """``/common/discovery/instance``: what MSAL asks before trusting an authority host."""
    auth_ep = request.query_params.get("authorization_endpoint", "")
    parts = urlsplit(auth_ep)
    segs = [s for s in parts.path.split("/") if s]
    tenant_seg = segs[0] if segs else "common"
    host = urlsplit(state.login_url).netloc
    return JSONResponse({
        "tenant_discovery_endpoint": f"{state.login_url}/{tenant_seg}/v2.0/.well-known/openid-configuration",
        "api-version": "1.1",
        "metadata": [{"preferred_network": host, "preferred_cache": host, "aliases": [host]}],
    })


def jwks(state: SimState) -> Response:
    return JSONResponse({"keys": [state.token_key.jwk()]})


def _tenant_not_found(state: SimState, segment: str) -> JSONResponse:
    return _error(state, 400, "invalid_request", 90002,
                  f"Tenant '{segment}' not found. Check to make sure you have the correct tenant ID and are "
                  "signing into the correct cloud. Check with your subscription administrator, this may happen "
                  "if there are no active subscriptions for the tenant.")


async def token(state: SimState, request: Request, segment: str, v2: bool) -> Response:
    """``POST /{tenant}/oauth2/v2.0/token`` (``scope``) and ``/{tenant}/oauth2/token`` (``resource``)."""
    state.count("token_requests")
    form = {k: v[-1] for k, v in parse_qs((await request.body()).decode("utf-8", "replace"),
                                           keep_blank_values=True).items()}
    tenant = find_tenant(state, segment)
    if tenant is None:
        return _tenant_not_found(state, segment)
    if form.get("grant_type") != "client_credentials":
        return _error(state, 400, "unsupported_grant_type", 70003,
                      "The app requested an unsupported grant type "
                      f"'{form.get('grant_type', '')}'. This simulator supports client_credentials only.")
    client_id = form.get("client_id", "")
    assertion = form.get("client_assertion")
    if not client_id and assertion:
        try:
            client_id = str(jwt.decode(assertion, options={"verify_signature": False}).get("sub", ""))
        except jwt.PyJWTError:
            client_id = ""
    if client_id.lower() != tenant.client_id.lower():
        return _error(state, 400, "unauthorized_client", 700016,
                      f"Application with identifier '{client_id}' was not found in the directory "
                      f"'{tenant.name}'. This can happen if the application has not been installed by the "
                      "administrator of the tenant or consented to by any user in the tenant. You may have "
                      "sent your authentication request to the wrong tenant.")
    # resource
    if v2:
        scope = form.get("scope", "").strip()
        if not scope.endswith("/.default") or " " in scope.replace("offline_access", "").strip():
            return _error(state, 400, "invalid_scope", 1002012,
                          f"The provided value for scope {scope} is not valid. Client credential flows must "
                          "have a scope value with /.default suffixed to the resource identifier "
                          "(application ID URI).")
        resource = scope[: -len("/.default")]
    else:
        resource = form.get("resource", "").strip().rstrip("/")
    api = RESOURCES.get(resource.rstrip("/"))
    if api is None:
        return _error(state, 400, "invalid_resource", 500011,
                      f"The resource principal named {resource} was not found in the tenant named "
                      f"{tenant.name}. This can happen if the application has not been installed by the "
                      "administrator of the tenant or consented to by any user in the tenant.")
    # credentials
    if assertion is not None:
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            return _error(state, 400, "invalid_request", 90058,
                          "The request body must contain the following parameter: 'client_assertion_type'.")
        problem = verify_assertion(state, tenant, assertion)
        if problem:
            code, text = problem
            return _error(state, 401, "invalid_client", code, text)
    else:
        secret = form.get("client_secret")
        if secret is None:
            basic = request.headers.get("authorization", "")
            if basic.lower().startswith("basic "):
                try:
                    secret = base64.b64decode(basic[6:]).decode().partition(":")[2]
                except ValueError:
                    secret = ""
        if not secret:
            return _error(state, 401, "invalid_client", 7000218,
                          "The request body must contain the following parameter: 'client_assertion' or "
                          "'client_secret'.")
        if secret != tenant.client_secret:
            return _error(state, 401, "invalid_client", 7000215,
                          "Invalid client secret provided. Ensure the secret being sent in the request is the "
                          f"client secret value, not the client secret ID, for a secret added to app "
                          f"'{tenant.client_id}'.")
        if tenant.secret_expired:
            return _error(state, 401, "invalid_client", 7000222,
                          f"The provided client secret keys for app '{tenant.client_id}' are expired. Visit the "
                          "Azure portal to create new keys for your app: https://aka.ms/NewClientSecret, or "
                          "consider using certificate credentials for added security: https://aka.ms/certCreds.")
    access, expires_in, now = issue_token(state, tenant, api)
    state.count("tokens_issued")
    if v2:
        return JSONResponse({"token_type": "Bearer", "expires_in": expires_in, "ext_expires_in": expires_in,
                             "access_token": access})
    return JSONResponse({
        "token_type": "Bearer", "expires_in": str(expires_in), "ext_expires_in": str(expires_in),
        "expires_on": str(int(time.time()) + expires_in), "not_before": str(int(time.time()) - 300),
        "resource": AUDIENCE[api], "access_token": access,
    })


def issue_token(state: SimState, tenant: SimTenant, api: str) -> tuple[str, int, datetime]:
    """Mint an access token; returns (jwt, expires_in in wall seconds, simulated issue time)."""
    now = state.clock.now()
    iat = int(now.timestamp())
    lifetime = state.config.token_lifetime
    if "expire" in state.scenarios:
        lifetime = min(lifetime, 300)  # dies long before the expires_in the client was told
    roles: list[str] = []
    if api == "graph" and tenant.graph_permission:
        roles.append(GRAPH_ROLE)
    if api == "rws":
        roles.append(RWS_ROLE)
    claims = {
        "aud": AUDIENCE[api],
        "iss": f"{state.sts_issuer}/{tenant.tenant_id}/",
        "iat": iat, "nbf": iat - 300, "exp": iat + lifetime,
        "appid": tenant.client_id, "azp": tenant.client_id, "oid": tenant.client_id, "sub": tenant.client_id,
        "idtyp": "app", "tid": tenant.tenant_id, "roles": roles, "ver": "1.0",
        "uti": uuid.uuid4().hex[:22],
    }
    token_str = jwt.encode(claims, state.token_key.private_key, algorithm="RS256",
                           headers={"kid": state.token_key.kid, "x5t": state.token_key.kid})
    expires_in = max(1, math.floor(state.config.token_lifetime / state.clock.speed))
    return token_str, expires_in, now


def verify_assertion(state: SimState, tenant: SimTenant, assertion: str) -> tuple[int, str] | None:
    """Check a client_assertion against the tenant's certificate; returns (AADSTS code, text) on failure."""
    cert = state.client_certs.get(tenant.name)
    if cert is None:
        try:
            cert = state.client_certs[tenant.name] = load_cert(tenant.cert_pem)
        except (OSError, ValueError):
            return 700027, "Client assertion failed signature validation. (no certificate registered)"
    try:
        header = jwt.get_unverified_header(assertion)
    except jwt.PyJWTError:
        return 700025, "Client is public so neither 'client_assertion' nor 'client_secret' should be presented."
    sha1, sha256 = thumbprints(cert)

    def b64(b: bytes) -> str:
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

    x5t, x5t256 = header.get("x5t"), header.get("x5t#S256")
    if (x5t and x5t.rstrip("=") != b64(sha1)) or (x5t256 and x5t256.rstrip("=") != b64(sha256)):
        return 700027, ("Client assertion contains an invalid signature. [Reason - The key was not found., "
                        f"Thumbprint of key used by client: '{x5t or x5t256}']")
    try:
        claims = jwt.decode(assertion, cert.public_key(), algorithms=["RS256", "PS256"],
                            options={"verify_aud": False, "verify_exp": False, "verify_nbf": False,
                                     "verify_iat": False})
    except jwt.PyJWTError:
        return 700027, "Client assertion failed signature validation."
    if str(claims.get("iss", "")).lower() != tenant.client_id or str(claims.get("sub", "")).lower() != tenant.client_id:
        return 700021, "Client assertion application identifier doesn't match 'client_id' parameter."
    # The assertion is made on the client's wall clock, so check it against the wall clock.
    now = time.time()
    if "exp" not in claims or float(claims["exp"]) < now - 300 or float(claims.get("nbf", 0)) > now + 300:
        return 700024, "Client assertion is not within its valid time range."
    aud = claims.get("aud")
    auds = aud if isinstance(aud, list) else [aud]
    if not any(isinstance(a, str) and _on_this_host(state, a)
               and _same_endpoint(state, urlsplit(a).path.lower(), tenant) for a in auds):
        return 50027, f"JWT token is invalid or malformed: the audience {aud!r} is not this token endpoint."
    return None


def _on_this_host(state: SimState, audience: str) -> bool:
    """The audience names this token service's scheme, host and port (Entra ID checks the whole URL)."""
    mine, got = urlsplit(state.login_url), urlsplit(audience)
    return (got.scheme.lower(), got.netloc.lower()) == (mine.scheme.lower(), mine.netloc.lower())


def _same_endpoint(state: SimState, got: str, tenant: SimTenant) -> bool:
    """Audience path ``/{tenant}/oauth2[/v2.0]/token`` naming this tenant (by id or domain)."""
    segs = [s for s in got.split("/") if s]
    if len(segs) < 3 or segs[1:] not in (["oauth2", "token"], ["oauth2", "v2.0", "token"]):
        return False
    found = find_tenant(state, segs[0])
    return found is not None and found.tenant_id == tenant.tenant_id


@dataclass
class Caller:
    """A validated bearer token."""

    tenant: SimTenant
    api: str
    roles: list[str]


def check_bearer(state: SimState, request: Request, api: str) -> Caller | tuple[int, str, str]:
    """Validate ``Authorization: Bearer``; returns the caller or (status, code, message)."""
    auth = request.headers.get("authorization", "")
    if not auth.lower().startswith("bearer ") or not auth[7:].strip():
        return 401, "InvalidAuthenticationToken", "Access token is empty."
    raw = auth[7:].strip()
    try:
        claims = jwt.decode(raw, state.token_key.private_key.public_key(), algorithms=["RS256"],
                            audience=[AUDIENCE[api], AUDIENCE[api] + "/"],
                            options={"verify_exp": False, "verify_nbf": False, "verify_iat": False})
    except jwt.InvalidAudienceError:
        return 401, "InvalidAuthenticationToken", "Access token validation failure. Invalid audience."
    except jwt.PyJWTError:
        return 401, "InvalidAuthenticationToken", "Access token validation failure."
    now = state.clock.now().timestamp()
    if float(claims.get("exp", 0)) <= now:
        state.count("expired_tokens_rejected")
        return 401, "InvalidAuthenticationToken", "Lifetime validation failed, the token is expired."
    tenant = find_tenant(state, str(claims.get("tid", "")))
    if tenant is None:
        return 401, "InvalidAuthenticationToken", "Access token validation failure. Unknown tenant."
    return Caller(tenant=tenant, api=api, roles=list(claims.get("roles") or []))
