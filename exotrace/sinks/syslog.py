"""Syslog sink: RFC 5424 messages whose MSG is the ECS document as JSON, over TCP, TLS or UDP.

TCP and TLS (RFC 5425) use octet-counting framing (RFC 6587 §3.4.1: ``<length> <message>``), so a JSON
document never needs escaping. The header is ``<PRI>1 TIMESTAMP HOSTNAME exotrace PROCID messagetrace -``
with TIMESTAMP = the document's ``@timestamp``. A batch counts as delivered once written and drained to the
socket: syslog has no application acknowledgement, so a connection that breaks right after a write can
lose what the kernel had not yet sent; the next failure resends the whole batch (duplicates are possible).
UDP is fire-and-forget: one datagram per message, larger ones are dead-lettered.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Sequence
from datetime import UTC, datetime

from exotrace.errors import TransientError
from exotrace.sinks._common import timestamp_of
from exotrace.sinks._http import ssl_context
from exotrace.sinks.base import Record, SendResult, Sink
from exotrace.sinks.config import SyslogSinkConfig

__all__ = ["SyslogSink", "format_message"]


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
        self._writer: asyncio.StreamWriter | None = None
        self._reader: asyncio.StreamReader | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._udp_proto: _Udp | None = None
        self._ssl = (ssl_context(c.ca_certs, c.verify_certs, c.certfile, c.keyfile)
                     if c.protocol == "tls" else None)

    @property
    def where(self) -> str:
        return f"syslog {self.config.protocol}://{self.config.host}:{self.config.port}"

    async def _connect(self) -> None:
        c = self.config
        try:
            if c.protocol == "udp":
                if self._udp is None:
                    loop = asyncio.get_running_loop()
                    self._udp, self._udp_proto = await loop.create_datagram_endpoint(
                        _Udp, remote_addr=(c.host, c.port))
                return
            if self._writer is None or self._writer.is_closing() or (self._reader and self._reader.at_eof()):
                await self._disconnect()
                self._reader, self._writer = await asyncio.wait_for(
                    asyncio.open_connection(c.host, c.port, ssl=self._ssl,
                                            server_hostname=(c.server_name or c.host) if self._ssl else None),
                    c.timeout)
        except (OSError, TimeoutError) as exc:
            raise TransientError(f"{self.where}: cannot connect: {exc or type(exc).__name__}") from exc

    async def _disconnect(self) -> None:
        if self._writer is not None:
            self._writer.close()
            try:
                await asyncio.wait_for(self._writer.wait_closed(), 2)
            except (OSError, TimeoutError):
                pass
        self._writer = self._reader = None

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
        await self._connect()
        if self.config.protocol == "udp":
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
        assert self._writer is not None
        try:
            self._writer.write(b"".join(frames))
            await asyncio.wait_for(self._writer.drain(), self.config.timeout)
        except (OSError, TimeoutError) as exc:
            await self._disconnect()
            raise TransientError(f"{self.where}: write failed: {exc or type(exc).__name__}") from exc
        return result

    async def healthcheck(self) -> None:
        await self._connect()

    async def close(self) -> None:
        await self._disconnect()
        if self._udp is not None:
            self._udp.close()
            self._udp = None
