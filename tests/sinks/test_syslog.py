"""Syslog sink against a real rsyslogd on 127.0.0.1: TCP with octet counting, TLS (ossl driver) and UDP."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from sink_fakes import TlsFiles
from sink_helpers import FAST, eventually, make_docs, numbers

from exotrace.sinks import SinkPipeline, load_sinks

RSYSLOGD = shutil.which("rsyslogd") or ("/usr/sbin/rsyslogd" if os.path.exists("/usr/sbin/rsyslogd") else None)
OSSL = any(Path(d, "lmnsd_ossl.so").exists() for d in ("/usr/lib/x86_64-linux-gnu/rsyslog",
                                                        "/usr/lib/aarch64-linux-gnu/rsyslog", "/usr/lib/rsyslog"))

#: CI must run these tests (``.ci/run`` installs rsyslog and rsyslog-openssl): there a missing server is a
#: failure, not a skip. ``CI`` is set by most CI services; ``EXOTRACE_REQUIRE_RSYSLOG=1`` forces it.
STRICT = bool(os.environ.get("CI") or os.environ.get("EXOTRACE_REQUIRE_RSYSLOG"))
NO_RSYSLOG = "rsyslogd is not installed (apt-get install rsyslog)"
NO_OSSL = "rsyslog's openssl driver is not installed (apt-get install rsyslog-openssl)"

pytestmark = pytest.mark.skipif(RSYSLOGD is None and not STRICT, reason=NO_RSYSLOG)

CONF = """\
global(workDirectory="{work}" maxMessageSize="64k"
       DefaultNetstreamDriverCAFile="{ca}" DefaultNetstreamDriverCertFile="{cert}"
       DefaultNetstreamDriverKeyFile="{key}")
module(load="imptcp")
module(load="imudp")
{tls_module}
template(name="line" type="string"
         string="%inputname%|%pri%|%app-name%|%procid%|%msgid%|%hostname%|%timereported:::date-rfc3339%|%msg%\\n")
