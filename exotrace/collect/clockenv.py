"""Share a simulated clock with a collector subprocess (tests, benchmarks) through ``EXOTRACE_CLOCK``.

The value is JSON ``{"sim": ISO time, "mono": time.monotonic() at that instant, "speed": x}``; the
monotonic clock is system-wide on Linux, so parent and child agree on simulated time.
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime

from exotrace.clock import Clock, ScaledClock, SystemClock

ENV = "EXOTRACE_CLOCK"


def clock_to_env(clock: ScaledClock) -> str:
    mono = time.monotonic()
    now = clock.now()
    return json.dumps({"sim": now.isoformat(), "mono": mono, "speed": clock.speed})


def clock_from_env(value: str | None = None) -> Clock:
    """The clock described by ``EXOTRACE_CLOCK`` (or ``value``), else the system clock."""
    text = value if value is not None else os.environ.get(ENV)
    if not text:
        return SystemClock()
    spec = json.loads(text)
    clock = ScaledClock(start=datetime.fromisoformat(spec["sim"]), speed=float(spec["speed"]))
    clock._origin_wall = float(spec["mono"])  # noqa: SLF001 - re-anchor on the shared monotonic clock
    return clock
