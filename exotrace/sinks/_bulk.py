"""Bulk API bodies and per-item results, shared by the Elasticsearch and OpenSearch sinks."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from typing import Any

import orjson

from exotrace.sinks.base import Record, SendResult
from exotrace.sinks.config import DATA_STREAM_DATASET

__all__ = ["FILTER_PATH", "build_body", "parse_items", "target"]

#: Ask only for what :func:`parse_items` reads.
FILTER_PATH = "errors,items.*.status,items.*.error.type,items.*.error.reason"


def target(cfg: Any) -> str:
    """The data stream or index the sink writes to."""
    if cfg.mode == "data_stream":
        return f"logs-{DATA_STREAM_DATASET}-{cfg.namespace}"
    return str(cfg.index)


def content_id(raw: bytes) -> str:
    """An ``_id`` for a document without identity (a pipeline error): SHA-1 of its JSON, base64, so a
    retried request whose first answer was lost cannot index it twice."""
    return base64.b64encode(hashlib.sha1(raw).digest()).decode()


def build_body(records: Sequence[Record], mode: str) -> bytes:
    """NDJSON: ``create`` with ``_id`` = fingerprint (data stream) or ``index`` with ``_id`` = row key and
    the record's observation version as an ``external_gte`` version (the newest state wins whatever the
    order in which requests, retries and replays arrive)."""
    parts: list[bytes] = []
    if mode == "data_stream":
        for r in records:
            parts.append(b'{"create":{"_id":%s}}\n' % orjson.dumps(r.fingerprint or content_id(r.raw)))
            parts.append(r.raw + b"\n")
    else:
        for r in records:
            ident = r.key or r.fingerprint
            if ident and r.version:  # an older state retried after a newer one is refused (409), not kept
                parts.append(b'{"index":{"_id":%s,"version":%d,"version_type":"external_gte"}}\n'
                             % (orjson.dumps(ident), r.version))
            else:
                parts.append(b'{"index":{"_id":%s}}\n' % orjson.dumps(ident or content_id(r.raw)))
            parts.append(r.raw + b"\n")
    return b"".join(parts)


def parse_items(resp: dict[str, Any], n: int) -> SendResult:
    """Per-item outcome: 2xx delivered; 409 delivered (``create``: already indexed; ``index``: a newer
    version is); 400/413 rejected (mapping and parsing errors) with the error type and reason; anything
    else retried (429, 5xx, and 401/403/404 item errors such as a read-only index or a missing pipeline,
    which an operator fixes)."""
    result = SendResult()
    if not resp.get("errors"):
        return result
    items = resp.get("items") or []
    if len(items) != n:
        # cannot tell which failed: retry all (idempotent thanks to _id)
        result.retry = list(range(n))
        return result
    for i, item in enumerate(items):
        (info,) = item.values() if isinstance(item, dict) and len(item) == 1 else ({},)
        status = int(info.get("status", 500))
        if status < 300 or status == 409:  # 409: already indexed (create) or a newer state is (index)
            continue
        err = info.get("error") or {}
        reason = f"{err.get('type', 'error')}: {err.get('reason', '')}".strip().rstrip(":")
        if status in (400, 413) and "pipeline" not in str(err.get("reason", "")):
            result.rejected[i] = f"HTTP {status} {reason}"
        else:
            result.retry.append(i)
    return result
