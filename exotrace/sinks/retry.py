"""Retry policy: exponential backoff with full jitter, capped, honouring the server's Retry-After."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime

__all__ = ["Backoff", "parse_retry_after"]


@dataclass(slots=True)
class Backoff:
    """Delays for attempt 1, 2, ...: ``uniform(initial/2, min(max, initial * 2**(n-1)))``.

    A ``retry_after`` from the server wins over the computed delay (still capped at ``maximum`` times
    two, so a broken header cannot stall a sink for hours).
    """

    initial: float = 0.5
    maximum: float = 60.0
    attempt: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def next_delay(self, retry_after: float | None = None) -> float:
        self.attempt += 1
        if retry_after is not None and retry_after >= 0:
            return min(retry_after, self.maximum * 2)
        ceiling = min(self.maximum, self.initial * (2 ** min(self.attempt - 1, 30)))
        return self.rng.uniform(min(self.initial / 2, ceiling), ceiling)

    def reset(self) -> None:
        self.attempt = 0


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP date); None when absent or invalid."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        from datetime import UTC, datetime

        when = parsedate_to_datetime(value)
        return max(0.0, (when - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError, IndexError):
        return None
