"""Shutdown: every wait of a read (quota, backoff, Retry-After, token, HTTP) races the stop event."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


class Stopped(Exception):
    """Shutdown was requested while waiting: the read ends, keeping the pages it already committed."""


async def unless_stopped(aw: Awaitable[T], stop: asyncio.Event | None) -> T:
    """Await ``aw``; when ``stop`` is set first, cancel it and raise :class:`Stopped`."""
    if stop is None:
        return await aw
    if stop.is_set():
        if asyncio.iscoroutine(aw):
            aw.close()
        raise Stopped()
    task = asyncio.ensure_future(aw)
    waiter = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait((task, waiter), return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    if task.cancelled() or not task.done():
        raise Stopped()
    return task.result()
