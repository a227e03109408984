"""The sink contract: what every destination implements, and what the pipeline promises it.

A sink turns a batch of :class:`Record` objects into one or more requests to a destination and says,
per record, what happened. Everything else (batching, buffering, spooling to disk, retries with backoff,
dead letters, metrics, acknowledgement tickets) belongs to :mod:`exotrace.sinks.pipeline`, so a sink
stays small and the delivery guarantees are written once.

``Sink.send(records)`` is the whole contract:

* **Input.** A non-empty sequence of :class:`Record`, in submission order. ``record.raw`` is the ECS
  document already serialized with orjson (UTF-8 bytes, no trailing newline): send it as is whenever the
  wire format allows, so a document is serialized once. ``record.doc`` decodes it lazily when a sink
  needs fields (Splunk's ``time``, Sentinel's columns). ``record.fingerprint`` is Elastic's ``_id``;
  ``record.key`` the row key; ``record.seq`` the pipeline's sequence number (do not send it).
* **Success.** Return a :class:`SendResult`. Records whose index is in neither ``retry`` nor
  ``rejected`` count as delivered (acknowledged by the destination). A duplicate the destination
  refused because it already has it (Elasticsearch 409 on ``create``) is delivered.
  ``retry`` lists indexes that failed transiently (per-item 429/5xx): the pipeline resends only those,
  after ``retry_after`` seconds when given, else after its exponential backoff.
  ``rejected`` maps indexes the destination refused for good (mapping error, invalid event) to a
  one-line reason: the pipeline writes them to the dead-letter file and does not resend them.
* **Whole-request failures** are raised, never returned:
  :class:`~exotrace.errors.TransientError` (429, 5xx, timeout, connection refused or reset; set
  ``retry_after`` from the response when it has one) makes the pipeline resend the same records later;
  :class:`~exotrace.errors.SinkError` means "this request's content is unacceptable" (HTTP 400/413 for
  the whole body): the pipeline splits the batch in halves until the offending record is alone and then
  dead-letters it; :class:`~exotrace.errors.AuthError` or :class:`~exotrace.errors.ConfigError` mean an
  operator must act: the data is kept (memory, then spool) and retried with the longest backoff.
  Any other exception is treated as transient and logged with its traceback.
* **Order and concurrency.** The pipeline runs at most ``config.concurrency`` ``send`` calls of a sink at
  once (1 unless the config says otherwise; the HTTP-based sinks default to 2), each on its own batch, so a
  sink whose config allows more than 1 must tolerate overlapping calls (shared clients, no shared buffers).
  ``send`` may be retried with a subset of a previous batch: make it idempotent where the destination
  allows it (Elasticsearch ``_id``).
* **Lifecycle.** ``start()`` opens clients (it must not fail because the destination is down: the first
  ``send`` reports that). ``healthcheck()`` sends no document but proves reachability and credentials
  (and privileges where the destination tells them without data), for ``exotrace doctor``: it returns
  a short description of what it proved, or raises what a ``send`` would. ``close()`` releases
  clients; the pipeline calls it once, after the last ``send``. Sinks are async context managers.

Sinks never log secrets (tokens, passwords, API keys); reasons and errors name the URL and status only.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from exotrace.sinks.config import SinkConfig

__all__ = ["Record", "SendResult", "Sink"]


class Record:
    """One document on its way to a sink: sequence number, identity and the serialized ECS document."""

    __slots__ = ("seq", "key", "fingerprint", "version", "raw", "_doc")

    def __init__(
        self, seq: int, raw: bytes, *, key: str = "", fingerprint: str = "", version: int = 0,
        doc: dict[str, Any] | None = None,
    ) -> None:
        self.seq = seq
        self.raw = raw
        self.key = key
        self.fingerprint = fingerprint
        #: :func:`exotrace.model.observation_version` of the document (0: unknown).
        self.version = version
        self._doc = doc

    @property
    def doc(self) -> dict[str, Any]:
        """The ECS document as a dict (decoded from ``raw`` on first use)."""
        if self._doc is None:
            self._doc = orjson.loads(self.raw)
        return self._doc

    def __len__(self) -> int:
        return len(self.raw)

    def __repr__(self) -> str:
        return f"Record(seq={self.seq}, key={self.key!r}, bytes={len(self.raw)})"


@dataclass(slots=True)
class SendResult:
    """Per-record outcome of one ``send``: indexes into the batch that was passed in."""

    retry: list[int] = field(default_factory=list)
    rejected: dict[int, str] = field(default_factory=dict)
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return not self.retry and not self.rejected


class Sink(abc.ABC):
    """Base class of every destination. See the module docstring for the contract."""

    #: The config ``type`` this class implements (``elasticsearch``, ``splunk_hec`` ...).
    type: str = ""

    def __init__(self, config: SinkConfig) -> None:
        self.config = config
        self.name = config.name

    async def start(self) -> None:
        """Open clients and files. Must not fail because the destination is unreachable."""
        return None

    @abc.abstractmethod
    async def send(self, records: Sequence[Record]) -> SendResult:
        """Deliver ``records``; return per-record outcomes or raise for the whole request."""

    async def healthcheck(self) -> str:
        """Prove reachability and credentials without sending data; say what was proved, or raise."""
        return "nothing to check"

    async def close(self) -> None:
        """Release clients and files."""
        return None

    async def __aenter__(self) -> Sink:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"
