"""The syslog sink's connection handling against a scripted TCP server: a server that reads messages and
then goes away (a restart, a crash) must not make them disappear; the sink sends them again."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
from sink_helpers import FAST, make_docs, numbers

from exotrace.sinks import SinkPipeline, load_sinks


def split_frames(buf: bytes) -> tuple[list[bytes], bytes]:
    """Octet-counted frames (RFC 6587) -> (messages, the incomplete rest)."""
    out = []
    while b" " in buf:
        size, _, rest = buf.partition(b" ")
        if len(rest) < int(size):
            break
        out.append(rest[: int(size)])
        buf = rest[int(size):]
    return out, buf


class ForgetfulServer:
    """Accepts syslog over TCP. Connections listed in ``forget`` read ``forget[n]`` messages, drop them
    (as a server that restarts or crashes would) and close; the others keep what they read."""

    def __init__(self, forget: dict[int, int]) -> None:
        self.forget = forget
        self.kept: list[dict] = []
        self.dropped: list[dict] = []
        self.connections = 0
        self.went_away = asyncio.Event()
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        limit = self.forget.get(self.connections)
        got: list[dict] = []
        buf = b""
        while limit is None or len(got) < limit:
            chunk = await reader.read(65536)
            if not chunk:
                break
            msgs, buf = split_frames(buf + chunk)
            got += [orjson.loads(m.split(b" - ", 1)[1]) for m in msgs]
        (self.kept if limit is None else self.dropped).extend(got)
        writer.close()  # after EOF (a clean end) or after "forgetting"
        if limit is not None:
            self.went_away.set()


def _table(port: int) -> dict:
    return {"type": "syslog", "host": "127.0.0.1", "port": port, "protocol": "tcp", "batch_max_events": 10,
            **FAST}


def test_messages_written_just_before_the_server_went_away_are_sent_again(state_dir: Path) -> None:
    docs = make_docs(0, 20)

    async def main() -> ForgetfulServer:
        server = ForgetfulServer({1: 10})
        await server.start()
        p = SinkPipeline(load_sinks([_table(server.port)]), state_dir)
        await p.start()
        assert await p.wait_acked(await p.submit(docs[:10]), timeout=10)  # written: counted delivered
        await asyncio.wait_for(server.went_away.wait(), 10)  # ... and then lost by the server
        assert await p.wait_acked(await p.submit(docs[10:]), timeout=10)
        await p.close()
        await server.stop()
        return server

    server = asyncio.run(main())
    assert numbers(server.dropped) == list(range(10))
    assert numbers(server.kept) == list(range(20))  # the lost batch again, in order, then the new one


def test_a_connection_that_breaks_at_exit_is_resent_before_closing(state_dir: Path) -> None:
    docs = make_docs(0, 10)

    async def main() -> ForgetfulServer:
        server = ForgetfulServer({1: 10})
        await server.start()
        p = SinkPipeline(load_sinks([_table(server.port)]), state_dir)
        await p.start()
        assert await p.wait_acked(await p.submit(docs), timeout=10)
        await asyncio.wait_for(server.went_away.wait(), 10)
        await p.close()  # the last batch was lost: the sink reconnects once and sends it again
        await server.stop()
        return server

    server = asyncio.run(main())
    assert numbers(server.kept) == list(range(10)) and server.connections == 2


def test_a_clean_run_sends_everything_once_and_half_closes(state_dir: Path) -> None:
    async def main() -> ForgetfulServer:
        server = ForgetfulServer({})
        await server.start()
        p = SinkPipeline(load_sinks([_table(server.port)]), state_dir)
        await p.start()
        for i in range(0, 30, 10):
            assert await p.wait_acked(await p.submit(make_docs(i, i + 10)), timeout=10)
        await p.close()
        await server.stop()
        return server

    server = asyncio.run(main())
    assert numbers(server.kept) == list(range(30)) and server.connections == 1
