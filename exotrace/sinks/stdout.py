"""stdout sink: one NDJSON line per document on standard output."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from exotrace.errors import TransientError
from exotrace.sinks.base import Record, SendResult, Sink

__all__ = ["StdoutSink"]


class StdoutSink(Sink):
    """Writes ``record.raw`` + newline to ``sys.stdout``'s binary buffer and flushes per batch."""

    type = "stdout"

    async def send(self, records: Sequence[Record]) -> SendResult:
        out = getattr(sys.stdout, "buffer", None)
        data = b"".join(r.raw + b"\n" for r in records)
        try:
            if out is not None:
                out.write(data)
                out.flush()
            else:  # a text stream (captured output in tests)
                sys.stdout.write(data.decode())
                sys.stdout.flush()
        except BrokenPipeError as exc:
            raise TransientError("stdout is closed (broken pipe)") from exc
        return SendResult()
