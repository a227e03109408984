"""Splunk HTTP Event Collector sink (``/services/collector/event``), with optional indexer acknowledgement.

Each document becomes an event envelope ``{"time", "host", "source", "sourcetype", "index", "event"}``
where ``time`` is ``@timestamp`` as epoch seconds with milliseconds. Without acknowledgement a batch is
delivered when HEC answers ``{"code": 0}``; with ``ack = true`` only once ``/services/collector/ack``
reports the request's ``ackId`` indexed (polled every ``ack_poll_interval`` s up to ``ack_timeout`` s, then
resent: at-least-once). An invalid event (HEC code 6 with ``invalid-event-number``) is dead-lettered and
the rest of the batch resent.
"""

from __future__ import annotations

import asyncio
import gzip
import time
import uuid
from collections.abc import Sequence

import httpx
import orjson

from exotrace.errors import AuthError, ConfigError, TransientError
from exotrace.sinks._common import epoch_seconds, timestamp_of
from exotrace.sinks._http import check_response, make_client, transport_error
from exotrace.sinks.base import Record, SendResult, Sink
from exotrace.sinks.config import SplunkHecSinkConfig

__all__ = ["SplunkHecSink"]

#: HEC status codes: events HEC refuses (dead-letter the one named by ``invalid-event-number``) ...
_EVENT_ERRORS = {6, 12, 13, 15}
#: ... token problems, and settings an operator must fix (index, channel, acknowledgement): keep the data.
_AUTH_ERRORS = {1, 2, 3, 4}
_CONFIG_ERRORS = {7, 10, 11, 14, 16}


class SplunkHecSink(Sink):
    type = "splunk_hec"
    config: SplunkHecSinkConfig

    def __init__(self, config: SplunkHecSinkConfig) -> None:  # type: ignore[override]
        super().__init__(config)
        base = config.url.rstrip("/")
        self.event_url = base + "/services/collector/event"
        self.ack_url = base + "/services/collector/ack"
        self.health_url = base + "/services/collector/health"
        self.channel = config.channel or str(uuid.uuid4())
        self._client: httpx.AsyncClient | None = None
        meta: dict[str, str] = {"sourcetype": config.sourcetype}
        for k in ("host", "source", "index"):
            v = getattr(config, k)
            if v:
                meta[k] = v
        self._meta = orjson.dumps(meta)[1:-1]  # '"sourcetype":"...",...' to splice into each envelope

    async def start(self) -> None:
        headers = {"Authorization": f"Splunk {self.config.token.get()}"}
        if self.config.ack:
            headers["X-Splunk-Request-Channel"] = self.channel
        self._client = make_client(self.config, headers)

    def _envelope(self, r: Record) -> bytes:
        t = epoch_seconds(timestamp_of(r))
        head = b'{"time":%s,' % orjson.dumps(t) if t is not None else b"{"
        return head + self._meta + b',"event":' + r.raw + b"}"

    async def send(self, records: Sequence[Record]) -> SendResult:
        assert self._client is not None, "start() first"
        body = b"\n".join(self._envelope(r) for r in records)
        headers = {"Content-Type": "application/json"}
        if self.config.gzip:
            body = gzip.compress(body, 5)
            headers["Content-Encoding"] = "gzip"
        try:
            resp = await self._client.post(self.event_url, content=body, headers=headers)
        except httpx.TransportError as exc:
            raise transport_error(exc, self.event_url) from exc
        reply = _json(resp)
        code = reply.get("code")
        if resp.status_code == 400 and code in _EVENT_ERRORS and "invalid-event-number" in reply:
            bad = int(reply["invalid-event-number"])
            if 0 <= bad < len(records):
                return SendResult(retry=[i for i in range(len(records)) if i != bad],
                                  rejected={bad: f"HEC: {reply.get('text', 'invalid event')}"})
        if code in _AUTH_ERRORS:
            raise AuthError(f"{self.event_url}: HEC {reply.get('text')} (code {code})")
        if code in _CONFIG_ERRORS:
            raise ConfigError(f"{self.event_url}: HEC {reply.get('text')} (code {code})")
        check_response(resp, self.event_url, str(reply.get("text", "")) if reply else "")
        if self.config.ack:
            ack_id = reply.get("ackId")
            if ack_id is None:
                raise TransientError(f"{self.event_url}: acknowledgement requested but no ackId returned "
                                     "(enable indexer acknowledgement on the token)")
            await self._wait_ack(int(ack_id))
        return SendResult()

    async def _wait_ack(self, ack_id: int) -> None:
        assert self._client is not None
        deadline = time.monotonic() + self.config.ack_timeout
        body = orjson.dumps({"acks": [ack_id]})
        while True:
            try:
                resp = await self._client.post(self.ack_url, content=body,
                                               headers={"Content-Type": "application/json"})
            except httpx.TransportError as exc:
                raise transport_error(exc, self.ack_url) from exc
            check_response(resp, self.ack_url)
            if _json(resp).get("acks", {}).get(str(ack_id)) is True:
                return
            if time.monotonic() >= deadline:
                raise TransientError(f"{self.ack_url}: ackId {ack_id} not acknowledged within "
                                     f"{self.config.ack_timeout:g}s; resending")
            await asyncio.sleep(self.config.ack_poll_interval)

    async def healthcheck(self) -> str:
        """HEC's health endpoint (it needs no token), then an empty event request: HEC checks the token
        before the body, so a valid token gets "No data" (code 5) and nothing is indexed."""
        assert self._client is not None, "start() first"
        try:
            resp = await self._client.get(self.health_url)
            check_response(resp, self.health_url)
            resp = await self._client.post(self.event_url, content=b"", headers={"Content-Type": "application/json"})
        except httpx.TransportError as exc:
            raise transport_error(exc, self.health_url) from exc
        reply = _json(resp)
        code = reply.get("code")
        if code in _AUTH_ERRORS:
            raise AuthError(f"{self.event_url}: HEC {reply.get('text')} (code {code})")
        if code in _CONFIG_ERRORS:
            raise ConfigError(f"{self.event_url}: HEC {reply.get('text')} (code {code})")
        if code != 5:
            check_response(resp, self.event_url, str(reply.get("text", "")))
        return "HEC is healthy and accepts the token" + (" (indexer acknowledgement on)" if self.config.ack else "")

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def _json(resp: httpx.Response) -> dict:
    try:
        data = resp.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
