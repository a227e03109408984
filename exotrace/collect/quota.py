"""Per-tenant quota governor: at most ``limit`` requests per rolling ``period`` of the Clock's time."""

from __future__ import annotations

import asyncio
from collections import deque
from datetime import datetime, timedelta

from exotrace.clock import Clock
from exotrace.collect.stop import unless_stopped


class QuotaGovernor:
    """A rolling-window limiter. ``pause()`` (from a 429's Retry-After) holds every request of the tenant."""

    def __init__(self, limit: int, period: timedelta, clock: Clock) -> None:
        self.limit = limit
        self.period = period
        self.clock = clock
        self._stamps: deque[datetime] = deque()
        self._paused_until: datetime | None = None
        self._lock = asyncio.Lock()
        self.waited = 0.0

    def _trim(self, now: datetime) -> None:
        edge = now - self.period
        while self._stamps and self._stamps[0] <= edge:
            self._stamps.popleft()

    def used(self) -> int:
        """Requests made in the current rolling window."""
        self._trim(self.clock.now())
        return len(self._stamps)

    def export(self) -> list[str]:
        """Request times of the current window (persisted so a restart does not overspend the quota)."""
        self._trim(self.clock.now())
        return [t.isoformat() for t in self._stamps]

    def load(self, stamps: list[str]) -> None:
        """Restore request times saved by :meth:`export` (older ones are dropped)."""
        now = self.clock.now()
        for text in stamps:
            try:
                t = datetime.fromisoformat(text)
            except (TypeError, ValueError):
                continue
            if now - self.period < t <= now:
                self._stamps.append(t)
        self._stamps = deque(sorted(self._stamps))

    def pause(self, seconds: float) -> None:
        until = self.clock.now() + timedelta(seconds=seconds)
        if self._paused_until is None or until > self._paused_until:
            self._paused_until = until

    async def acquire(self, stop: asyncio.Event | None = None) -> None:
        """Wait until one more request fits, then count it; raise ``Stopped`` when ``stop`` is set first."""
        await unless_stopped(self._acquire(), stop)

    async def _acquire(self) -> None:
        async with self._lock:
            while True:
                now = self.clock.now()
                self._trim(now)
                wait = 0.0
                if self._paused_until is not None and self._paused_until > now:
                    wait = (self._paused_until - now).total_seconds()
                elif len(self._stamps) >= self.limit:
                    wait = (self._stamps[0] + self.period - now).total_seconds()
                if wait <= 0:
                    self._stamps.append(now)
                    return
                self.waited += wait
                await self.clock.sleep(min(wait, self.period.total_seconds()) + 0.001)