ruleset(name="out") {{
  action(type="omfile" file="{out}" template="line" flushOnTXEnd="on" asyncWriting="off")
}}
input(type="imptcp" address="127.0.0.1" port="{tcp}" SupportOctetCountedFraming="on" ruleset="out")
input(type="imudp" address="127.0.0.1" port="{udp}" ruleset="out")
{tls_input}
"""


def _free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Rsyslog:
    conf: Path
    out: Path
    tcp: int
    udp: int
    tls: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        """rsyslogd's own output (a file: a pipe nobody reads fills up and stalls it)."""
        return self.conf.with_suffix(".log")

    def start(self) -> None:
        pid = self.conf.with_suffix(".pid")
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([str(RSYSLOGD), "-n", "-f", str(self.conf), "-i", str(pid)],
                                         stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        ports = [self.tcp] + ([self.tls] if OSSL else [])
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rsyslogd exited: {self.log.read_text(errors='replace')[-2000:]}")
            try:
                for port in ports:
                    socket.create_connection(("127.0.0.1", port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"rsyslogd did not start listening: {self.log.read_text(errors='replace')[-2000:]}")

    def stop(self, kill: bool = False) -> None:
        """Stop rsyslogd: SIGTERM (it closes its connections and writes what it read), or SIGKILL."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill() if kill else self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def lines(self, inputname: str) -> list[list[str]]:
        if not self.out.exists():
            return []
        rows = [line.split("|", 7) for line in self.out.read_text().splitlines()]
        return [r for r in rows if r[0] == inputname]

    def wait_for(self, inputname: str, count: int, timeout: float = 15) -> list[list[str]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = self.lines(inputname)
            if len(rows) >= count:
                time.sleep(0.1)  # let any duplicate show up before counting
                return self.lines(inputname)
            time.sleep(0.05)
        return self.lines(inputname)


@pytest.fixture
def rsyslog(tmp_path: Path, tls: TlsFiles) -> Iterator[Rsyslog]:
    if RSYSLOGD is None:
        pytest.fail(NO_RSYSLOG + " and the syslog tests are required here")
    work = tmp_path / "work"
    work.mkdir()
    r = Rsyslog(tmp_path / "rsyslog.conf", tmp_path / "received.log", _free_port(),
                _free_port(socket.SOCK_DGRAM), _free_port())
    tls_module = ('module(load="imtcp" StreamDriver.Name="ossl" StreamDriver.Mode="1" '
                  'StreamDriver.AuthMode="anon")') if OSSL else ""
    tls_input = f'input(type="imtcp" address="127.0.0.1" port="{r.tls}" ruleset="out")' if OSSL else ""
    r.conf.write_text(CONF.format(work=work, ca=tls.ca, cert=tls.cert, key=tls.key, out=r.out, tcp=r.tcp,
                                  udp=r.udp, tls_module=tls_module, tls_input=tls_input))
    try:
        yield r
    finally:
        r.stop()


def _check(rows: list[list[str]], expected: range) -> None:
    got = [orjson.loads(row[7]) for row in rows]
    assert sorted(numbers(got)) == list(expected)  # every message arrived, exactly once
    inputname, pri, app, procid, msgid, host, ts, _ = rows[0]
    assert pri == "134"  # local0.info
    assert app == "exotrace" and msgid == "messagetrace" and procid == str(os.getpid())
    assert host == socket.gethostname()[:255]
    assert ts.startswith("2026-03-01T00:00:")


def test_tcp_octet_counting_after_server_comes_up(rsyslog: Rsyslog, state_dir: Path) -> None:
    docs = make_docs(0, 200, subject="line one\nline two ütf-8 | pipes")  # newlines need octet counting

    async def main() -> None:
        table = {"type": "syslog", "host": "127.0.0.1", "port": rsyslog.tcp, "protocol": "tcp",
                 "batch_max_events": 64, **FAST}
        p = SinkPipeline(load_sinks([table]), state_dir)
        await p.start()
        t1 = await p.submit(docs[:100])  # rsyslog is not running yet: refused, kept
        await asyncio.sleep(0.1)
        assert not p.acked(t1)
        rsyslog.start()
        t2 = await p.submit(docs[100:])
        assert await p.wait_acked(t2, timeout=20) and p.acked(t1)
        await p.close()

    asyncio.run(main())
    rows = rsyslog.wait_for("imptcp", 200)
    _check(rows, range(200))
    assert orjson.loads(rows[0][7])["email"]["subject"] == "line one\nline two ütf-8 | pipes"


@pytest.mark.skipif(not OSSL and not STRICT, reason=NO_OSSL)
def test_tls_with_ca_verification(rsyslog: Rsyslog, state_dir: Path, tls: TlsFiles) -> None:
    if not OSSL:
        pytest.fail(NO_OSSL + " and the syslog tests are required here")
    rsyslog.start()

    async def main() -> None:
        good = {"type": "syslog", "name": "tls", "host": "127.0.0.1", "port": rsyslog.tls, "protocol": "tls",
                "ca_certs": str(tls.ca), **FAST}
        untrusted = {**good, "name": "untrusted", "retry_initial": 0.2, "retry_max": 1.0}
        del untrusted["ca_certs"]  # each failed handshake makes rsyslogd log a line: do not hammer it
        p = SinkPipeline(load_sinks([good, untrusted]), state_dir)
        await p.start()
        t = await p.submit(make_docs(0, 150))
        await eventually(lambda: p.metrics()["tls"]["sent"] == 150
                         and "CERTIFICATE_VERIFY_FAILED" in p.last_errors()["untrusted"])
        assert not p.acked(t)
        await p.close(timeout=0.1)

    asyncio.run(main())
    _check(rsyslog.wait_for("imtcp", 150), range(150))


@pytest.mark.parametrize(("protocol", "kill"), [("tcp", False), ("tls", False), ("tcp", True)],
                         ids=["tcp-sigterm", "tls-sigterm", "tcp-sigkill"])
def test_rsyslog_restart_mid_stream_loses_nothing(rsyslog: Rsyslog, state_dir: Path, tls: TlsFiles,
                                                  protocol: str, kill: bool) -> None:
    """rsyslogd is stopped (SIGTERM, or SIGKILL: a crash) and started again while batches keep coming.
    Messages written on the broken connection in the resend window are sent again on the next one:
    every message arrives; the duplicates are among those written before the restart."""
    if protocol == "tls" and not OSSL:
        if STRICT:
            pytest.fail(NO_OSSL + " and the syslog tests are required here")
        pytest.skip(NO_OSSL)
    rsyslog.start()
    size = 100
    port, inputname = (rsyslog.tcp, "imptcp") if protocol == "tcp" else (rsyslog.tls, "imtcp")
    written_before: list[int] = []

    async def main() -> None:
        table = {"type": "syslog", "host": "127.0.0.1", "port": port, "protocol": protocol,
                 "ca_certs": str(tls.ca), "batch_max_events": size, "resend_window": 30, **FAST}
        p = SinkPipeline(load_sinks([table]), state_dir)
        await p.start()
        for i in range(0, 2000, size):  # a burst: rsyslogd is busy when it goes away
            await p.submit(make_docs(i, i + size))
        await eventually(lambda: p.metrics()["syslog"]["sent"] >= 500)
        await asyncio.to_thread(rsyslog.stop, kill)
        await p.submit(make_docs(2000, 2100))  # while it is down
        await eventually(lambda: p.last_errors()["syslog"] != "")  # the sink noticed: refused
        written_before.append(p.metrics()["syslog"]["sent"])
        await asyncio.to_thread(rsyslog.start)
        assert await p.wait_acked(await p.submit(make_docs(2100, 2200)), timeout=30)
        await p.close()

    asyncio.run(main())
    rows = rsyslog.wait_for(inputname, 2200, timeout=20)
    got = numbers([orjson.loads(row[7]) for row in rows])
    assert sorted(set(got)) == list(range(2200))  # nothing lost
    # duplicates: only messages written before the restart (and one batch whose write failed half-way)
    assert len(got) - 2200 <= written_before[0] + size


def test_udp(rsyslog: Rsyslog, state_dir: Path) -> None:
    rsyslog.start()
    time.sleep(0.2)  # imudp binds asynchronously

    async def main() -> None:
        table = {"type": "syslog", "host": "127.0.0.1", "port": rsyslog.udp, "protocol": "udp",
                 "batch_max_events": 20, **FAST}
        p = SinkPipeline(load_sinks([table]), state_dir)
        await p.start()
        for i in range(0, 100, 20):
            t = await p.submit(make_docs(i, i + 20))
            assert await p.wait_acked(t, timeout=10)
            await asyncio.sleep(0.01)  # loopback UDP is lossless unless the receive buffer overflows
        await p.close()

    asyncio.run(main())
    _check(rsyslog.wait_for("imudp", 100), range(100))
