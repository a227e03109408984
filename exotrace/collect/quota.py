"""Per-tenant quota governor: at most ``limit`` requests per rolling ``period`` of the Clock's time."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable
from datetime import datetime, timedelta

from exotrace.clock import Clock


def recent_stamps(stamps: Iterable[str], now: datetime, period: timedelta) -> list[datetime]:
    """The request times (ISO text, as :meth:`QuotaGovernor.export` saves them) within ``period`` before
    ``now``, oldest first; unreadable ones are skipped."""
    found = []
    for text in stamps:
        try:
            t = datetime.fromisoformat(text)
        except (TypeError, ValueError):
            continue
        if now - period < t <= now:
            found.append(t)
    return sorted(found)


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
        self._stamps = deque(sorted([*self._stamps, *recent_stamps(stamps, self.clock.now(), self.period)]))

    def pause(self, seconds: float) -> None:
        until = self.clock.now() + timedelta(seconds=seconds)
        if self._paused_until is None or until > self._paused_until:
            self._paused_until = until

    async def acquire(self) -> None:
        """Wait until one more request fits, then count it."""
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
