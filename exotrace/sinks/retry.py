"""Retry policy for sinks: exponential backoff with full jitter, capped, honouring the server's Retry-After.

``parse_retry_after`` is the shared one from :mod:`exotrace.net.retry`, re-exported for the sinks.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from exotrace.net.retry import parse_retry_after

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
