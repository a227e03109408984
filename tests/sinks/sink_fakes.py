"""Protocol-faithful fakes of the sink destinations, served over loopback (plain or TLS).

No Elasticsearch, OpenSearch, Splunk or Azure can run here, so each fake implements the part of the wire
protocol exotrace uses, checks the exact request shape (paths, headers, body framing), records what it
accepted, and injects faults: scripted whole-request statuses, per-item bulk statuses, connection resets,
and "down" periods. The HTTP layer is a small HTTP/1.1 server on asyncio streams so a fault can abort the
TCP connection (a reset), which ASGI servers cannot do. Used by tests/sinks and bench/sinks_bench.py.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import gzip
import hashlib
import ipaddress
import json
import socket
import ssl
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

from exotrace.model import Document

# --------------------------------------------------------------------------------------------------
# Test documents


def make_doc(i: int, *, status: str = "Delivered", subject: str | None = None, pad: int = 0) -> Document:
    """A realistic ECS message-trace document, numbered ``i``."""
    trace_id = f"{i:08x}-1111-2222-3333-444455556666"
    recipient = f"user{i}@contoso.com"
    doc: dict[str, Any] = {
        "@timestamp": f"2026-03-01T{(i // 3600) % 24:02d}:{(i // 60) % 60:02d}:{i % 60:02d}.{i % 1000:03d}Z",
        "ecs": {"version": "8.11.0"},
        "event": {"category": ["email"], "type": ["info"], "outcome": "success"},
        "email": {"local_id": trace_id, "message_id": f"<m{i}@fabrikam.com>", "subject": subject or f"Report {i}",
                  "from": {"address": ["sender@fabrikam.com"]}, "to": {"address": [recipient]},
                  "attachments": {"file": {"size": 1000 + i}}, "direction": "inbound",
                  "delivery_timestamp": "2026-03-01T00:00:00.0000000Z"},
        "source": {"ip": "203.0.113.9", "domain": "fabrikam.com"},
        "destination": {"domain": "contoso.com"},
        "microsoft": {"online_message_trace": {"Status": status, "MessageTraceId": trace_id, "n": i}},
    }
    if pad:
        doc["email"]["pad"] = "x" * pad
    fp = base64.b64encode(hashlib.sha1(f"{trace_id}|{recipient}|{status}".encode()).digest()).decode()
    return Document(doc=doc, key=f"{trace_id}|{recipient}", fingerprint=fp, status=status)


def make_docs(start: int, stop: int, **kw: Any) -> list[Document]:
    return [make_doc(i, **kw) for i in range(start, stop)]


def numbers(docs: Sequence[dict[str, Any]]) -> list[int]:
    """The ``n`` of each received document, in arrival order."""
    return [d["microsoft"]["online_message_trace"]["n"] for d in docs]


# --------------------------------------------------------------------------------------------------
# TLS material


@dataclass
class TlsFiles:
    ca: Path
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.cert, self.key)
        return ctx


def make_tls(folder: Path) -> TlsFiles:
    """A throwaway CA and a server certificate for 127.0.0.1 / localhost."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "exotrace test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    files = TlsFiles(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    return files


# --------------------------------------------------------------------------------------------------
# A small HTTP/1.1 server


@dataclass
class Request:
    method: str
    target: str
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.target).query)

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        return cls(status, orjson.dumps(data), {"Content-Type": "application/json", **(headers or {})})


RESET = object()  # handler result: abort the connection without answering

