"""Clocks: the wall clock, and a scaled clock shared by the simulator and the collector.

Everything that reasons about message-trace time (windows, quota, late rows) takes a :class:`Clock`,
so a simulated tenant can run many times faster than real time while the collector stays correct.
"""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """What time it is, and how to wait, in one time base."""

    def now(self) -> datetime:
        """Current time, timezone-aware UTC."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""
        ...

    def sleep_sync(self, seconds: float) -> None:
        """Blocking variant of :meth:`sleep`."""
        ...


class SystemClock:
    """The real wall clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def sleep_sync(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds))


class ScaledClock:
    """Simulated time: starts at ``start`` and runs ``speed`` times faster than the wall clock.

    ``advance()`` jumps forward instantly, which tests use to make rows appear or settle.
    Thread-safe: the simulator server thread and the collector share one instance.
    """

    def __init__(self, start: datetime | None = None, speed: float = 1.0) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.speed = speed
        self._origin_wall = time.monotonic()
        self._origin_sim = start or datetime.now(UTC)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            elapsed = (time.monotonic() - self._origin_wall) * self.speed
            return self._origin_sim + timedelta(seconds=elapsed)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._origin_sim += timedelta(seconds=seconds)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.speed)

    def sleep_sync(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds) / self.speed)
