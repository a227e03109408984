"""Small helpers shared by several sinks."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

from exotrace.errors import SinkError, TransientError
from exotrace.sinks.base import Record, SendResult

__all__ = ["epoch_seconds", "get_path", "post_chunks", "quiet_client_loggers", "timestamp_of"]


def quiet_client_loggers(*names: str) -> None:
    """Client libraries log every failed request (opensearch-py with a traceback) at WARNING; the pipeline
    already logs one line per failed attempt, so raise theirs to ERROR unless the user set a level."""
    import logging

    for name in names:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.ERROR)

_TS = re.compile(rb'\{"@timestamp":"([^"\\]*)"')


def timestamp_of(r: Record) -> str | None:
    """The document's ``@timestamp``; read from the bytes without decoding when it is the first key."""
    m = _TS.match(r.raw)
    if m:
        return m.group(1).decode()
    ts = r.doc.get("@timestamp")
    return ts if isinstance(ts, str) else None



def get_path(doc: dict[str, Any], path: str) -> Any:
    """``doc["a"]["b"]`` for ``"a.b"``; the first element of a list value; None when missing."""
    cur: Any = doc
    for part in path.split("."):
        if isinstance(cur, list):
            cur = cur[0] if cur else None
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    if isinstance(cur, list):
        return cur[0] if cur else None
    return cur


def epoch_seconds(timestamp: Any) -> float | None:
    """ISO 8601 ``@timestamp`` -> epoch seconds rounded to milliseconds."""
    if not isinstance(timestamp, str) or not timestamp:
        return None
    try:
        dt = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        return None
    return round(dt.timestamp(), 3)


async def post_chunks(
    records: Sequence[Record],
    chunks: list[list[int]],
    post: Callable[[list[int]], Awaitable[None]],
) -> SendResult:
    """POST index ``chunks`` in order; split a chunk the destination calls invalid (SinkError) until the
    bad record is alone (rejected); on a transient failure mark that chunk and all later ones for retry.
    A whole-batch failure before anything was delivered is raised, so the pipeline's backoff applies."""
    result = SendResult()
    delivered_any = False
    queue = list(chunks)
    while queue:
        chunk = queue.pop(0)
        try:
            await post(chunk)
            delivered_any = True
        except SinkError as exc:
            if len(chunk) == 1:
                result.rejected[chunk[0]] = str(exc)
                delivered_any = True
            else:
                mid = len(chunk) // 2
                queue[0:0] = [chunk[:mid], chunk[mid:]]
        except TransientError as exc:
            if not delivered_any and not result.rejected:
                raise
            result.retry = [i for c in [chunk, *queue] for i in c]
            result.retry_after = exc.retry_after
            return result
    return result
