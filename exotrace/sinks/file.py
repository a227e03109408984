"""File sink: NDJSON, rotated by size and/or age, rotated files optionally gzip-compressed.

A batch is delivered once written and flushed to the OS (and fsynced with ``fsync = true``). Rotated
files are renamed ``<path>.<UTC time>`` (``-N`` added on a clash) and compressed to ``.gz`` in a
worker thread when ``gzip = true``. The age of the active file survives restarts (``.<name>.opened``).
"""

from __future__ import annotations

import asyncio
import gzip
import os
import shutil
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from exotrace.errors import ConfigError, TransientError
from exotrace.sinks.base import Record, SendResult, Sink
from exotrace.sinks.config import FileSinkConfig

__all__ = ["FileSink"]


class FileSink(Sink):
    type = "file"
    config: FileSinkConfig

    def __init__(self, config: FileSinkConfig) -> None:  # type: ignore[override]
        super().__init__(config)
        self.path = Path(config.path)
        self._marker = self.path.with_name(f".{self.path.name}.opened")
        self._fh: BinaryIO | None = None
        self._size = 0
        self._opened = 0.0

    async def start(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"file sink {self.name}: cannot create {self.path.parent}: {exc.strerror}",
                              key="path") from exc

    def _open(self) -> BinaryIO:
        if self._fh is None:
            try:
                _drop_torn_tail(self.path)
                self._fh = self.path.open("ab")
            except OSError as exc:
                raise TransientError(f"cannot open {self.path}: {exc.strerror}") from exc
            self._size = self._fh.tell()
            try:
                self._opened = float(self._marker.read_text())
            except (OSError, ValueError):
                self._opened = time.time()
                self._write_marker()
        return self._fh

    def _write_marker(self) -> None:
        try:
            self._marker.write_text(f"{self._opened:.3f}")
        except OSError:
            pass

    async def send(self, records: Sequence[Record]) -> SendResult:
        data = b"".join([r.raw + b"\n" for r in records])
        fh = self._open()
        cfg = self.config
        if self._size and (
            (cfg.rotate_bytes and self._size + len(data) > cfg.rotate_bytes)
            or (cfg.rotate_interval and time.time() - self._opened >= cfg.rotate_interval)
        ):
            await self._rotate()
            fh = self._open()
        try:
            fh.write(data)
            fh.flush()
            if cfg.fsync:
                os.fsync(fh.fileno())
        except OSError as exc:
            raise TransientError(f"cannot write {self.path}: {exc.strerror}") from exc
        self._size += len(data)
        return SendResult()

    async def _rotate(self) -> None:
        assert self._fh is not None
        self._fh.close()
        self._fh = None
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        target = self.path.with_name(f"{self.path.name}.{stamp}")
        n = 1
        while target.exists() or target.with_name(target.name + ".gz").exists():
            n += 1
            target = self.path.with_name(f"{self.path.name}.{stamp}-{n}")
        try:
            os.replace(self.path, target)
        except OSError as exc:
            raise TransientError(f"cannot rotate {self.path}: {exc.strerror}") from exc
        self._marker.unlink(missing_ok=True)
        if self.config.gzip:
            await asyncio.to_thread(_compress, target)

    async def healthcheck(self) -> str:
        target = self.path if self.path.exists() else self.path.parent
        if not os.access(target, os.W_OK):
            raise ConfigError(f"file sink {self.name}: {target} is not writable by this user", key="path")
        return f"{target} is writable"

    async def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _compress(path: Path) -> None:
    gz = path.with_name(path.name + ".gz")
    tmp = gz.with_name(gz.name + ".tmp")
    with path.open("rb") as src, gzip.open(tmp, "wb", compresslevel=6) as dst:
        shutil.copyfileobj(src, dst, 1024 * 1024)
    os.replace(tmp, gz)
    path.unlink()


def _drop_torn_tail(path: Path) -> None:
    """Cut a partial last line (a process killed mid-write): that batch was never acknowledged and is sent
    again, so the file keeps whole NDJSON lines only."""
    try:
        with path.open("r+b") as fh:
            end = fh.seek(0, os.SEEK_END)
            pos = end
            while pos > 0:
                step = min(65536, pos)
                fh.seek(pos - step)
                chunk = fh.read(step)
                if pos == end and chunk.endswith(b"\n"):
                    return
                cut = chunk.rfind(b"\n")
                if cut >= 0:
                    fh.truncate(pos - step + cut + 1)
                    return
                pos -= step
            fh.truncate(0)
    except FileNotFoundError:
        return