_REASONS = {200: "OK", 201: "Created", 204: "No Content", 400: "Bad Request", 401: "Unauthorized",
            403: "Forbidden", 404: "Not Found", 409: "Conflict", 413: "Payload Too Large",
            429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable"}


class HttpFake:
    """Base: run ``handle(request)`` for each request on 127.0.0.1 in a background thread."""

    def __init__(self, tls: TlsFiles | None = None) -> None:
        self.tls = tls
        self.port = 0
        self.requests: list[Request] = []
        self.script: list[Any] = []  # whole-request faults consumed in order: int status, RESET, or Response
        self.down = False  # reset every connection while true
        self.errors: list[str] = []  # protocol violations seen (tests assert this stays empty)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._open: set[asyncio.StreamWriter] = set()  # connections being served

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def start(self) -> HttpFake:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._listen())
            ready.set()
            self._loop.run_forever()
            self._loop.close()

        self._thread = threading.Thread(target=run, daemon=True, name=type(self).__name__)
        self._thread.start()
        ready.wait(10)
        return self

    async def _listen(self) -> None:
        ctx = self.tls.server_context() if self.tls else None
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        self._server = await asyncio.start_server(self._conn, sock=sock, ssl=ctx, backlog=128,
                                                  limit=32 * 1024 * 1024)  # big bodies in few reads

    def stop(self) -> None:
        """Go down: close the listener (clients then get 'connection refused') and abort the open
        (keep-alive) connections; ``restart()`` listens again."""
        if self._loop is None:
            return

        async def _close() -> None:
            assert self._server is not None
            self._server.close()
            for writer in list(self._open):  # Python 3.11's Server.close() leaves them open
                writer.transport.abort()

        asyncio.run_coroutine_threadsafe(_close(), self._loop).result(10)

    def restart(self) -> None:
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)

    def shutdown(self) -> None:
        if self._loop is not None:
            self.stop()

            async def _cancel_all() -> None:
                tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

            asyncio.run_coroutine_threadsafe(_cancel_all(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._thread:
                self._thread.join(10)
            self._loop = None

    def __enter__(self) -> HttpFake:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._open.add(writer)
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                method, target, _ = line.decode("latin-1").split(" ", 2)
                headers: dict[str, str] = {}
                while True:
                    h = await reader.readline()
                    if h in (b"\r\n", b"\n", b""):
                        break
                    k, _, v = h.decode("latin-1").partition(":")
                    headers[k.strip().lower()] = v.strip()
                if headers.get("transfer-encoding", "").lower() == "chunked":
                    body = b""
                    while True:
                        size = int((await reader.readline()).split(b";")[0], 16)
                        if size == 0:
                            await reader.readline()
                            break
                        body += await reader.readexactly(size)
                        await reader.readline()
                else:
                    body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
                req = Request(method, target, headers, body)
                if self.down:
                    writer.transport.abort()
                    return
                with self._lock:
                    self.requests.append(req)
                    scripted = self.script.pop(0) if self.script and self._scripted(req) else None
                if scripted is RESET:
                    writer.transport.abort()
                    return
                if isinstance(scripted, int):
                    resp = self.fault_response(req, scripted)
                elif isinstance(scripted, Response):
                    resp = scripted
                else:
                    try:
                        resp = self.handle(req)
                    except Exception as exc:  # a bug in the fake: answer 500 and record it
                        self.errors.append(f"handler crashed: {exc!r}")
                        resp = Response(500, str(exc).encode())
                if resp is RESET:
                    writer.transport.abort()
                    return
                self._write(writer, resp)
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    writer.close()
                    return
        except (ConnectionError, asyncio.IncompleteReadError, ValueError, ssl.SSLError):
            return
        except asyncio.CancelledError:  # shutdown: end quietly (Python 3.11's stream callback would log it)
            writer.transport.abort()
        finally:
            self._open.discard(writer)
            # Close here, on the loop's thread. Left to the garbage collector, StreamWriter.__del__ closes
            # the transport from whatever thread collects it, and that close removes the selector's reader
            # for the transport's fd number, which by then may belong to a newer connection: that
            # connection's request then sits unread (seen as a client waiting 30 s for a response).
            writer.close()

    def _write(self, writer: asyncio.StreamWriter, resp: Response) -> None:
        head = [f"HTTP/1.1 {resp.status} {_REASONS.get(resp.status, 'Status')}",
                f"Content-Length: {len(resp.body)}"]
        head += [f"{k}: {v}" for k, v in {**self.default_headers(), **resp.headers}.items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + resp.body)

    def _scripted(self, req: Request) -> bool:
        """Which requests consume the fault script (default: every request)."""
        return True

    def default_headers(self) -> dict[str, str]:
        return {}

    def fault_response(self, req: Request, status: int) -> Response:
        headers = {"Retry-After": "0"} if status in (429, 503) else {}
        return Response.json({"error": "injected", "status": status}, status, headers)

    def handle(self, req: Request) -> Any:
        raise NotImplementedError

    def expect(self, cond: bool, message: str) -> None:
        if not cond:
            self.errors.append(message)


# --------------------------------------------------------------------------------------------------
# Elasticsearch / OpenSearch


class FakeElasticsearch(HttpFake):
    """``GET /`` and ``POST /{target}/_bulk`` with per-item results, as Elasticsearch 8/9 answers them.

    ``item_faults[_id]`` is a list of statuses returned for that id's next occurrences (then success);
    ``reject_ids`` always fail with a 400 mapping error. Documents are kept as raw JSON in
    ``store[index][_id]`` (decoded on access through ``indices``); ``preload`` adds existing ones.
    Security: ``index_privileges`` are what the credentials hold on every index (None: all), as the
    has-privileges API reports them; without ``monitor`` ``GET /`` is forbidden (403); with
    ``security = False`` the security APIs fail as on a cluster whose security is off.
    """

    product = "Elasticsearch"

    def __init__(self, tls: TlsFiles | None = None, *, api_key: str | None = None,
                 basic: tuple[str, str] | None = None) -> None:
        super().__init__(tls)
        self.api_key = api_key
        self.basic = basic
        self.store: dict[str, dict[str, bytes]] = {}
        #: External versions of indexed documents (``version_type`` external / external_gte), per index.
        self.versions: dict[str, dict[str, int]] = {}
        self.item_faults: dict[str, list[int]] = {}
        self.reject_ids: set[str] = set()
        self.bulk_requests = 0
        self.docs_received = 0
        self.index_privileges: set[str] | None = None
        self.monitor = True
        self.security = True

    def default_headers(self) -> dict[str, str]:
        return {"X-Elastic-Product": self.product} if self.product else {}

    def _scripted(self, req: Request) -> bool:
        return req.path.endswith("/_bulk")

    def _check_auth(self, req: Request) -> Response | None:
        auth = req.headers.get("authorization", "")
        if self.api_key is not None and auth != f"ApiKey {self.api_key}":
            return Response.json({"error": {"type": "security_exception"}, "status": 401}, 401)
        if self.basic is not None:
            token = base64.b64encode(f"{self.basic[0]}:{self.basic[1]}".encode()).decode()
            if auth != f"Basic {token}":
                return Response.json({"error": {"type": "security_exception"}, "status": 401}, 401)
        return None

    def check_content_type(self, req: Request) -> None:
        ctype = req.headers.get("content-type", "")
        self.expect(ctype in ("application/vnd.elasticsearch+x-ndjson; compatible-with=8",
                              "application/x-ndjson"), f"bulk content-type {ctype!r}")
        accept = req.headers.get("accept", "")
        self.expect(accept in ("application/vnd.elasticsearch+json; compatible-with=8", "application/json"),
                    f"bulk accept {accept!r}")

    def handle(self, req: Request) -> Any:
        denied = self._check_auth(req)
        if denied:
            return denied
        if req.path == "/_security/user/_has_privileges" and req.method in ("GET", "POST"):
            return self._has_privileges(req)
        if req.method in ("GET", "HEAD") and req.path == "/" and not self.monitor:
            return Response.json({"error": {"type": "security_exception", "reason": "action [cluster:monitor/main] "
                                            "is unauthorized for API key"}, "status": 403}, 403)
        if req.method in ("GET", "HEAD") and req.path == "/":
            return Response.json({"name": "fake", "cluster_name": "fake",
                                  "version": {"number": "8.15.0", "build_flavor": "default"},
                                  "tagline": "You Know, for Search"})
        if req.method in ("POST", "PUT") and req.path.endswith("/_bulk"):
            return self._bulk(req)
        return Response.json({"error": f"no handler for {req.method} {req.path}"}, 404)

    def _has_privileges(self, req: Request) -> Response:
        if not self.security:
            return Response.json({"error": {"type": "exception", "reason": "Security must be explicitly enabled "
                                            "when using a [basic] license"}, "status": 500}, 500)
        self.expect(req.headers.get("content-type", "").startswith(("application/json",
                                                                     "application/vnd.elasticsearch+json")),
                    "has_privileges content-type")
        index: dict[str, dict[str, bool]] = {}
        for entry in req.json().get("index", []):
            for name in entry["names"]:
                index[name] = {p: self.index_privileges is None or p in self.index_privileges
                               for p in entry["privileges"]}
        return Response.json({"username": "exotrace-writer", "has_all_requested":
                              all(v for privs in index.values() for v in privs.values()),
                              "cluster": {}, "index": index, "application": {}})

    def _bulk(self, req: Request) -> Response:
        self.check_content_type(req)
        body = req.body
        if req.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        self.expect(body.endswith(b"\n"), "bulk body must end with a newline")
        fp = req.query.get("filter_path")
        # exotrace asks only for errors, items.*.status and items.*.error.type/reason: answer just that
        filtered = fp == ["errors,items.*.status,items.*.error.type,items.*.error.reason"]
        self.expect(not fp or filtered, f"filter_path {fp}")
        lines = body.split(b"\n")[:-1]
        default_index = req.path[: -len("/_bulk")].strip("/") or None
        items = []
        errors = False
        with self._lock:
            self.bulk_requests += 1
            for i in range(0, len(lines), 2):
                action = orjson.loads(lines[i])
                (op, meta), = action.items()
                src = lines[i + 1]
                self.docs_received += 1
                index = meta.get("_index", default_index)
                _id = meta.get("_id") or base64.urlsafe_b64encode(uuid.uuid4().bytes[:15]).decode()  # auto id
                if not (src[:1] == b"{" and src[-1:] == b"}" and op in ("create", "index") and index
                        and meta.get("_id") != ""):  # messages formatted only on failure (cheap fake)
                    self.errors.append(f"bad bulk item: {action} / {src[:80]!r}")
                status, extra = self._item(op, index, _id, src, meta)
                if status >= 300:
                    errors = True
                    if filtered:
                        err = extra["error"]
                        items.append({op: {"status": status, "error": {"type": err["type"], "reason": err["reason"]}}})
                        continue
                items.append({op: {"status": status}} if filtered else
                             {op: {"_index": index, "_id": _id, "status": status, **extra}})
        resp = Response.json({"errors": errors, "items": items} if filtered else
                             {"took": 1, "errors": errors, "items": items})
        if "compatible-with=8" in req.headers.get("accept", ""):
            resp.headers["Content-Type"] = "application/vnd.elasticsearch+json;compatible-with=8"
        return resp

    @property
    def indices(self) -> dict[str, dict[str, dict[str, Any]]]:
        with self._lock:
            return {ix: {k: orjson.loads(v) for k, v in docs.items()} for ix, docs in self.store.items()}

    def preload(self, index: str, _id: str, doc: dict[str, Any]) -> None:
        self.store.setdefault(index, {})[_id] = orjson.dumps(doc)

    def _item(self, op: str, index: str, _id: str, src: bytes, meta: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        faults = self.item_faults.get(_id)
        if faults:
            status = faults.pop(0)
            kind = {429: "es_rejected_execution_exception", 400: "document_parsing_exception",
                    403: "cluster_block_exception"}.get(status, "internal_server_error")
            return status, {"error": {"type": kind, "reason": f"injected {status}"}}
        if _id in self.reject_ids:
            return 400, {"error": {"type": "document_parsing_exception",
                                  "reason": "[1:2] failed to parse field [email.subject] of type [keyword]"}}
        docs = self.store.setdefault(index, {})
        if op == "create" and _id in docs:
            return 409, {"error": {"type": "version_conflict_engine_exception",
                                  "reason": f"[{_id}]: version conflict, document already exists"}}
        versions = self.versions.setdefault(index, {})
        version_type = meta.get("version_type")
        if version_type is not None:
            self.expect(version_type in ("external", "external_gte") and isinstance(meta.get("version"), int)
                        and meta["version"] >= 0, f"bad external version {meta}")
            stored = versions.get(_id)
            if stored is not None and (meta["version"] < stored or (version_type == "external"
                                                                     and meta["version"] == stored)):
                return 409, {"error": {"type": "version_conflict_engine_exception",
                                      "reason": f"[{_id}]: version conflict, current version [{stored}] is "
                                                f"higher or equal to the one provided [{meta['version']}]"}}
            versions[_id] = meta["version"]
        created = _id not in docs
        docs[_id] = src
        return (201 if created else 200), {"result": "created" if created else "updated",
                                           "_version": versions.get(_id, 1)}

    def all_docs(self) -> list[dict[str, Any]]:
        return [d for idx in self.indices.values() for d in idx.values()]


class FakeOpenSearch(FakeElasticsearch):
    """OpenSearch answers like Elasticsearch 7 without the product header, and takes plain JSON types."""

    product = ""

    def check_content_type(self, req: Request) -> None:
        ctype = req.headers.get("content-type", "")
        self.expect(ctype in ("application/x-ndjson", "application/json"), f"bulk content-type {ctype!r}")

    def handle(self, req: Request) -> Any:
        denied = self._check_auth(req)
        if denied:
            return denied
        if req.path.startswith("/_security/"):  # an Elasticsearch API OpenSearch does not have
            return Response.json({"error": "no handler found for uri [" + req.path + "]", "status": 400}, 400)
        if req.method == "GET" and req.path == "/" and not self.monitor:
            return Response.json({"error": {"type": "security_exception", "reason": "no permissions for "
                                            "[cluster:monitor/main]"}, "status": 403}, 403)
        if req.method == "GET" and req.path == "/":
            return Response.json({"name": "fake", "version": {"distribution": "opensearch", "number": "2.15.0"}})
        return super().handle(req)


# --------------------------------------------------------------------------------------------------
# Splunk HEC


class FakeSplunkHec(HttpFake):
    """``/services/collector/event`` (+ ``/ack``, ``/health``) as Splunk Enterprise answers it.

    ``ack_enabled`` mirrors the token setting: requests then need ``X-Splunk-Request-Channel`` and get an
    ``ackId``; an ack turns true after ``ack_after_polls`` polls. ``invalid_markers``: events whose
    ``event`` JSON contains one of these strings get HEC's 400 code 6 with ``invalid-event-number``.
    """

    def __init__(self, tls: TlsFiles | None = None, *, token: str = "hec-token", ack_enabled: bool = False,
                 ack_after_polls: int = 1) -> None:
        super().__init__(tls)
        self.token = token
        self.ack_enabled = ack_enabled
        self.ack_after_polls = ack_after_polls
        self._events: list[bytes | dict[str, Any]] = []  # raw envelope lines are decoded on access
        self.pending_acks: dict[int, tuple[int, bool]] = {}  # ackId -> (polls, lost)
        self.next_ack = 0
        self.invalid_markers: set[str] = set()
        self.lose_unacked = False  # drop events of unacknowledged requests (indexer failure)
        self.indexes: set[str] | None = None  # indexes the token may write to (None: any)

    def _scripted(self, req: Request) -> bool:
        return req.path.endswith("/event")

    def handle(self, req: Request) -> Any:
        if req.headers.get("authorization") != f"Splunk {self.token}":
            return Response.json({"text": "Invalid token", "code": 4}, 403)
        if req.path == "/services/collector/health":
            return Response.json({"text": "HEC is healthy", "code": 17})
        channel = req.headers.get("x-splunk-request-channel")
        if self.ack_enabled:
            if not channel:
                return Response.json({"text": "Data channel is missing", "code": 10}, 400)
            try:
                uuid.UUID(channel)
            except ValueError:
                return Response.json({"text": "Invalid data channel", "code": 11}, 400)
        if req.path == "/services/collector/ack":
            return self._ack(req)
        if req.path != "/services/collector/event":
            return Response.json({"text": "The requested URL was not found on this server.", "code": 404}, 404)
        body = gzip.decompress(req.body) if req.headers.get("content-encoding") == "gzip" else req.body
        if not self.invalid_markers and self.indexes is None:  # fast path: one envelope per line, kept raw
            lines = [line for line in body.split(b"\n") if line.strip()]
            if all(line[:1] == b"{" and line[-1:] == b"}" and b'"event":' in line for line in lines):
                return self._accept(lines)
        events = []
        dec = json.JSONDecoder()
        text = body.decode()
        pos = 0
        n = 0
        while True:
            while pos < len(text) and text[pos] in " \r\n\t":
                pos += 1
            if pos >= len(text):
                break
            try:
                ev, pos = dec.raw_decode(text, pos)
            except ValueError:
                return Response.json({"text": "Invalid data format", "code": 6, "invalid-event-number": n}, 400)
            if not isinstance(ev, dict) or "event" not in ev:
                return Response.json({"text": "Event field is required", "code": 12, "invalid-event-number": n},
                                     400)
            if any(m in json.dumps(ev["event"]) for m in self.invalid_markers):
                return Response.json({"text": "Invalid data format", "code": 6, "invalid-event-number": n}, 400)
            events.append(ev)
            n += 1
        return self._accept(events)

    @property
    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return [orjson.loads(e) if isinstance(e, bytes) else e for e in self._events]

    def _accept(self, events: Sequence[bytes | dict[str, Any]]) -> Response:
        if not events:
            return Response.json({"text": "No data", "code": 5}, 400)
        if self.indexes is not None and any(isinstance(e, dict) and e.get("index", "main") not in self.indexes
                                            for e in events):
            return Response.json({"text": "Incorrect index", "code": 7, "invalid-event-number": 0}, 400)
        with self._lock:
            if self.ack_enabled:
                ack_id = self.next_ack
                self.next_ack += 1
                self.pending_acks[ack_id] = (0, self.lose_unacked)
                if not self.lose_unacked:
                    self._events.extend(events)
                return Response.json({"text": "Success", "code": 0, "ackId": ack_id})
            self._events.extend(events)
        return Response.json({"text": "Success", "code": 0})

    def _ack(self, req: Request) -> Response:
        if not self.ack_enabled:
            return Response.json({"text": "ACK is disabled", "code": 14}, 400)
        ids = req.json().get("acks", [])
        out = {}
        with self._lock:
            for i in ids:
                polls, lost = self.pending_acks.get(i, (0, True))
                polls += 1
                done = i in self.pending_acks and polls >= self.ack_after_polls and not lost
                if i in self.pending_acks:
                    self.pending_acks[i] = (polls, lost)
                out[str(i)] = done
        return Response.json({"acks": out})


# --------------------------------------------------------------------------------------------------
# Azure: Entra ID token endpoint + Logs Ingestion API


class FakeAzureMonitor(HttpFake):
    """Entra ID (OpenID discovery + client-credentials token) and the Logs Ingestion endpoint, over TLS."""

    def __init__(self, tls: TlsFiles, *, tenant: str, client_id: str, client_secret: str, dcr: str,
                 stream: str) -> None:
        super().__init__(tls)
        self.tenant, self.client_id, self.client_secret = tenant, client_id, client_secret
        self.dcr, self.stream = dcr, stream
        self.tokens: set[str] = set()
        self.token_requests = 0
        self._bodies: list[bytes] = []  # accepted JSON arrays, decoded on access
        self.body_sizes: list[int] = []

    def _scripted(self, req: Request) -> bool:
        return "/dataCollectionRules/" in req.path

    def handle(self, req: Request) -> Any:
        base = f"{self.url}/{self.tenant}"
        if req.path in (f"/{self.tenant}/v2.0/.well-known/openid-configuration",
                        f"/{self.tenant}/.well-known/openid-configuration"):
            return Response.json({"token_endpoint": f"{base}/oauth2/v2.0/token",
                                  "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                                  "issuer": f"{base}/v2.0", "device_authorization_endpoint":
                                  f"{base}/oauth2/v2.0/devicecode"})
        if req.path == f"/{self.tenant}/oauth2/v2.0/token":
            form = {k: v[0] for k, v in parse_qs(req.body.decode()).items()}
            self.token_requests += 1
            self.expect(form.get("grant_type") == "client_credentials", f"grant_type {form.get('grant_type')}")
            self.expect(form.get("scope") == "https://monitor.azure.com/.default", f"scope {form.get('scope')}")
            if form.get("client_id") != self.client_id or form.get("client_secret") != self.client_secret:
                return Response.json({"error": "invalid_client",
                                      "error_description": "AADSTS7000215: Invalid client secret provided."}, 401)
            token = uuid.uuid4().hex
            self.tokens.add(token)
            return Response.json({"token_type": "Bearer", "expires_in": 3599, "access_token": token})
        expected = f"/dataCollectionRules/{self.dcr}/streams/{self.stream}"
        if req.path == expected:
            return self._ingest(req)
        return Response.json({"error": {"code": "NotFound", "message": f"{req.path}"}}, 404)

    def _ingest(self, req: Request) -> Response:
        self.expect(req.method == "POST", f"method {req.method}")
        self.expect(req.query.get("api-version") == ["2023-01-01"], f"api-version {req.query}")
        auth = req.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in self.tokens:
            return Response.json({"error": {"code": "InvalidToken"}}, 401)
        self.expect(req.headers.get("content-encoding") == "gzip", "body must be gzip")
        self.expect(req.headers.get("content-type", "").startswith("application/json"), "content-type json")
        raw = gzip.decompress(req.body)
        self.body_sizes.append(len(raw))
        if len(raw) > 1_000_000:
            return Response.json({"error": {"code": "ContentLengthLimitExceeded"}}, 413)
        self.expect(raw[:2] == b"[{" and raw[-2:] == b"}]", "body must be a JSON array of objects")
        with self._lock:
            self._bodies.append(raw)
        return Response(204)

    @property
    def rows(self) -> list[dict[str, Any]]:
        """Accepted rows; each must have the TimeGenerated column custom tables require."""
        with self._lock:
            rows = [row for body in self._bodies for row in orjson.loads(body)]
        for row in rows:
            self.expect("TimeGenerated" in row, "row without TimeGenerated")
        return rows


# --------------------------------------------------------------------------------------------------
# Generic HTTP intake (NDJSON / JSON array / Sekoia /batch)


class FakeIntake(HttpFake):
    """Accepts NDJSON, JSON arrays and Sekoia.io ``/batch`` bodies; checks an auth header when set."""

    def __init__(self, tls: TlsFiles | None = None, *, auth: tuple[str, str] | None = None,
                 intake_key: str | None = None, reject: Callable[[dict[str, Any]], bool] | None = None) -> None:
        super().__init__(tls)
        self.auth = auth
        self.intake_key = intake_key
        self.reject = reject
        self._docs: list[bytes | str] = []  # one JSON document each, decoded on access

    @property
    def docs(self) -> list[dict[str, Any]]:
        with self._lock:
            return [orjson.loads(d) for d in self._docs]

    def handle(self, req: Request) -> Any:
        if self.auth and req.headers.get(self.auth[0].lower()) != self.auth[1]:
            return Response.json({"message": "unauthorized"}, 401)
        if req.method != "POST":
            return Response.json({"message": "method not allowed"}, 405, {"Allow": "POST"})
        body = gzip.decompress(req.body) if req.headers.get("content-encoding") == "gzip" else req.body
        ctype = req.headers.get("content-type", "")
        raw: list[bytes | str]
        if req.path == "/batch":
            data = orjson.loads(body)
            if data.get("intake_key") != self.intake_key:
                return Response.json({"message": "Invalid intake key"}, 401)
            self.expect(set(data) == {"intake_key", "jsons"}, f"sekoia body keys {sorted(data)}")
            self.expect(all(isinstance(j, str) for j in data["jsons"]), "jsons must be JSON strings")
            raw = data["jsons"]
        elif ctype == "application/x-ndjson":
            raw = [line for line in body.split(b"\n") if line]
            self.expect(all(line[:1] == b"{" and line[-1:] == b"}" for line in raw), "NDJSON lines must be objects")
        elif ctype == "application/json":
            raw = [orjson.dumps(d) for d in orjson.loads(body)]
        else:
            return Response.json({"message": f"unsupported content-type {ctype}"}, 415)
        if self.reject and any(self.reject(orjson.loads(d)) for d in raw):
            return Response.json({"message": "invalid event"}, 400)
        with self._lock:
            self._docs.extend(raw)
        docs = raw
        if req.path == "/batch":
            return Response.json({"received": True, "event_ids": [str(uuid.uuid4()) for _ in docs]})
        return Response(200, b"ok")
