"""Generic HTTP sink: POST NDJSON or a JSON array, with custom headers and an auth header from a
secret reference; ``preset = "sekoia"`` posts ``{"intake_key": ..., "jsons": [...]}`` to ``{url}/batch``.

Any 2xx acknowledges the whole request. A 400/413/422 is read as "this content is unacceptable": the
batch is split until the offending document is alone, which is then dead-lettered.
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence

import httpx
import orjson

from exotrace.sinks._common import post_chunks
from exotrace.sinks._http import check_response, make_client, transport_error
from exotrace.sinks.base import Record, SendResult, Sink
from exotrace.sinks.config import HttpSinkConfig

__all__ = ["HttpSink"]


class HttpSink(Sink):
    type = "http"
    config: HttpSinkConfig

    def __init__(self, config: HttpSinkConfig) -> None:  # type: ignore[override]
        super().__init__(config)
        self.url = config.url.rstrip("/") + "/batch" if config.preset == "sekoia" else config.url
        self._client: httpx.AsyncClient | None = None
        self._intake_key = ""

    async def start(self) -> None:
        headers = dict(self.config.headers)
        if self.config.auth_header is not None:
            headers[self.config.auth_header_name] = self.config.auth_header.get()
        if self.config.preset == "sekoia" and self.config.intake_key is not None:
            self._intake_key = self.config.intake_key.get()
        self._client = make_client(self.config, headers)

    def _body(self, records: Sequence[Record]) -> tuple[bytes, str]:
        if self.config.preset == "sekoia":
            return orjson.dumps({"intake_key": self._intake_key,
                                 "jsons": [r.raw.decode() for r in records]}), "application/json"
        if self.config.format == "json":
            return b"[" + b",".join(r.raw for r in records) + b"]", "application/json"
        return b"".join(r.raw + b"\n" for r in records), "application/x-ndjson"

    async def send(self, records: Sequence[Record]) -> SendResult:
        async def post(idx: list[int]) -> None:
            await self._post([records[i] for i in idx])

        return await post_chunks(records, [list(range(len(records)))], post)

    async def _post(self, records: Sequence[Record]) -> None:
        assert self._client is not None, "start() first"
        body, ctype = self._body(records)
        headers = {"Content-Type": ctype}
        if self.config.gzip:
            body = gzip.compress(body, 5)
            headers["Content-Encoding"] = "gzip"
        try:
            resp = await self._client.post(self.url, content=body, headers=headers)
        except httpx.TransportError as exc:
            raise transport_error(exc, self.url) from exc
        check_response(resp, self.url)

    async def healthcheck(self) -> str:
        """A GET of the URL with the configured headers: any answer but 401/403 proves reachability."""
        assert self._client is not None, "start() first"
        try:
            resp = await self._client.get(self.url)
        except httpx.TransportError as exc:
            raise transport_error(exc, self.url) from exc
        if resp.status_code in (401, 403):
            check_response(resp, self.url)
        return (f"the endpoint answers (HTTP {resp.status_code} to GET); the "
                f"{'intake key' if self.config.preset == 'sekoia' else 'request'} is checked by the first POST")

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
