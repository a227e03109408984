"""App-only tokens from Entra ID through MSAL: client secret or certificate, cached and refreshed.

MSAL is synchronous, so it runs in a worker thread. The token is cached here: it is reused until
``refresh_margin`` (5 minutes, at most a fifth of its lifetime) before it expires, then a new one is
acquired; when the API says it is no longer valid (401), :meth:`TokenProvider.invalidate` forces a new
one. ``expires_in`` counts wall-clock seconds (the simulator converts its scaled lifetimes).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import jwt
import msal
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from exotrace.clock import Clock, SystemClock
from exotrace.config import TenantConfig
from exotrace.errors import AuthError, ConfigError, TransientError
from exotrace.net import make_requests_session, redact, register_secret

log = logging.getLogger("exotrace.auth")

__all__ = ["Token", "TokenProvider", "decode_claims", "load_certificate"]


@dataclass(frozen=True, slots=True)
class Token:
    value: str
    #: ``time.monotonic()`` after which the token is refreshed (``expires_in`` is wall-clock seconds).
    refresh_at: float

    def __repr__(self) -> str:
        return f"Token(refresh_at={self.refresh_at:.0f})"


def decode_claims(token: str) -> dict[str, Any]:
    """The JWT payload without verifying the signature (for display and permission checks)."""
    try:
        return dict(jwt.decode(token, options={"verify_signature": False}))
    except jwt.PyJWTError:
        return {}


def load_certificate(path: Any, password: str | None) -> dict[str, str]:
    """PEM (certificate + private key) or PFX/P12 -> MSAL's client_credential dict."""
    data = path.read_bytes()
    pw = password.encode() if password else None
    key_obj: Any
    cert_obj: Any
    try:
        if b"-----BEGIN" in data:
            key_obj = serialization.load_pem_private_key(data, password=pw)
            cert_obj = x509.load_pem_x509_certificate(data)
        else:
            key_obj, cert_obj, _ = pkcs12.load_key_and_certificates(data, pw)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"certificate {path}: cannot read the private key and certificate ({exc}); give a PEM with both "
            f"blocks or a PFX, and certificate_password when it is encrypted", key="certificate") from None
    if key_obj is None or cert_obj is None:
        raise ConfigError(f"certificate {path}: needs both the private key and the certificate",
                          key="certificate")
    der = cert_obj.public_bytes(serialization.Encoding.DER)
    key_pem = key_obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode()
    register_secret(key_pem)
    return {
        "private_key": key_pem,
        "thumbprint": hashlib.sha1(der).hexdigest().upper(),  # noqa: S324 - x5t is defined as SHA-1
        "public_certificate": cert_obj.public_bytes(serialization.Encoding.PEM).decode(),
    }


class TokenProvider:
    """Tokens for one tenant and one scope."""

    def __init__(self, tenant: TenantConfig, clock: Clock | None = None, *,
                 refresh_margin: timedelta = timedelta(minutes=5),
                 session: requests.Session | None = None) -> None:
        self.tenant = tenant
        self.clock = clock or SystemClock()
        self.refresh_margin = refresh_margin
        self._session = session or make_requests_session(ca_bundle=tenant.ca_bundle, proxy=tenant.proxy)
        self._app: msal.ConfidentialClientApplication | None = None
        self._token: Token | None = None
        self._lock = asyncio.Lock()
        self.acquired = 0

    def _credential(self) -> Any:
        t = self.tenant
        if t.client_secret is not None:
            register_secret(t.client_secret.reveal())
            return t.client_secret.reveal()
        assert t.certificate is not None
        pw = t.certificate_password.reveal() if t.certificate_password else None
        return load_certificate(t.certificate, pw)

    def _build(self) -> msal.ConfidentialClientApplication:
        try:
            return msal.ConfidentialClientApplication(
                self.tenant.client_id,
                authority=self.tenant.authority,
                client_credential=self._credential(),
                http_client=self._session,
                instance_discovery=False,
                validate_authority=False,
                timeout=60,
            )
        except ValueError as exc:
            raise self._discovery_error(exc) from None
        except requests.RequestException as exc:
            raise TransientError(f"tenant {self.tenant.name}: cannot reach {self.tenant.login_url}: "
                                 f"{redact(exc)}") from None

    def _discovery_error(self, exc: Exception) -> AuthError:
        return AuthError(
            f"tenant {self.tenant.name}: the authority {self.tenant.authority} refused discovery "
            f"({redact(exc)}); check tenant_id and login_url/cloud")

    def _acquire_sync(self) -> dict[str, Any]:
        if self._app is None:
            self._app = self._build()
        cache = self._app.token_cache
        for item in list(cache.search(msal.TokenCache.CredentialType.ACCESS_TOKEN)):
            cache.remove_at(item)
        try:
            return dict(self._app.acquire_token_for_client(scopes=[self.tenant.api_scope]))
        except ValueError as exc:
            self._app = None
            raise self._discovery_error(exc) from None
        except requests.RequestException as exc:
            self._app = None
            raise TransientError(f"tenant {self.tenant.name}: token request failed: {redact(exc)}") from None

    async def token(self) -> str:
        """A valid access token, acquiring or refreshing it when needed."""
        tok = self._token
        if tok is not None and time.monotonic() < tok.refresh_at:
            return tok.value
        async with self._lock:
            tok = self._token
            if tok is not None and time.monotonic() < tok.refresh_at:
                return tok.value
            result = await asyncio.to_thread(self._acquire_sync)
            if "access_token" not in result:
                raise self._token_error(result)
            value = str(result["access_token"])
            register_secret(value)
            lifetime = float(result.get("expires_in") or 3600)
            margin = min(self.refresh_margin.total_seconds(), lifetime * 0.2)
            self._token = Token(value, time.monotonic() + lifetime - margin)
            self.acquired += 1
            log.info("token acquired tenant=%s expires_in=%ss", self.tenant.name, int(lifetime))
            return value

    def invalidate(self) -> None:
        """Forget the cached token (the API said it expired or is invalid)."""
        self._token = None

    def _token_error(self, result: dict[str, Any]) -> Exception:
        err = str(result.get("error", "unknown_error"))
        desc = redact(str(result.get("error_description", "")).split("\r\n")[0].split("\n")[0])
        codes = result.get("error_codes") or []
        fix = _AADSTS_FIX.get(int(codes[0]) if codes else 0, "check tenant_id, client_id and the credential")
        if err in {"temporarily_unavailable", "service_unavailable"} or "AADSTS50196" in desc:
            return TransientError(f"tenant {self.tenant.name}: token service unavailable: {desc}")
        return AuthError(f"tenant {self.tenant.name}: token request refused ({err}): {desc} -> {fix}")

    def close(self) -> None:
        self._session.close()


_AADSTS_FIX = {
    7000215: "the client secret is wrong: create a new secret for the app and update the env:/file: source",
    7000222: "the client secret has expired: create a new secret in Entra ID (App registrations > "
             "Certificates & secrets)",
    700016: "the app (client_id) is not in this tenant: check client_id and tenant_id, and grant admin consent",
    90002: "the tenant does not exist: check tenant_id (and cloud/login_url for sovereign clouds)",
    700027: "the certificate signature was not accepted: upload this certificate to the app registration",
    7000274: "the certificate is not registered on the app: upload it under Certificates & secrets",
}
