"""Read message-trace files of every shape into :class:`~exotrace.model.RawRecord` objects.

Shapes: Graph JSON (objects, ``{"value": [...]}`` pages), Reporting Web Service pages (JSON light and
verbose), PowerShell exports (NDJSON, JSON arrays, 5.1 and 7 dates), ``Export-Csv`` output and the
admin center's summary / enhanced summary / extended CSV reports; UTF-8 (BOM or not), UTF-16 (BOM or
not) and gzip. A malformed record becomes a :class:`~exotrace.model.Reject` and reading goes on;
nothing raises for bad input. See ``docs/sources-file.md``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator

from exotrace.errors import ConfigError
from exotrace.model import RawRecord, Reject
from exotrace.sources.file.csv_shapes import read_csv
from exotrace.sources.file.detect import FORMATS, detect_format, iter_files
from exotrace.sources.file.encoding import TextSource, UnreadableFile, looks_binary, open_text, safe_text
from exotrace.sources.file.json_shapes import read_document, read_ndjson

__all__ = ["FORMATS", "read_file", "read_paths", "total_bytes"]

log = logging.getLogger("exotrace.sources.file")

Item = RawRecord | Reject
PathLike = str | os.PathLike[str]
_CSV_FORMATS = frozenset({"csv", "eac-summary", "eac-enhanced", "eac-extended"})


def read_paths(paths: Iterable[PathLike] | PathLike, format: str | None = None,
               on_progress: Callable[[int], None] | None = None) -> Iterator[Item]:
    """Records and rejects from every file under ``paths`` (files, or folders recursed in sorted order).

    ``format`` is one of :data:`FORMATS` (None or ``auto``: detect per file). ``on_progress(nbytes)``
    is called as input bytes are consumed; :func:`total_bytes` gives the total to expect.
    """
    _check_format(format)
    for path in iter_files(_as_list(paths)):
        yield from read_file(path, format=format, on_progress=on_progress)


def total_bytes(paths: Iterable[PathLike] | PathLike) -> int:
    """Sum of the sizes of the files :func:`read_paths` will read (compressed size for gzip)."""
    total = 0
    for path in iter_files(_as_list(paths), notes=False):
        try:
            total += os.path.getsize(path)
        except OSError:
            pass
    return total


def read_file(path: PathLike, format: str | None = None,
              on_progress: Callable[[int], None] | None = None) -> Iterator[Item]:
    """Records and rejects from one file; an unreadable file gives one reject."""
    fmt = _check_format(format)
    origin = os.fspath(path)
    try:
        src = open_text(path, on_progress)
    except UnreadableFile as exc:
        yield Reject(origin, 0, str(exc))
        return
    with src:
        try:
            yield from _dispatch(src, origin, fmt)
            if src.stream_problem is not None:
                yield Reject(origin, src.lineno + 1, f"corrupt compressed data after line {src.lineno}: "
                             f"{src.stream_problem}; the lines before it were read, the rest was not read")
        except UnicodeDecodeError as exc:
            yield Reject(origin, src.lineno + 1, f"cannot decode text as {src.encoding}: {exc.reason}; "
                         "the rest of the file was not read")
        except (OSError, EOFError) as exc:
            yield Reject(origin, src.lineno + 1, f"read error: {exc}; the rest of the file was not read")
        except RecursionError:
            yield Reject(origin, src.lineno + 1, "JSON nested too deeply to be a message-trace export; "
                         "the rest of the file was not read")
        except Exception as exc:  # zlib.error and other decompression failures
            if type(exc).__module__ not in ("zlib", "gzip"):
                raise
            yield Reject(origin, src.lineno + 1, f"corrupt compressed data: {exc}; the rest was not read")
    log.debug("read %s (%s, %d lines)", origin, src.encoding, src.lineno)


def _dispatch(src: TextSource, origin: str, fmt: str) -> Iterator[Item]:
    head = src.head()
    if looks_binary("".join(head)):
        yield Reject(origin, 0, "binary content, not a text export")
        return
    kind = fmt
    shape: str | None = None
    if fmt in ("auto", "graph", "rws", "powershell"):
        kind = detect_format(head) or ""
        if fmt != "auto":
            shape = fmt
            if kind not in ("ndjson", "json"):
                kind = "json"
    if kind == "ndjson":
        yield from read_ndjson(src, origin, shape)
    elif kind == "json":
        yield from read_document(src, origin, shape)
    elif kind in _CSV_FORMATS:
        yield from read_csv(src, origin, None if fmt == "auto" else kind)
    elif not any(h.strip() for h in head):
        return  # empty file: nothing to read
    else:
        yield Reject(origin, 0, "unrecognised content: not JSON, NDJSON or a message-trace CSV "
                     "(use --format to force a reader)", raw=safe_text("".join(head)[:2000]))


def _check_format(format: str | None) -> str:
    fmt = format or "auto"
    if fmt not in FORMATS:
        raise ConfigError(f"unknown format {fmt!r}; choose one of: {', '.join(FORMATS)}", key="format")
    return fmt


def _as_list(paths: Iterable[PathLike] | PathLike) -> list[PathLike]:
    if isinstance(paths, (str, os.PathLike)):
        return [paths]
    return list(paths)
