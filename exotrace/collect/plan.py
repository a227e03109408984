"""Window planning: backfill and live tail as ledger windows of at most ``max_window``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from exotrace.config import CollectorSettings
from exotrace.state.ledger import TICK, Window

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def floor_to(t: datetime, step: timedelta) -> datetime:
    """``t`` rounded down to a multiple of ``step`` since the epoch."""
    n = (t - _EPOCH) // step
    return _EPOCH + n * step


def layout(tenant: str, start: datetime, end: datetime, now: datetime, s: CollectorSettings,
           *, partial: bool) -> list[Window]:
    """Cut ``[start, end]`` into windows.

    Data older than the settle horizon is cut into ``max_window`` chunks (read once, settled at once);
    younger data into ``window``-sized chunks on a fixed grid, so re-reads touch small ranges. Without
    ``partial`` the last window ends on the grid (the daemon reads the open one provisionally).
    """
    out: list[Window] = []
    if end < start:
        return out
    boundary = floor_to(now - s.settle_after, s.window)
    t = start
    while t <= end:
        if t < boundary:
            stop = min(t + s.max_window - TICK, boundary - TICK, end)
        else:
            stop = floor_to(t, s.window) + s.window - TICK
            if stop > end:
                if not partial:
                    break
                stop = end
        out.append(Window(tenant, t, stop, "pending", next_read=now))
        t = stop + TICK
    return out


def plan(tenant: str, bounds: tuple[datetime, datetime] | None, now: datetime, s: CollectorSettings,
         *, horizon: timedelta, since: timedelta | None, partial: bool) -> list[Window]:
    """New windows to add: a backfill before the ledger's first window, and the tail after its last."""
    target = (now - s.lag).replace(microsecond=0) - TICK
    oldest = (now - horizon + timedelta(hours=1)).replace(microsecond=0)
    out: list[Window] = []
    if bounds is None:
        start = max(now - (since if since is not None else s.since), oldest).replace(microsecond=0)
        return layout(tenant, start, target, now, s, partial=partial)
    first, last = bounds
    if since is not None:
        start = max(now - since, oldest).replace(microsecond=0)
        if start < first:
            out += layout(tenant, start, first - TICK, now, s, partial=True)
    out += layout(tenant, last + TICK, target, now, s, partial=partial)
    return out
