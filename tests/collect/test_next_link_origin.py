"""A next link that leaves the configured API origin is refused before the token is attached to it."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from exotrace.clock import SystemClock
from exotrace.collect.quota import QuotaGovernor
from exotrace.config import parse_config
from exotrace.errors import PermanentError
from exotrace.net import make_async_client
from exotrace.sources.base import ApiCaller
from exotrace.sources.graph import GraphSource
from exotrace.sources.rws import RwsSource

TOKEN = "eyJ0eXAiOiJKV1QifQ.eyJ0aWQiOiJ4In0.not-for-other-hosts"


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, body: dict | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.body = body or {"value": []}
        self.seen: list[str | None] = []  # Authorization headers received

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.server.seen.append(self.headers.get("Authorization"))
        body = json.dumps(self.server.body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def elsewhere() -> Iterator[_Server]:
    with _Server() as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        yield server
        server.shutdown()


class _Tokens:
    async def token(self) -> str:
        return TOKEN

    def invalidate(self) -> None:
        pass


def _read(api: str, first_page: dict, monkeypatch: pytest.MonkeyPatch) -> tuple[list[int], list[str | None]]:
    monkeypatch.setenv("EXO_ORIGIN_SECRET", "s")
    with _Server(first_page) as api_server:
        threading.Thread(target=api_server.serve_forever, daemon=True).start()
        tenant = {"name": "t", "tenant_id": "x", "client_id": "y", "api": api,
                  "client_secret": "env:EXO_ORIGIN_SECRET", f"{api}_url": api_server.url}
        cfg = parse_config({"tenant": [tenant]}, base=Path("."))
        clock = SystemClock()

        async def main() -> list[int]:
            async with make_async_client() as client:
                caller = ApiCaller(cfg.tenants[0], client, _Tokens(),  # type: ignore[arg-type]
                                   QuotaGovernor(90, timedelta(minutes=5), clock), clock)
                source = GraphSource(caller) if api == "graph" else RwsSource(caller)
                now = datetime.now(UTC)
                return [len(page.rows) async for page in source.pages(now - timedelta(hours=1), now)]

        try:
            return asyncio.run(main()), api_server.seen
        finally:
            api_server.shutdown()


@pytest.mark.parametrize("api, key", [("graph", "@odata.nextLink"), ("rws", "odata.nextLink")])
def test_a_next_link_to_another_origin_gets_no_token(api: str, key: str, elsewhere: _Server,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    row = {"MessageTraceId": "a", "RecipientAddress": "b@contoso.com"} if api == "rws" else {"id": "a"}
    page = {"value": [row], key: f"{elsewhere.url}/collect?$skiptoken=2"}
    with pytest.raises(PermanentError, match="refusing to send the token to http://127.0.0.1:.*/collect"):
        _read(api, page, monkeypatch)
    assert elsewhere.seen == []  # nothing was sent there, let alone the token


def test_a_next_link_on_the_same_origin_is_followed(monkeypatch: pytest.MonkeyPatch) -> None:
    pages, seen = _read("graph", {"value": [{"id": "a"}]}, monkeypatch)
    assert pages == [1] and seen == [f"Bearer {TOKEN}"]
