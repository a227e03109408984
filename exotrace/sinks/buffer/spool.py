"""A per-sink disk spool: append-only NDJSON segments, read in sequence order, surviving restarts.

Layout of the spool folder::

    00000000000000001234.seg   records, one per line: ``<seq>\\t<fingerprint>\\t<json key>\\t<version>\\t<json doc>``
    cursor.json                ``{"version": 1, "starts": {"<segment>": N}}``: committed read offsets

Segments are named by the sequence number of their first record and read in name order, which is
sequence order: a new segment is started whenever the spool had nothing unread (and when a segment grows
past ``segment_bytes``), so two segments never interleave. Reading does not consume: :meth:`commit` moves
the durable cursor once the pipeline has the read records acknowledged, and deletes finished segments.
After a crash the records between the cursor and the crash are read again (at-least-once).
"""

from __future__ import annotations

import bisect
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import orjson

from exotrace.errors import ConfigError
from exotrace.sinks.base import Record

__all__ = ["Spool"]

log = logging.getLogger("exotrace.sinks.spool")

_SUFFIX = ".seg"


def encode_line(r: Record) -> bytes:
    return b"%d\t%s\t%s\t%d\t%s\n" % (r.seq, r.fingerprint.encode(), orjson.dumps(r.key), r.version, r.raw)


def decode_line(line: bytes) -> Record:
    """A spooled record; lines written before versions were spooled have four fields (no raw tab can
    occur in the JSON fields, which escape it)."""
    fields = line.rstrip(b"\n").split(b"\t", 4)
    if len(fields) == 5:
        seq, fp, key, version, raw = fields
    else:
        (seq, fp, key, raw), version = fields, b"0"
    return Record(int(seq), raw, key=orjson.loads(key), fingerprint=fp.decode(), version=int(version))


def _decoded(line: bytes) -> Record | None:
    """The record of a spool line, or None when the line is damaged (a disk or power failure)."""
    try:
        return decode_line(line)
    except (ValueError, UnicodeDecodeError):  # orjson.JSONDecodeError is a ValueError
        return None


