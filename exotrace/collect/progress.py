"""Backfill progress: how much of the time span that was uncollected at start is collected now.

The span is fixed when the run starts (the windows not yet complete then), so live-tail reads and
re-reads never move it. A completed window counts its overlap with that span once; a running read counts
the part it has paged through: rows come newest first, so ``[oldest row seen, read end]`` is covered.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

Span = tuple[datetime, datetime]


def _overlap(a: Span, b: Span) -> float:
    lo, hi = max(a[0], b[0]), min(a[1], b[1])
    return max((hi - lo).total_seconds(), 0.0)


class BackfillProgress:
    """Seconds of the tracked span collected, completed windows plus the paged part of running reads."""

    def __init__(self, spans: Iterable[Span] = ()) -> None:
        self.spans: list[Span] = sorted(spans)
        self.total = sum((e - s).total_seconds() for s, e in self.spans)
        self._done_starts: set[datetime] = set()
        self._done = 0.0
        self._running: dict[datetime, float] = {}
        self.rows = 0

    def _tracked(self, span: Span) -> float:
        return sum(_overlap(span, t) for t in self.spans)

    def paged(self, read: Span, oldest: datetime | None) -> None:
        """A running read ``read`` has reached rows received at ``oldest`` (None: nothing yet)."""
        if oldest is None or not self.total:
            self._running[read[0]] = 0.0
            return
        self._running[read[0]] = self._tracked((max(oldest, read[0]), read[1]))

    def completed(self, read: Span, windows: Iterable[Span], rows: int = 0) -> None:
        """The read ``read`` is committed: its windows count in full, once each."""
        self._running.pop(read[0], None)
        gained = 0.0
        for w in windows:
            if w[0] not in self._done_starts:
                self._done_starts.add(w[0])
                gained += self._tracked(w)
        self._done += gained
        if gained:
            self.rows += rows

    def ended(self, read: Span) -> None:
        """The read ``read`` stopped without completing (error, shutdown): its paged part no longer counts."""
        self._running.pop(read[0], None)

    @property
    def done(self) -> float:
        return min(self._done + sum(self._running.values()), self.total)
