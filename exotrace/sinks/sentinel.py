"""Microsoft Sentinel / Azure Monitor sink: the Logs Ingestion API with a DCE, a DCR and a stream.

``POST {endpoint}/dataCollectionRules/{dcr_immutable_id}/streams/{stream}?api-version=2023-01-01`` with a
bearer token for ``https://monitor.azure.com/.default`` (MSAL client credentials), a gzip-compressed JSON
array body, each request under 1 MB before compression. A 204 acknowledges the request. Documents are
projected onto the columns of the custom table (``COLUMNS``; the DCR and table are in docs/sinks.md),
with the whole ECS document in the ``Ecs`` dynamic column.
"""

from __future__ import annotations

import asyncio
import gzip
import time
from collections.abc import Sequence
from typing import Any

import httpx
import orjson

from exotrace.errors import AuthError, TransientError
from exotrace.sinks._common import get_path, post_chunks
from exotrace.sinks._http import check_response, make_client, transport_error
from exotrace.sinks.base import Record, SendResult, Sink
from exotrace.sinks.config import SentinelSinkConfig
from exotrace.timeparse import utcnow_ts

__all__ = ["COLUMNS", "SentinelSink", "project"]

#: Column name -> (Log Analytics type, ECS path). ``TimeGenerated`` is required by custom tables.
COLUMNS: dict[str, tuple[str, str]] = {
    "TimeGenerated": ("datetime", "@timestamp"),
    "MessageTraceId": ("string", "email.local_id"),
    "MessageId": ("string", "email.message_id"),
    "SenderAddress": ("string", "email.from.address"),
    "RecipientAddress": ("string", "email.to.address"),
    "Subject": ("string", "email.subject"),
    "Status": ("string", "microsoft.online_message_trace.Status"),
    "Outcome": ("string", "event.outcome"),
    "Direction": ("string", "email.direction"),
    "FromIP": ("string", "source.ip"),
    "ToIP": ("string", "destination.ip"),
    "Size": ("long", "email.attachments.file.size"),
    "SenderDomain": ("string", "source.domain"),
    "RecipientDomain": ("string", "destination.domain"),
    "SourceCountry": ("string", "source.geo.country_iso_code"),
    "SourceAsn": ("long", "source.as.number"),
    "SourceAsOrganization": ("string", "source.as.organization.name"),
    "Organization": ("string", "organization.name"),
    "EventId": ("string", ""),  # Elastic's fingerprint
    "RowKey": ("string", ""),  # exotrace row key (message trace id | recipient)
    "Ecs": ("dynamic", ""),  # the whole ECS document
}


def project(r: Record) -> bytes:
    """One JSON object with the table's columns (absent values omitted)."""
    doc = r.doc
    row: dict[str, Any] = {}
    for col, (_, path) in COLUMNS.items():
        if path:
            v = get_path(doc, path)
            if v is not None and v != "":
                row[col] = v
    if "TimeGenerated" not in row:  # a pipeline_error document has no @timestamp: the time it was shipped
        row["TimeGenerated"] = utcnow_ts()
    row["EventId"] = r.fingerprint
    row["RowKey"] = r.key
    row["Ecs"] = orjson.Fragment(r.raw)
    return orjson.dumps(row)


