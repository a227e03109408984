"""Syslog sink: RFC 5424 messages whose MSG is the ECS document as JSON, over TCP, TLS or UDP.

TCP and TLS (RFC 5425) use octet-counting framing (RFC 6587 §3.4.1: ``<length> <message>``), so a JSON
document never needs escaping. The header is ``<PRI>1 TIMESTAMP HOSTNAME exotrace PROCID messagetrace -``
with TIMESTAMP = the document's ``@timestamp``.

Syslog has no application acknowledgement: a batch counts as delivered once written to the socket. To
narrow the loss window that leaves, each connection is watched (the server never sends anything, so EOF
or a reset means it went away), and when it breaks, the messages written on it in the ``resend_window``
seconds before are sent again first on the next connection: a server that restarts or crashes right
after a write causes duplicates, not a gap. At close, TCP half-closes and waits for the server to close
its side, which it does after reading everything. What remains is documented in docs/sinks.md.
UDP is fire-and-forget: one datagram per message, larger ones are dead-lettered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime

from exotrace.errors import TransientError
from exotrace.sinks._common import timestamp_of
from exotrace.sinks._http import ssl_context
from exotrace.sinks.base import Record, SendResult, Sink
from exotrace.sinks.config import SyslogSinkConfig

__all__ = ["RESEND_MAX_BYTES", "SyslogSink", "format_message"]

log = logging.getLogger("exotrace.sinks.syslog")

#: Most bytes kept per connection for a resend (more than the socket buffers on both sides hold).
RESEND_MAX_BYTES = 16 * 1024 * 1024
#: Longest wait at close for the server to close its side after our half-close.
_LINGER = 2.0


def _field(value: str, limit: int) -> str:
    """RFC 5424 header fields: printable US-ASCII, no spaces, ``-`` when empty."""
    cleaned = "".join(c for c in value if 33 <= ord(c) <= 126)[:limit]
    return cleaned or "-"


def format_message(r: Record, *, pri: int, hostname: str, app_name: str, procid: str, msgid: str) -> bytes:
    """One RFC 5424 message (without framing)."""
    ts = timestamp_of(r)
    if not ts or "T" not in ts:
        ts = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    header = f"<{pri}>1 {_field(ts, 32)} {hostname} {app_name} {procid} {msgid} - "
    return header.encode("ascii") + r.raw


class _Connection:
    """One TCP/TLS connection, watched for EOF or a reset, and what was written on it recently."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.broken_at: float | None = None  # loop time the server went away
        self.reset = False  # ... with an error rather than a clean EOF
        self.recent: deque[tuple[float, bytes]] = deque()
        self.recent_bytes = 0
        self.watcher = asyncio.create_task(self._watch(), name="exotrace-syslog-watch")

    async def _watch(self) -> None:
        try:
            while await self.reader.read(65536):
                pass  # syslog servers send nothing; discard whatever comes
        except OSError:
            self.reset = True
        self.broken_at = asyncio.get_running_loop().time()

    @property
    def broken(self) -> bool:
        return (self.broken_at is not None or self.reader.at_eof() or self.reader.exception() is not None
                or self.writer.is_closing())

    def wrote(self, data: bytes, window: float) -> None:
        """Remember ``data`` (just written) for ``window`` seconds, up to RESEND_MAX_BYTES in all."""
        if window <= 0:
            return
        now = asyncio.get_running_loop().time()
        self.recent.append((now, data))
        self.recent_bytes += len(data)
        while self.recent and (self.recent[0][0] < now - window or self.recent_bytes > RESEND_MAX_BYTES):
            self.recent_bytes -= len(self.recent.popleft()[1])

    def unconfirmed(self, window: float) -> list[bytes]:
        """What was written in the ``window`` seconds before the connection broke (or before now)."""
        end = self.broken_at if self.broken_at is not None else asyncio.get_running_loop().time()
        return [data for t, data in self.recent if t >= end - window]

    async def finish(self) -> bool:
        """Half-close and wait for the server to close its side (it has then read everything we wrote).

        False if the connection broke before or answered with a reset. TLS cannot half-close, and a
        server that keeps a half-closed connection open cannot tell: True unless known broken."""
        if self.broken:
            return False
        if not self.writer.can_write_eof():
            return True
        try:
            self.writer.write_eof()
            async with asyncio.timeout(_LINGER):
                await asyncio.shield(self.watcher)
        except TimeoutError:
            return True
        except OSError:
            return False
        return not self.reset

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(2):
                await self.writer.wait_closed()
        self.watcher.cancel()
        await asyncio.gather(self.watcher, return_exceptions=True)


