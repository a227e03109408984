"""Deterministic fault injection and the per-tenant quota.

A fault is decided by a hash of (seed, fault kind, request key, attempt number of that key), so a run is
reproducible, and never more than two attempts of the same request fail in a row, so a collector that
retries correctly always gets through. Faults never change the data.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict, defaultdict, deque

#: Faults decided before the request is handled, in this order (first hit wins).
REQUEST_FAULTS = ("throttle", "flaky", "drop", "slow", "badrcpt", "truncate", "malformed")
#: Throttling bursts: each slot of simulated time has a burst with the scenario's probability.
BURST_SLOT = 600.0
_MAX_KEYS = 50_000


def unit(*parts: object) -> float:
    """A deterministic number in [0, 1) from ``parts``."""
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class Faults:
    """Decides which fault, if any, a request gets."""

    def __init__(self, seed: int, scenarios: dict[str, float]) -> None:
        self.seed = seed
        self.scenarios = scenarios
        self._active = any(self.scenarios.get(k, 0.0) > 0 for k in REQUEST_FAULTS)
        #: request key -> (attempts so far, consecutive faults); oldest keys forgotten past _MAX_KEYS
        self._seen: OrderedDict[str, tuple[int, int]] = OrderedDict()
        self._lock = threading.Lock()

    def decide(self, key: str, applicable: tuple[str, ...] = REQUEST_FAULTS) -> str | None:
        if not self._active:
            return None
        with self._lock:
            n, streak = self._seen.pop(key, (0, 0))
            chosen = None
            if streak < 2:
                for kind in applicable:
                    p = self.scenarios.get(kind, 0.0)
                    if p > 0 and unit(self.seed, kind, key, n) < p:
                        chosen = kind
                        break
            self._seen[key] = (n + 1, streak + 1 if chosen else 0)
            if len(self._seen) > _MAX_KEYS:
                self._seen.popitem(last=False)
            return chosen

    def burst(self, now: float) -> float | None:
        """Inside a throttling burst at ``now`` (epoch seconds, simulated): seconds until it ends.

        A burst opens a slot of :data:`BURST_SLOT` seconds and lasts 30-150 seconds; everything asked
        meanwhile is refused, so a client that honours ``Retry-After`` leaves the burst at once."""
        p = self.scenarios.get("throttle", 0.0)
        if p <= 0:
            return None
        slot = math.floor(now / BURST_SLOT)
        if unit(self.seed, "burst", slot) >= p:
            return None
        end = slot * BURST_SLOT + 30 + 120 * unit(self.seed, "burst-length", slot)
        return end - now if now < end else None

    def chance(self, kind: str, *parts: object) -> bool:
        """A response-side decision (e.g. poison this nextLink), deterministic in ``parts``."""
        p = self.scenarios.get(kind, 0.0)
        return p > 0 and unit(self.seed, kind, *parts) < p

    def value(self, *parts: object) -> float:
        return unit(self.seed, "value", *parts)


class Quota:
    """``limit`` requests per rolling ``window`` seconds of simulated time, per tenant."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._seen: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def take(self, tenant: str, now: float) -> float | None:
        """Count one request at ``now`` (epoch seconds); None if allowed, else seconds to wait."""
        with self._lock:
            q = self._seen[tenant]
            while q and q[0] <= now - self.window:
                q.popleft()
            if len(q) >= self.limit:
                return max(1.0, math.ceil(q[0] + self.window - now))
            q.append(now)
            return None

    def used(self, tenant: str, now: float) -> int:
        with self._lock:
            return sum(1 for t in self._seen[tenant] if t > now - self.window)
