"""Make any decoded value representable as JSON, for documents that keep a record we could not use.

Input can hold what orjson cannot write: lone surrogates (bytes the file's encoding could not decode,
or ``\\ud800``-style escapes in JSON input) and integers beyond 64 bits. A pipeline_error document must
still be stored and shown, so such values are rewritten: undecodable bytes as ``\\xNN``, other lone
surrogates as ``\\uXXXX``, big integers as text.
"""

from __future__ import annotations

import re
from typing import Any

_SURROGATE = re.compile("[\ud800-\udfff]")
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"


def safe_json_text(text: str) -> str:
    """``text`` with lone surrogates written as escapes, so it encodes as UTF-8."""
    return _SURROGATE.sub(_escape, text) if _SURROGATE.search(text) else text


def safe_json_value(value: Any) -> Any:
    """``value`` with strings made encodable and integers orjson cannot write turned into text."""
    if isinstance(value, str):
        return safe_json_text(value)
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return value
    if isinstance(value, int):
        return value if _INT_MIN <= value <= _INT_MAX else str(value)
    if isinstance(value, dict):
        return {safe_json_text(str(k)): safe_json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [safe_json_value(v) for v in value]
    return safe_json_text(str(value))
