"""Helpers for the file-reader tests (imported as `file_helpers`): invented PowerShell-export rows, writers."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from exotrace.model import RawRecord, Reject

FILES = Path(__file__).parents[1] / "data" / "files"


def ps_line(index: int, **overrides: object) -> str:
    """One NDJSON line as Windows PowerShell 5.1 ``ConvertTo-Json -Compress`` writes it."""
    obj = {
        "Organization": "contoso.onmicrosoft.com",
        "MessageId": f"<m{index}@fabrikam.com>",
        "Received": f"2024-10-21T17:25:{index % 60:02d}.969376Z",
        "SenderAddress": "lena@fabrikam.com",
        "RecipientAddress": f"user{index}@contoso.com",
        "Subject": f"Müller & Söhne report #{index}",
        "Status": "Delivered",
        "ToIP": None,
        "FromIP": "81.2.69.144",
        "Size": 1000 + index,
        "MessageTraceId": f"a5e6dc0f-23df-4b20-d240-{index:012d}",
        "StartDate": "2024-10-21T09:40:10Z",
        "EndDate": "2024-10-22T09:40:10Z",
        "Index": index,
    }
    obj.update(overrides)
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("'", "\\u0027")):
        text = text.replace(ch, esc)
    return text


def write(path: Path, text: str, encoding: str = "utf-8", *, gz: bool = False) -> Path:
    data = text.encode(encoding)
    if gz:
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def records(items: list[RawRecord | Reject]) -> list[RawRecord]:
    return [i for i in items if isinstance(i, RawRecord)]


def rejects(items: list[RawRecord | Reject]) -> list[Reject]:
    return [i for i in items if isinstance(i, Reject)]
