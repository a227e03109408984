"""Structured logs: ``key=value`` text lines or JSON objects, secrets always redacted."""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime

import orjson

from exotrace.net import redact


class _Redact(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"
        line = f"time={ts} level={record.levelname.lower()} logger={record.name} msg={record.getMessage()}"
        if record.exc_text:
            line += "\n" + record.exc_text
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        out: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat().replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": msg,
        }
        for part in msg.split(" "):
            key, sep, value = part.partition("=")
            if sep and key.isidentifier() and key not in out:
                out[key] = value
        if record.exc_text:
            out["exception"] = record.exc_text
        return orjson.dumps(out).decode()


def setup_logging(fmt: str = "text", level: int = logging.INFO, stream: object = None) -> None:
    """Configure the ``exotrace`` logger tree (idempotent)."""
    root = logging.getLogger("exotrace")
    for h in list(root.handlers):
        if getattr(h, "_exotrace", False):
            root.removeHandler(h)
    handler = logging.StreamHandler(stream or sys.stderr)  # type: ignore[arg-type]
    handler._exotrace = True  # type: ignore[attr-defined]
    handler.addFilter(_Redact())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False