class _Udp(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.error: Exception | None = None

    def error_received(self, exc: Exception) -> None:
        self.error = exc


class SyslogSink(Sink):
    type = "syslog"
    config: SyslogSinkConfig

    def __init__(self, config: SyslogSinkConfig) -> None:  # type: ignore[override]
        super().__init__(config)
        c = config
        self._fmt = {"pri": c.facility * 8 + c.severity, "hostname": _field(c.hostname or socket.gethostname(), 255),
                     "app_name": _field(c.app_name, 48), "procid": str(os.getpid()), "msgid": _field(c.msgid, 32)}
        self._conn: _Connection | None = None
        self._resend: list[bytes] = []  # written on a connection that then broke: sent first on the next
        self._udp: asyncio.DatagramTransport | None = None
        self._udp_proto: _Udp | None = None
        self._ssl = (ssl_context(c.ca_certs, c.verify_certs, c.certfile, c.keyfile)
                     if c.protocol == "tls" else None)

    @property
    def where(self) -> str:
        return f"syslog {self.config.protocol}://{self.config.host}:{self.config.port}"

    async def _connect(self) -> _Connection | None:
        """The open connection (TCP/TLS), reconnecting when the last one broke; None for UDP."""
        c = self.config
        try:
            if c.protocol == "udp":
                if self._udp is None:
                    loop = asyncio.get_running_loop()
                    self._udp, self._udp_proto = await loop.create_datagram_endpoint(
                        _Udp, remote_addr=(c.host, c.port))
                return None
            if self._conn is not None and not self._conn.broken:
                return self._conn
            await self._drop()
            async with asyncio.timeout(c.timeout):
                reader, writer = await asyncio.open_connection(
                    c.host, c.port, ssl=self._ssl, server_hostname=(c.server_name or c.host) if self._ssl else None)
        except (OSError, TimeoutError) as exc:
            raise TransientError(f"{self.where}: cannot connect: {exc or type(exc).__name__}") from exc
        self._conn = _Connection(reader, writer)
        return self._conn

    async def _drop(self) -> None:
        """Close the connection; what it may have lost goes to the resend list."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        lost = conn.unconfirmed(self.config.resend_window)
        if lost:
            self._resend.extend(lost)
            log.warning("Sink %s: the connection to %s broke; sending the last %d bytes written on it again "
                        "(duplicates are possible).", self.name, self.where, sum(map(len, lost)))
        await conn.close()

    async def send(self, records: Sequence[Record]) -> SendResult:
        result = SendResult()
        frames: list[bytes] = []
        for i, r in enumerate(records):
            msg = format_message(r, **self._fmt)
            if len(msg) > self.config.max_message_bytes:
                result.rejected[i] = f"message is {len(msg)} bytes, over max_message_bytes"
                continue
            frames.append(msg if self.config.protocol == "udp" else b"%d %s" % (len(msg), msg))
        if not frames:
            return result
        await asyncio.sleep(0)  # let the loop see an EOF or reset that already arrived
        conn = await self._connect()
        if conn is None:
            return await self._send_udp(frames, result)
        data = b"".join(frames)
        try:
            conn.writer.write(b"".join(self._resend) + data if self._resend else data)
            async with asyncio.timeout(self.config.timeout):
                await conn.writer.drain()
        except (OSError, TimeoutError) as exc:
            await self._drop()
            raise TransientError(f"{self.where}: write failed: {exc or type(exc).__name__}") from exc
        for chunk in self._resend:
            conn.wrote(chunk, self.config.resend_window)
        self._resend = []
        conn.wrote(data, self.config.resend_window)
        return result

    async def _send_udp(self, frames: list[bytes], result: SendResult) -> SendResult:
        assert self._udp is not None and self._udp_proto is not None
        for f in frames:
            self._udp.sendto(f)
        await asyncio.sleep(0)
        if self._udp_proto.error is not None:
            err, self._udp_proto.error = self._udp_proto.error, None
            self._udp.close()
            self._udp = None
            raise TransientError(f"{self.where}: {err}")
        return result

    async def healthcheck(self) -> str:
        if self.config.protocol == "udp":
            return "UDP cannot be checked (nothing answers a datagram)"
        await self._connect()
        return "connected" + (" (server certificate verified)" if self._ssl is not None and self.config.verify_certs
                              else "")

    async def close(self) -> None:
        """Confirm the server read what was written (see :meth:`_Connection.finish`); if the connection
        broke instead, reconnect once and send the recent messages again."""
        if self._conn is not None and await self._conn.finish():
            await self._conn.close()
            self._conn = None
        await self._drop()
        if self._resend:
            await self._resend_at_close()
        if self._udp is not None:
            self._udp.close()
            self._udp = None

    async def _resend_at_close(self) -> None:
        size = sum(map(len, self._resend))
        reason = "the server did not confirm"
        ok = False
        try:
            conn = await self._connect()
            assert conn is not None
            conn.writer.write(b"".join(self._resend))
            async with asyncio.timeout(self.config.timeout):
                await conn.writer.drain()
            ok = await conn.finish()
        except (OSError, TimeoutError, TransientError) as exc:
            reason = str(exc) or type(exc).__name__
        if not ok:
            log.warning("Sink %s: the connection to %s broke at exit; the last %d bytes written may not have "
                        "arrived (%s).", self.name, self.where, size, reason)
        self._resend = []
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()
