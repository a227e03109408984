"""Elastic's document fingerprint, so our documents and Elastic's share the same ``_id``.

Elastic's pipeline runs Elasticsearch's ``fingerprint`` processor (SHA-1, base64, no salt,
``ignore_missing``) over seven fields. That processor visits the fields in sorted name order; lists
contribute their items in order and maps their entries in key order; each scalar contributes a zero byte
and then its bytes: UTF-8 for strings, little-endian int32 (int64 when it does not fit) for integers.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from binascii import b2a_base64
from hashlib import sha1
from typing import Any

#: The fields Elastic fingerprints, already in sorted order.
FINGERPRINT_FIELDS: tuple[tuple[str, ...], ...] = tuple(
    tuple(name.split("."))
    for name in sorted(
        (
            "email.from.address",
            "email.to.address",
            "email.message_id",
            "email.local_id",
            "email.subject",
            "microsoft.online_message_trace.Status",
            "email.attachments.file.size",
        )
    )
)


def _get(doc: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = doc
    for part in path:
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _scalar_bytes(value: Any) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bool):
        return b"\x01" if value else b"\x02"
    if isinstance(value, int):
        if -(2**31) <= value < 2**31:
            return value.to_bytes(4, "little", signed=True)
        return value.to_bytes(8, "little", signed=True)
    if isinstance(value, float):
        return struct.pack("<d", value)
    raise TypeError(f"cannot fingerprint {type(value).__name__}")


def _feed(sha: Any, value: Any) -> None:
    if isinstance(value, list):
        for item in value:
            _feed(sha, item)
    elif isinstance(value, dict):
        for key in sorted(value):
            sha.update(b"\x00" + key.encode("utf-8"))
            _feed(sha, value[key])
    else:
        sha.update(b"\x00" + _scalar_bytes(value))


def fingerprint_values(
    size: int | None, sender: str, trace_id: str, message_id: str, subject: str, recipient: str, status: str
) -> str:
    """Fast path: the fingerprint of a message-trace document from its seven values ("" or None = absent)."""
    data = b"\x00".join([text.encode() for text in (sender, trace_id, message_id, subject, recipient, status)
                          if text])
    if size is not None:
        data = _scalar_bytes(size) + b"\x00" + data if data else _scalar_bytes(size)
    elif not data:
        return ""
    return b2a_base64(sha1(b"\x00" + data).digest(), newline=False).decode("ascii")


def fingerprint(doc: dict[str, Any]) -> str:
    """SHA-1 (base64) of the fingerprint fields present in ``doc``; empty string if none is present."""
    sha = hashlib.sha1()
    seen = False
    for path in FINGERPRINT_FIELDS:
        value = _get(doc, path)
        if value is None:
            continue
        seen = True
        _feed(sha, value)
    return base64.b64encode(sha.digest()).decode("ascii") if seen else ""
