"""Helpers shared by the sink tests: fast retry settings, polling, a scripted in-process sink.

Tests import these by module name (``from sink_helpers import ...``); ``conftest.py`` only holds fixtures,
because several test folders have a ``conftest`` and the name would be ambiguous.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from sink_fakes import make_doc, make_docs, numbers

from exotrace.errors import TransientError
from exotrace.sinks.base import Record, SendResult, Sink
from exotrace.sinks.config import StdoutSinkConfig

__all__ = ["FAST", "ScriptedSink", "eventually", "make_doc", "make_docs", "numbers"]

#: Fast retries for tests (the real defaults are 0.5 s .. 60 s).
FAST = {"retry_initial": 0.005, "retry_max": 0.02, "batch_timeout": 0.01}


async def eventually(pred: Callable[[], bool], timeout: float = 15.0) -> None:
    """Wait until ``pred()`` holds (no fixed sleeps: CI machines can be slow); fail after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


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
