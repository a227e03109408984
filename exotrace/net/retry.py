"""Exponential backoff with full jitter, and Retry-After parsing (both in seconds of a Clock)."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


class Backoff:
    """Delays ``base * 2**n`` capped at ``cap``, with full jitter (``random.uniform(d/2, d)``).

    A server's ``retry_after`` wins over the computed delay, bounded by twice ``cap`` so that a broken
    header cannot stall a caller for hours.
    """

    def __init__(self, base: float = 1.0, cap: float = 60.0, rng: random.Random | None = None) -> None:
        self.base = base
        self.cap = cap
        self.attempt = 0
        self._rng = rng or random.Random()

    def next(self, retry_after: float | None = None) -> float:
        """The delay before the next attempt (and count this one)."""
        d = min(self.cap, self.base * (2 ** min(self.attempt, 60)))
        self.attempt += 1
        if retry_after is not None and retry_after >= 0:
            return min(retry_after, self.cap * 2)
        return self._rng.uniform(d / 2, d)

    def reset(self) -> None:
        self.attempt = 0


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date); None if absent/bad."""
    if not value:
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
