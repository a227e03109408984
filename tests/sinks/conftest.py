"""Fixtures for the sink tests: documents, TLS material, a scripted in-process sink."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from sink_fakes import TlsFiles, make_tls

from exotrace.errors import TransientError
from exotrace.model import Document
from exotrace.sinks.base import Record, SendResult, Sink
from exotrace.sinks.config import StdoutSinkConfig

#: Fast retries for tests (the real defaults are 0.5 s .. 60 s).
FAST = {"retry_initial": 0.005, "retry_max": 0.02, "batch_timeout": 0.01}


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


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls(tmp_path_factory.mktemp("tls"))


class ScriptedSink(Sink):
    """An in-process sink driven by a script (like dlt's dummy destination).

    Each ``send`` pops the next script entry: an exception instance to raise, a callable
    ``f(records) -> SendResult``, or nothing (deliver all). ``down`` makes every send fail transiently.
    """

    type = "stdout"

    def __init__(self, name: str = "scripted") -> None:
        super().__init__(StdoutSinkConfig(type="stdout", name=name))
        self.script: list[Any] = []
        self.down = False
        self.delivered: list[Record] = []
        self.calls: list[list[int]] = []

    async def send(self, records: Sequence[Record]) -> SendResult:
        self.calls.append([r.seq for r in records])
        if self.down:
            raise TransientError("scripted sink is down")
        step = self.script.pop(0) if self.script else None
        if isinstance(step, BaseException):
            raise step
        result = step(records) if callable(step) else SendResult()
        bad = set(result.retry) | set(result.rejected)
        self.delivered.extend(r for i, r in enumerate(records) if i not in bad)
        return result


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"
