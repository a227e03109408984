"""Which reader a file needs, decided from its content (never from its name alone), and which
files a list of paths stands for."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

from exotrace.sources.file.csv_shapes import detect_csv_shape, is_sep_hint, split_header
from exotrace.sources.file.encoding import SQLITE_MAGIC
from exotrace.sources.file.json_shapes import parses_standalone

__all__ = ["FORMATS", "SQLITE_MAGIC", "detect_format", "is_sqlite", "iter_files"]

log = logging.getLogger("exotrace.sources.file")

_SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")

#: Accepted ``--format`` values. ``auto`` detects; the others force a reader (and a shape label).
FORMATS: tuple[str, ...] = (
    "auto",
    "ndjson",
    "json",
    "graph",
    "rws",
    "powershell",
    "csv",
    "eac-summary",
    "eac-enhanced",
    "eac-extended",
)


def detect_format(head: list[str]) -> str | None:
    """``ndjson`` | ``json`` | a CSV shape, from the first lines of a file; None when unknown.

    JSON: NDJSON when the first or second non-blank line is a complete JSON value on its own (so a
    bad first line does not turn an NDJSON file into one broken document, nor does a file that starts
    mid-line); otherwise a document (pretty-printed array, page or object). CSV: a header whose columns
    map onto trace fields, after an optional ``#TYPE`` line or Excel's ``sep=;`` hint.
    """
    nonblank = [h for h in head if h.strip()]
    if not nonblank:
        return None
    first = nonblank[0].lstrip("\ufeff").lstrip()
    if first[:1] in ("{", "["):
        if first.rstrip() != "[" and any(parses_standalone(h) for h in nonblank[:2]):
            return "ndjson"  # (a lone "[" opens an array written one element per line: a document)
        return "json"
    lines = [h for h in nonblank if not h.lstrip("\ufeff").startswith("#") and not is_sep_hint(h)]
    if lines:
        names, _ = split_header(lines[0])
        shape = detect_csv_shape(names) if len(names) > 1 else None
        if shape is not None:
            return shape
    if len(nonblank) > 1 and parses_standalone(nonblank[1]):
        return "ndjson"  # a file that starts mid-line (cut at rotation): its first line alone is damaged
    return None


def iter_files(paths: list[str | os.PathLike[str]] | tuple[str | os.PathLike[str], ...], *,
               notes: bool = True) -> Iterator[str]:
    """Files named by ``paths``: files as given, folders recursed (sorted, hidden entries skipped).

    Inside folders, what is not a regular file (a FIFO, a socket), SQLite databases (an exotrace archive,
    perhaps the one being written), their ``-wal``,
    ``-shm`` and ``-journal`` files and an archive's ``.spool`` folder are skipped, with an INFO note unless
    ``notes`` is false. Linked folders are followed (each folder once), and a file reached twice (named
    twice, or through a link) is read once. A path that does not exist is passed through, so the reader
    reports it as a reject.
    """
    read: set[str] = set()  # real paths of the files already given out: each file is read once
    for given in paths:
        path = Path(given)
        if not path.is_dir():
            real = os.path.realpath(given)
            if real in read and os.path.isfile(real):
                if notes:
                    log.info("Skipping %s: already read as another path.", os.fspath(given))
                continue
            read.add(real)
            yield os.fspath(given)
            continue
        found: list[tuple[tuple[str, ...], str]] = []
        top = os.path.realpath(path)
        walked = {top}
        for root, dirs, files in os.walk(path, followlinks=True):  # linked folders too, each once
            kept = []
            for d in sorted(dirs, key=lambda d, root=root: os.path.islink(os.path.join(root, d))):  # real first
                if d.startswith("."):
                    if notes:
                        log.info("Skipping %s: a hidden folder.", os.path.join(root, d))
                    continue
                real_dir = os.path.realpath(os.path.join(root, d))
                # a link into the folder being read is an alias: the folder itself is read under its own name
                alias = (os.path.islink(os.path.join(root, d)) and os.path.commonpath([top, real_dir]) == top
                         and not any(part.startswith(".") for part in Path(os.path.relpath(real_dir, top)).parts))
                if real_dir in walked or alias:
                    if notes:
                        log.info("Skipping %s: a link to a folder that is read anyway.", os.path.join(root, d))
                    continue
                walked.add(real_dir)
                if d.endswith(".spool") and (is_sqlite(os.path.join(root, d.removesuffix(".spool")))
                                             or os.path.isfile(os.path.join(root, d, "pipeline.json"))):
                    if notes:
                        log.info("Skipping %s: the spool folder of exotrace's sinks.", os.path.join(root, d))
                    continue
                kept.append(d)
            dirs[:] = kept
            for name in files:
                if name.startswith("."):
                    if notes:
                        log.info("Skipping %s: a hidden file.", os.path.join(root, name))
                    continue
                full = os.path.join(root, name)
                if not os.path.isfile(full):  # a FIFO or socket would block the read (a named path still may)
                    if notes:
                        log.info("Skipping %s: not a regular file.", full)
                    continue
                if _archive_file(root, name):
                    if notes:
                        log.info("Skipping %s: an SQLite database or its journal, not a message-trace export.", full)
                    continue
                found.append((Path(os.path.relpath(full, path)).parts, full))
        for _, full in sorted(found):
            real = os.path.realpath(full)
            if real in read:
                if notes:
                    log.info("Skipping %s: already read as another path.", full)
                continue
            read.add(real)
            yield full


def is_sqlite(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a file that starts with SQLite's header."""
    if not os.path.isfile(path):
        return False
    try:
        with open(path, "rb") as fh:
            return fh.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC
    except OSError:
        return False


def _archive_file(root: str, name: str) -> bool:
    """An SQLite database, or the ``-wal``/``-shm``/``-journal`` file of one in the same folder."""
    for suffix in _SQLITE_COMPANIONS:
        if name.endswith(suffix) and is_sqlite(os.path.join(root, name.removesuffix(suffix))):
            return True
    return is_sqlite(os.path.join(root, name))
