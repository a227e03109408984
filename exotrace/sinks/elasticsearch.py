"""Elasticsearch sink (official ``elasticsearch`` client, bulk API).

Default: the data stream ``logs-microsoft_exchange_online_message_trace.log-<namespace>`` with the
``create`` op and Elastic's fingerprint as ``_id``, exactly what Elastic's own integration writes, so a
row it already indexed (or that exotrace sent before a crash) answers 409 and counts as delivered.
``mode = "index"`` writes the latest state per row (``index`` op, ``_id`` = row key).

The client's own retries are off: per-item 429/5xx are retried by the pipeline (only those items),
4xx item errors are dead-lettered. ``compatibility`` pins the REST compatibility header (8 works with
Elasticsearch 8 and 9 servers, whatever the client's major version).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import orjson

from exotrace.errors import AuthError, ConfigError, PrivilegeError, SinkError, ThrottledError, TransientError
from exotrace.net.retry import parse_retry_after
from exotrace.sinks._bulk import FILTER_PATH, build_body, parse_items, target
from exotrace.sinks._common import quiet_client_loggers
from exotrace.sinks.base import Record, SendResult, Sink
from exotrace.sinks.config import ElasticsearchSinkConfig

__all__ = ["ElasticsearchSink", "http_status", "map_error"]


class ElasticsearchSink(Sink):
    type = "elasticsearch"
    config: ElasticsearchSinkConfig

    def __init__(self, config: ElasticsearchSinkConfig) -> None:  # type: ignore[override]
        super().__init__(config)
        self.target = target(config)
        self._client: Any = None
        v = config.compatibility
        self._headers = {"accept": f"application/vnd.elasticsearch+json; compatible-with={v}",
                         "content-type": f"application/vnd.elasticsearch+x-ndjson; compatible-with={v}"}
        self._json_headers = {"accept": self._headers["accept"],
                              "content-type": f"application/vnd.elasticsearch+json; compatible-with={v}"}
        self._params = {"filter_path": FILTER_PATH}
        if config.pipeline:
            self._params["pipeline"] = config.pipeline

    async def start(self) -> None:
        from elasticsearch import Elasticsearch

        quiet_client_loggers("elastic_transport.transport", "elastic_transport.node_pool")

        c = self.config
        kw: dict[str, Any] = {"request_timeout": c.timeout, "max_retries": 0, "retry_on_timeout": False,
                              "verify_certs": c.verify_certs}
        kw["serializer"] = _bulk_serializer()
        if c.cloud_id:
            kw["cloud_id"] = c.cloud_id
        else:
            kw["hosts"] = list(c.hosts)
        if c.ca_certs:
            kw["ca_certs"] = c.ca_certs
        if not c.verify_certs:
            kw["ssl_show_warn"] = False
        if c.api_key:
            kw["api_key"] = c.api_key.get()
        if c.username:
            kw["basic_auth"] = (c.username, c.password.get() if c.password else "")
        try:
            self._client = Elasticsearch(**kw)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"elasticsearch sink {self.name}: {exc}") from exc

    def _bulk(self, body: bytes) -> Any:
        return self._client.perform_request("PUT", f"/{self.target}/_bulk", params=self._params,
                                            headers=self._headers, body=body)

    async def send(self, records: Sequence[Record]) -> SendResult:
        body = build_body(records, self.config.mode)
        try:
            resp = await asyncio.to_thread(self._bulk, body)
        except Exception as exc:
            raise map_error(exc, self.target, bulk=True) from exc
        return parse_items(resp.body, len(records))

    async def healthcheck(self) -> str:
        """Credentials and the privileges writing needs, through the has-privileges API (any authenticated
        user may call it; ``GET /`` would need the ``monitor`` cluster privilege, which writing does not)."""
        privileges = PRIVILEGES[self.config.mode]
        body = orjson.dumps({"index": [{"names": [self.target], "privileges": privileges}]})
        path = "/_security/user/_has_privileges"
        try:
            resp = await asyncio.to_thread(self._client.perform_request, "POST", path,
                                           headers=self._json_headers, body=body)
        except Exception as exc:
            status = http_status(exc)
            if status is None or status in (401, 403):
                raise map_error(exc, path) from exc
            try:  # security off, or an API this server lacks: at least prove the cluster answers
                await asyncio.to_thread(self._client.perform_request, "GET", "/", headers=self._json_headers)
            except Exception as exc2:
                raise map_error(exc2, "/") from exc2
            return f"the cluster answers; privileges not checked ({path}: HTTP {status})"
        data = resp.body if isinstance(resp.body, dict) else {}
        granted = (data.get("index") or {}).get(self.target) or {}
        missing = [p for p in privileges if granted.get(p) is not True]
        who = data.get("username") or "these credentials"
        if missing:
            raise PrivilegeError(f"{path}: {who} lacks {', '.join(missing)} on {self.target}")
        return f"authenticated as {who}; {', '.join(privileges)} on {self.target}: granted"

    async def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


#: Index privileges each mode needs on its target (what docs/sinks.md tells users to grant).
PRIVILEGES = {"data_stream": ["create_doc", "auto_configure"], "index": ["index", "create_index"]}

#: What a bulk response with ``"errors":false`` in its first bytes is decoded to (all items succeeded).
NO_ERRORS: dict[str, Any] = {"errors": False}


def _bulk_serializer() -> Any:
    """orjson for responses, and no decoding at all for the common all-succeeded bulk response."""
    from elasticsearch.serializer import JsonSerializer

    try:
        from elasticsearch.serializer import OrjsonSerializer as base
    except ImportError:  # pragma: no cover - clients without orjson support
        base = JsonSerializer

    class BulkSerializer(base):  # type: ignore[misc,valid-type]
        def loads(self, data: bytes) -> Any:
            if b'"errors":false' in data[:64]:
                return NO_ERRORS
            return super().loads(data)

    return BulkSerializer()


def map_error(exc: Exception, where: str, *, bulk: bool = False) -> Exception:
    """elasticsearch / opensearch / elastic_transport exceptions -> exotrace errors.

    For a bulk request, a whole-request 400 means bad parameters (an unknown pipeline, a bad target), not
    bad documents (those fail per item): the data is kept. A 413 (body too large) splits the batch."""
    status = http_status(exc)
    name = type(exc).__name__
    if status is None:
        if name in ("UnsupportedProductError",):
            return ConfigError(f"{where}: the server is not Elasticsearch ({exc})")
        return TransientError(f"{where}: {name}: {_msg(exc)}")
    msg = f"{where}: HTTP {status} {_msg(exc)}"
    retry_after = parse_retry_after(_header(exc, "retry-after"))
    if status == 429:
        return ThrottledError(msg, retry_after=retry_after)
    if status >= 500 or status == 408:
        return TransientError(msg, retry_after=retry_after)
    if status in (401, 403):
        return AuthError(msg)
    if status == 413 or (status == 400 and not bulk):
        return SinkError(msg)
    return ConfigError(msg)


def http_status(exc: Exception) -> int | None:
    """The HTTP status of an elasticsearch / opensearch client error (None: no response)."""
    meta = getattr(exc, "meta", None)
    status = getattr(meta, "status", None)
    if isinstance(status, int):
        return status
    code = getattr(exc, "status_code", None)  # opensearch-py
    return code if isinstance(code, int) else None


def _header(exc: Exception, name: str) -> str | None:
    meta = getattr(exc, "meta", None)
    headers = getattr(meta, "headers", None)
    if headers is not None:
        return headers.get(name)
    return None


def _msg(exc: Exception) -> str:
    text = str(getattr(exc, "message", "") or exc)
    return " ".join(text.split())[:300]
