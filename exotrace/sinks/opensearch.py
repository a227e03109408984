"""OpenSearch sink (``opensearch-py``, bulk API), with the same modes as the Elasticsearch sink.

In ``data_stream`` mode the target ``logs-microsoft_exchange_online_message_trace.log-<namespace>`` must
match an index template with ``data_stream`` enabled (OpenSearch has no built-in ``logs-*-*`` template);
``create`` with the fingerprint as ``_id`` makes re-sent documents a 409, counted as delivered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import orjson

from exotrace.errors import ConfigError
from exotrace.sinks._bulk import FILTER_PATH, build_body, parse_items, target
from exotrace.sinks._common import quiet_client_loggers
from exotrace.sinks.base import Record, SendResult, Sink
from exotrace.sinks.config import OpenSearchSinkConfig
from exotrace.sinks.elasticsearch import NO_ERRORS, http_status, map_error

__all__ = ["OpenSearchSink"]


class OpenSearchSink(Sink):
    type = "opensearch"
    config: OpenSearchSinkConfig

    def __init__(self, config: OpenSearchSinkConfig) -> None:  # type: ignore[override]
        super().__init__(config)
        self.target = target(config)
        self._client: Any = None
        self._params = {"filter_path": FILTER_PATH}
        if config.pipeline:
            self._params["pipeline"] = config.pipeline
        self._headers = {"content-type": "application/x-ndjson"}

    async def start(self) -> None:
        from opensearchpy import OpenSearch

        quiet_client_loggers("opensearch", "urllib3.connectionpool")

        c = self.config
        kw: dict[str, Any] = {"hosts": list(c.hosts), "timeout": c.timeout, "max_retries": 0,
                              "retry_on_timeout": False, "verify_certs": c.verify_certs,
                              "use_ssl": any(h.startswith("https:") for h in c.hosts)}
        kw["serializer"] = _bulk_serializer()
        if c.ca_certs:
            kw["ca_certs"] = c.ca_certs
        if not c.verify_certs:
            kw["ssl_show_warn"] = False
        if c.username:
            kw["http_auth"] = (c.username, c.password.get() if c.password else "")
        if c.api_key:  # on every request, the healthcheck's too
            kw["headers"] = {"authorization": f"ApiKey {c.api_key.get()}"}
        try:
            self._client = OpenSearch(**kw)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"opensearch sink {self.name}: {exc}") from exc

    def _bulk(self, body: bytes) -> Any:
        return self._client.transport.perform_request("POST", f"/{self.target}/_bulk", params=self._params,
                                                      headers=self._headers, body=body)

    async def send(self, records: Sequence[Record]) -> SendResult:
        body = build_body(records, self.config.mode)
        try:
            resp = await asyncio.to_thread(self._bulk, body)
        except Exception as exc:
            raise map_error(exc, self.target, bulk=True) from exc
        return parse_items(resp, len(records))

    async def healthcheck(self) -> str:
        """``GET /``; a 403 still proves the credentials (OpenSearch has no has-privileges API, and
        writing does not need the ``cluster:monitor/main`` permission that ``GET /`` wants)."""
        try:
            info = await asyncio.to_thread(self._client.info)
        except Exception as exc:
            if http_status(exc) == 403:
                return "authenticated (the user may not read cluster information; writing does not need it)"
            raise map_error(exc, "/") from exc
        version = info.get("version", {}).get("number", "?") if isinstance(info, dict) else "?"
        return f"OpenSearch {version} answers; credentials accepted"

    async def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def _bulk_serializer() -> Any:
    """opensearch-py's JSON serializer, skipping the decoding of all-succeeded bulk responses."""
    from opensearchpy.serializer import JSONSerializer

    class BulkSerializer(JSONSerializer):  # type: ignore[misc]
        def loads(self, s: Any) -> Any:
            head = s[:64] if isinstance(s, bytes | str) else ""
            if (b'"errors":false' if isinstance(head, bytes) else '"errors":false') in head:
                return NO_ERRORS
            return orjson.loads(s) if isinstance(s, bytes | str) else super().loads(s)

    return BulkSerializer()