class SentinelSink(Sink):
    type = "sentinel"
    config: SentinelSinkConfig

    def __init__(self, config: SentinelSinkConfig) -> None:  # type: ignore[override]
        super().__init__(config)
        c = config
        self.url = (f"{c.endpoint.rstrip('/')}/dataCollectionRules/{c.dcr_immutable_id}/streams/{c.stream}"
                    f"?api-version={c.api_version}")
        self._client: httpx.AsyncClient | None = None
        self._app: Any = None
        self._token = ""
        self._token_expires = 0.0
        self._secret = ""

    async def start(self) -> None:
        self._secret = self.config.client_secret.get()
        self._client = make_client(self.config)

    def _msal_app(self) -> Any:
        """The MSAL app (built on first use: its constructor already talks to the authority)."""
        if self._app is None:
            import msal

            c = self.config
            self._app = msal.ConfidentialClientApplication(
                c.client_id,
                client_credential=self._secret,
                authority=f"{c.authority_host.rstrip('/')}/{c.tenant_id}",
                instance_discovery=c.authority_host.rstrip("/") == "https://login.microsoftonline.com",
                http_client=_session(c.ca_certs or c.verify_certs, c.timeout),
            )
        return self._app

    async def _bearer(self) -> str:
        if self._token and time.monotonic() < self._token_expires - 300:
            return self._token
        try:
            result = await asyncio.to_thread(
                lambda: self._msal_app().acquire_token_for_client(scopes=[self.config.scope]))
        except Exception as exc:  # requests/MSAL network errors
            raise TransientError(f"token request to {self.config.authority_host} failed: "
                                 f"{type(exc).__name__}") from exc
        if "access_token" not in result:
            err = result.get("error", "error")
            desc = str(result.get("error_description", "")).splitlines()[0:1]
            msg = f"token for {self.config.scope}: {err} {' '.join(desc)}".strip()
            if err in ("temporarily_unavailable", "server_error"):
                raise TransientError(msg)
            raise AuthError(msg)
        self._token = result["access_token"]
        self._token_expires = time.monotonic() + float(result.get("expires_in", 3600))
        return self._token

    async def send(self, records: Sequence[Record]) -> SendResult:
        rows = [project(r) for r in records]
        limit = self.config.max_request_bytes
        chunks: list[list[int]] = []
        result = SendResult()
        size = 2
        for i, row in enumerate(rows):
            if len(row) + 2 > limit:
                result.rejected[i] = f"document is {len(row)} bytes, over the {limit}-byte request limit"
                continue
            if chunks and size + len(row) + 1 <= limit:
                chunks[-1].append(i)
                size += len(row) + 1
            else:
                chunks.append([i])
                size = 2 + len(row)

        async def post(idx: list[int]) -> None:
            await self._post(b"[" + b",".join(rows[i] for i in idx) + b"]")

        sent = await post_chunks(records, chunks, post) if chunks else SendResult()
        sent.rejected.update(result.rejected)
        return sent

    async def _post(self, body: bytes) -> None:
        assert self._client is not None, "start() first"
        token = await self._bearer()
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json",
                   "Content-Encoding": "gzip"}
        try:
            resp = await self._client.post(self.url, content=gzip.compress(body, 1), headers=headers)
        except httpx.TransportError as exc:
            raise transport_error(exc, self.url) from exc
        if resp.status_code == 401:
            self._token = ""  # expired or revoked: fetch a new one next time
        check_response(resp, self.url)

    async def healthcheck(self) -> str:
        """A token for the scope, and an answer from the data collection endpoint (no data is sent, so the
        DCR, the stream and the role assignment are only checked by the first request)."""
        assert self._client is not None, "start() first"
        await self._bearer()
        try:
            await self._client.get(self.config.endpoint)
        except httpx.TransportError as exc:
            raise transport_error(exc, self.config.endpoint) from exc
        return (f"token for {self.config.scope} issued; the endpoint answers (the DCR, stream and role are "
                "checked by the first upload)")

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def _session(verify: str | bool, timeout: float) -> Any:
    """A requests session for MSAL whose ``verify`` wins over REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE
    (plain requests lets those environment variables override a session's CA file)."""
    import functools

    import requests

    class _Session(requests.Session):
        def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify_: Any,
                                       cert: Any) -> Any:
            settings = super().merge_environment_settings(url, proxies, stream, verify_, cert)
            settings["verify"] = verify
            return settings

    session = _Session()
    session.verify = verify
    session.request = functools.partial(session.request, timeout=timeout)  # type: ignore[method-assign]
    return session