class Spool:
    """Disk spool of one sink. Not thread-safe: used from the pipeline's event loop only."""

    def __init__(self, folder: Path, *, segment_bytes: int = 16 * 1024 * 1024, fsync: bool = False) -> None:
        self.folder = folder
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self._segments: list[str] = []  # sorted names
        self._sizes: dict[str, int] = {}
        self._writer: str | None = None  # name of the segment being appended to
        self._wfh: object = None
        self._read_seg: str | None = None
        self._read_off = 0
        self._unread = 0
        self._peek: int | None = None
        self._starts: dict[str, int] = {}  # committed start offset per segment
        self._damaged: set[tuple[str, int]] = set()  # (segment, offset) of lines moved aside

    # -- lifecycle ---------------------------------------------------------------------------------

    def open(self) -> list[tuple[int, int]]:
        """Load segments and cursor, repair a torn last line; return the unread seqs as (lo, hi) ranges."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create spool folder {self.folder}: {exc.strerror}") from exc
        names = sorted(p.name for p in self.folder.glob("*" + _SUFFIX))
        cursor_path = self.folder / "cursor.json"
        if cursor_path.exists():
            try:
                data = orjson.loads(cursor_path.read_bytes())
                self._starts = {str(k): int(v) for k, v in data.get("starts", {}).items()}
            except (orjson.JSONDecodeError, ValueError, TypeError, AttributeError):
                log.warning("Spool cursor %s is unreadable; replaying the whole spool.", cursor_path)
        ranges: list[tuple[int, int]] = []
        for name in names:
            path = self.folder / name
            start = self._starts.get(name, 0)
            size = self._repair(path)
            if size <= start:
                path.unlink(missing_ok=True)
                continue
            self._segments.append(name)
            self._sizes[name] = size
            with path.open("rb") as fh:
                fh.seek(start)
                offset = start
                for line in fh:
                    record = _decoded(line)
                    if record is None:
                        self._set_aside(name, offset, line)
                        offset += len(line)
                        continue
                    offset += len(line)
                    seq = record.seq
                    self._unread += 1
                    if ranges and ranges[-1][1] == seq - 1:
                        ranges[-1] = (ranges[-1][0], seq)
                    else:
                        ranges.append((seq, seq))
        self._starts = {k: v for k, v in self._starts.items() if k in self._sizes}
        if self._segments:
            self._read_seg = self._segments[0]
            self._read_off = self._starts.get(self._read_seg, 0)
        return ranges

    def close(self) -> None:
        self._close_writer()

    def _set_aside(self, name: str, offset: int, line: bytes) -> None:
        """Copy a damaged line to ``damaged.ndjson`` in the spool folder (kept for the user) and skip it."""
        if (name, offset) in self._damaged:
            return
        self._damaged.add((name, offset))
        log.error("Spool %s: line at byte %d of %s is damaged; it is skipped and kept in %s.", self.folder,
                  offset, name, self.folder / "damaged.ndjson")
        entry = {"segment": name, "offset": offset, "line": line.decode("utf-8", "backslashreplace")}
        try:
            with (self.folder / "damaged.ndjson").open("ab") as fh:
                fh.write(orjson.dumps(entry) + b"\n")
        except OSError as exc:
            log.error("Spool %s: cannot keep the damaged line: %s", self.folder, exc.strerror or exc)

    # -- state -------------------------------------------------------------------------------------

    @property
    def unread(self) -> int:
        """Records not yet read."""
        return self._unread

    def has_unread(self) -> bool:
        return self._unread > 0

    @property
    def bytes(self) -> int:
        """Bytes on disk (read-but-uncommitted records included)."""
        return sum(self._sizes.values())

    def peek_seq(self) -> int | None:
        """Sequence number of the next unread record."""
        if not self._unread:
            return None
        if self._peek is None:
            for r in self._iter_from(self._read_seg, self._read_off, limit=1):
                self._peek = r[0].seq
        return self._peek

    # -- writing -----------------------------------------------------------------------------------

    def append(self, records: Iterable[Record]) -> int:
        """Append records (in seq order); return bytes written."""
        data = b"".join(encode_line(r) for r in records)
        if not data:
            return 0
        first = int(data[: data.index(b"\t")])
        if self._writer is None or not self._unread or self._sizes.get(self._writer, 0) >= self.segment_bytes:
            self._new_segment(first)
        assert self._writer is not None
        fh = self._wfh
        fh.write(data)  # type: ignore[attr-defined]
        fh.flush()  # type: ignore[attr-defined]
        if self.fsync:
            os.fsync(fh.fileno())  # type: ignore[attr-defined]
        self._sizes[self._writer] += len(data)
        self._unread += data.count(b"\n")
        if self._read_seg is None:
            self._read_seg, self._read_off = self._writer, 0
        return len(data)

    def write_older(self, records: list[Record]) -> None:
        """Persist records (the memory buffer at shutdown, sorted by seq) that are older than what the spool
        holds unread. They are split at existing segment boundaries so that reading segments in name order
        still reads sequence numbers in increasing order."""
        if not records:
            return
        self._close_writer()
        bounds = [int(name[: -len(_SUFFIX)]) for name in self._segments]
        groups: list[list[Record]] = []
        last = -1
        for r in records:
            slot = bisect.bisect_right(bounds, r.seq)
            if not groups or slot != last:
                groups.append([])
                last = slot
            groups[-1].append(r)
        for group in groups:
            name = f"{group[0].seq:020d}{_SUFFIX}"
            data = b"".join(encode_line(r) for r in group)
            with (self.folder / name).open("ab") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            if name not in self._sizes:
                bisect.insort(self._segments, name)
                self._sizes[name] = 0
            self._sizes[name] += len(data)
            self._unread += len(group)
            if self._read_seg is None or name < self._read_seg:
                self._read_seg, self._read_off = name, 0  # read these first
        self._peek = None

    def _new_segment(self, first_seq: int) -> None:
        self._close_writer()
        name = f"{first_seq:020d}{_SUFFIX}"
        self._wfh = (self.folder / name).open("ab")
        self._writer = name
        if name not in self._sizes:
            bisect.insort(self._segments, name)
            self._sizes[name] = 0

    def _close_writer(self) -> None:
        if self._wfh is not None:
            if self.fsync:
                os.fsync(self._wfh.fileno())  # type: ignore[attr-defined]
            self._wfh.close()  # type: ignore[attr-defined]
        self._wfh = None
        self._writer = None

    # -- reading -----------------------------------------------------------------------------------

    def read(self, max_events: int, max_bytes: int) -> list[Record]:
        """Read up to the limits (at least one record if any is unread); does not commit."""
        out: list[Record] = []
        total = 0
        seg, off = self._read_seg, self._read_off
        if seg is None:
            return out
        idx = bisect.bisect_left(self._segments, seg)
        while idx < len(self._segments) and len(out) < max_events:
            name = self._segments[idx]
            start = off if name == seg else self._starts.get(name, 0)
            pos = start
            if start < self._sizes[name]:
                with (self.folder / name).open("rb") as fh:
                    fh.seek(start)
                    for line in fh:
                        if (out and total + len(line) > max_bytes) or not line.endswith(b"\n"):
                            idx = len(self._segments)  # stop
                            break
                        record = _decoded(line)
                        if record is None:  # set aside when the spool was opened (or now)
                            if (name, pos) not in self._damaged:
                                self._set_aside(name, pos, line)
                                self._unread -= 1
                            pos += len(line)
                            continue
                        out.append(record)
                        total += len(line)
                        pos += len(line)
                        if len(out) >= max_events:
                            break
            self._read_seg, self._read_off = name, pos
            idx += 1
        self._unread -= len(out)
        self._peek = None
        return out

    def _iter_from(self, seg: str | None, off: int, limit: int) -> Iterator[tuple[Record, str, int]]:
        """Yield (record, segment, offset after it) from a position, crossing into later segments."""
        if seg is None or limit <= 0:
            return
        idx = bisect.bisect_left(self._segments, seg)
        count = 0
        while idx < len(self._segments):
            name = self._segments[idx]
            start = off if name == seg else self._starts.get(name, 0)
            if start < self._sizes[name]:
                with (self.folder / name).open("rb") as fh:
                    fh.seek(start)
                    pos = start
                    for line in fh:
                        if not line.endswith(b"\n"):
                            break
                        pos += len(line)
                        record = _decoded(line)
                        if record is None:
                            continue
                        yield record, name, pos
                        count += 1
                        if count >= limit:
                            return
            idx += 1

    def rewind(self, uncommitted: int) -> None:
        """Forget reads that were not committed (``uncommitted`` records): they will be read again."""
        self._unread += uncommitted
        self._peek = None
        if self._segments:
            self._read_seg = self._segments[0]
            self._read_off = self._starts.get(self._read_seg, 0)

    def position(self) -> tuple[str, int] | None:
        """The read position (for :meth:`commit` once what was read up to here is acknowledged)."""
        return (self._read_seg, self._read_off) if self._read_seg is not None else None

    def commit(self, pos: tuple[str, int] | None = None) -> None:
        """Everything read up to ``pos`` (default: the read position) is acknowledged: delete finished
        segments and persist the cursor. Commits must come in read order."""
        if pos is None:
            pos = self.position()
        if pos is None:
            return
        seg, off = pos
        if seg not in self._sizes:  # already deleted (dropped)
            self._save_cursor()
            return
        idx = bisect.bisect_left(self._segments, seg)
        for name in self._segments[:idx]:
            self._delete(name)
        self._starts[seg] = max(off, self._starts.get(seg, 0))
        if off >= self._sizes[seg] and (seg != self._read_seg or self._read_off >= self._sizes[seg]):
            at_reader = seg == self._read_seg
            self._delete(seg)
            if at_reader:
                if self._segments:
                    self._read_seg = self._segments[0]
                    self._read_off = self._starts.get(self._read_seg, 0)
                else:
                    self._read_seg, self._read_off = None, 0
        self._save_cursor()

    def _save_cursor(self) -> None:
        starts = {k: v for k, v in self._starts.items() if k in self._sizes and v > 0}
        tmp = self.folder / "cursor.json.tmp"
        tmp.write_bytes(orjson.dumps({"version": 1, "starts": starts}))
        os.replace(tmp, self.folder / "cursor.json")

    def _delete(self, name: str) -> None:
        if name == self._writer:
            self._close_writer()
        (self.folder / name).unlink(missing_ok=True)
        self._sizes.pop(name, None)
        self._starts.pop(name, None)
        i = bisect.bisect_left(self._segments, name)
        if i < len(self._segments) and self._segments[i] == name:
            del self._segments[i]

    def drop_oldest(self) -> int:
        """Delete the oldest segment (best-effort sinks whose spool is full); return records dropped."""
        if not self._segments:
            return 0
        name = self._segments[0]
        dropped = 0  # only unread records are lost: read ones are in flight and still delivered
        if self._read_seg is not None and name >= self._read_seg:
            offset = self._read_off if name == self._read_seg else self._starts.get(name, 0)
            with (self.folder / name).open("rb") as fh:
                fh.seek(offset)
                for line in fh:
                    dropped += (name, offset) not in self._damaged  # damaged lines were never counted
                    offset += len(line)
        self._delete(name)
        self._unread -= dropped
        self._peek = None
        if name == self._read_seg:
            self._read_seg = self._segments[0] if self._segments else None
            self._read_off = self._starts.get(self._read_seg, 0) if self._read_seg else 0
        self._save_cursor()
        return dropped

    @staticmethod
    def _repair(path: Path) -> int:
        """Cut a torn final line (crash mid-write); return the file size."""
        size = path.stat().st_size
        if not size:
            return 0
        with path.open("rb+") as fh:
            fh.seek(max(0, size - 1))
            if fh.read(1) == b"\n":
                return size
            # find the last newline
            block = 65536
            pos = size
            while pos > 0:
                start = max(0, pos - block)
                fh.seek(start)
                chunk = fh.read(pos - start)
                nl = chunk.rfind(b"\n")
                if nl >= 0:
                    fh.truncate(start + nl + 1)
                    log.warning("Spool segment %s had a torn last line; it was cut.", path)
                    return start + nl + 1
                pos = start
            fh.truncate(0)
            return 0
