"""Open a message-trace file as text: gzip by magic bytes, encoding by BOM or NUL-byte pattern.

:func:`open_text` returns a :class:`TextSource` that streams lines (a 1 GB NDJSON file is never
held in memory), can hand back the whole text for JSON documents, and reports the raw bytes it
consumes to an ``on_progress`` callback.
"""

from __future__ import annotations

import codecs
import gzip
import io
import os
import re
from collections.abc import Callable, Iterator
from itertools import chain
from pathlib import Path

__all__ = [
    "TextSource", "UnreadableFile", "detect_encoding", "looks_binary", "open_text", "safe_text", "strip_eol",
    "SQLITE_MAGIC", "as_cp1252", "undecodable",
]

_SAMPLE = 4096
_GZIP_MAGIC = b"\x1f\x8b"
_ZIP_MAGIC = b"PK\x03\x04"
#: The first bytes of every SQLite database file.
SQLITE_MAGIC = b"SQLite format 3\x00"
#: Control characters that do not occur in text exports (everything below 0x20 except \t \n \f \r).
_BINARY_CHARS = frozenset(chr(c) for c in range(32)) - {"\t", "\n", "\f", "\r"}
#: Bytes the codec could not decode come through as lone surrogates (``errors="surrogateescape"``).
_UNDECODABLE = re.compile("[\udc80-\udcff]")
_UNDECODABLE_RUN = re.compile("[\udc80-\udcff]+")


class UnreadableFile(Exception):
    """The file cannot be read as text at all (missing, binary, bad gzip); the message says why."""


class _Counting(io.RawIOBase):
    """A raw reader that reports every byte it reads to ``on_progress``."""

    def __init__(self, raw: io.BufferedIOBase, on_progress: Callable[[int], None] | None) -> None:
        self._raw = raw
        self._on_progress = on_progress
        self._pos = 0
        #: Bytes reported so far: the furthest offset read (bytes read again after a seek count once).
        self.consumed = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._raw.seekable()

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._pos = self._raw.seek(offset, whence)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = self._raw.readinto(buffer) or 0
        self._pos += n
        new = self._pos - self.consumed
        if new > 0:
            self.consumed += new
            if self._on_progress is not None:
                self._on_progress(new)
        return n

    def close(self) -> None:
        self._raw.close()
        super().close()


class _GzipMembers(io.RawIOBase):
    """The decompressed data of a gzip file, handed out a whole line at a time. Damage after good data
    (trailing bytes that are no gzip member, a failed CRC, a file cut short) ends the data after the last
    whole line instead of losing what was decompressed before it, and is kept in ``problem`` for the
    reader to report: a line cut by the damage is never handed out as if it were whole."""

    def __init__(self, raw: io.BufferedIOBase) -> None:
        self._gzip = gzip.GzipFile(fileobj=raw, mode="rb")
        self._ready = memoryview(b"")  # whole lines, not yet handed out
        self._held = bytearray()  # after the last line break: handed out once its line is complete
        self._eof = False
        self.delivered = 0
        self.problem: str | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._ready:
            if self.problem is not None:
                return 0
            if self._eof:
                if not self._held:
                    return 0
                self._ready, self._held = memoryview(bytes(self._held)), bytearray()  # a last line, whole
                break
            try:  # read1: one read of the member data at a time, so what came before damage is handed out
                data = self._gzip.read1(max(len(buffer), 65536))
            except Exception as exc:  # gzip.BadGzipFile is an OSError; EOFError; zlib.error
                damage = isinstance(exc, OSError | EOFError) or type(exc).__module__ == "zlib"
                if not damage or not (self.delivered or self._held):
                    raise
                self.problem = str(exc) or type(exc).__name__
                return 0
            if not data:
                self._eof = True
                continue
            cut = data.rfind(b"\n") + 1
            if not cut:
                self._held += data
                continue
            self._ready = memoryview(bytes(self._held) + data[:cut] if self._held else data[:cut])
            self._held = bytearray(data[cut:])
        n = min(len(buffer), len(self._ready))
        buffer[:n] = self._ready[:n]
        self._ready = self._ready[n:]
        self.delivered += n
        return n

    def close(self) -> None:
        self._gzip.close()
        super().close()


def detect_encoding(sample: bytes) -> str:
    """Pick a Python codec for ``sample``, the first bytes of the (decompressed) content.

    BOMs win (UTF-8, UTF-16 LE/BE). Without a BOM, a NUL in every other byte means UTF-16 (LE when
    the NULs sit at odd offsets, as the admin center's CSV exports do). Other content is read as UTF-8,
    and what UTF-8 cannot decode is read as Windows-1252 (``-Encoding Default``) by the readers, a line at
    a time (:func:`as_cp1252`): PowerShell 5.1 appends ANSI lines to UTF-8 files. Raises
    :class:`UnreadableFile` for content with NUL bytes in no UTF-16 pattern (binary data).
    """
    if sample.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if sample.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):  # before UTF-16: FF FE starts both
        return "utf-32"  # Export-Csv -Encoding UTF32
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    head = sample[:1024]
    pairs = len(head) // 2
    if pairs:
        even = sum(1 for i in range(0, pairs * 2, 2) if head[i] == 0)
        odd = sum(1 for i in range(1, pairs * 2, 2) if head[i] == 0)
        if odd >= pairs * 0.4 and even <= pairs * 0.05:
            return "utf-16-le"
        if even >= pairs * 0.4 and odd <= pairs * 0.05:
            return "utf-16-be"
        # mostly non-ASCII text (Japanese subjects) has fewer NULs: UTF-16 if it decodes as clean text
        if even <= pairs * 0.05 < odd and _utf16_text(head[:pairs * 2], "utf-16-le"):
            return "utf-16-le"
        if odd <= pairs * 0.05 < even and _utf16_text(head[:pairs * 2], "utf-16-be"):
            return "utf-16-be"
    first_nul = sample.find(b"\x00")
    if first_nul >= 0 and b"\n" not in sample[:first_nul]:
        raise UnreadableFile("binary content (NUL bytes), not a text export")
    return "utf-8"  # (NULs after whole lines of text: a zero-filled tail; those lines are rejected alone)


def _utf16_text(data: bytes, codec: str) -> bool:
    try:  # incremental: a surrogate pair cut at the sample's end is no error
        text = codecs.getincrementaldecoder(codec)().decode(data, final=False)
    except UnicodeDecodeError:
        return False
    return not looks_binary(text) and "\x00" not in text and any(c in text for c in "\n,;\t{")


def looks_binary(text: str) -> bool:
    """True when decoded text holds control characters no text export contains, more than the odd one a
    raw subject may carry (an ESC of ISO-2022-JP): over 4 of them, and over 1 % of the text."""
    count = sum(1 for ch in text if ch in _BINARY_CHARS)
    return count > 4 and count * 100 > len(text)


def undecodable(text: str) -> bool:
    """True when ``text`` holds bytes the file's encoding could not decode."""
    return _UNDECODABLE.search(text) is not None


def as_cp1252(text: str) -> str:
    """``text`` with each run of bytes UTF-8 could not decode read as Windows-1252 instead; the five bytes
    Windows-1252 leaves undefined stay undecodable."""
    return _UNDECODABLE_RUN.sub(
        lambda m: bytes(ord(c) - 0xDC00 for c in m.group()).decode("cp1252", "surrogateescape"), text)


def safe_text(text: str) -> str:
    """``text`` with undecodable bytes shown as ``\\xNN`` (safe to print and to store)."""
    if not undecodable(text):
        return text
    return _UNDECODABLE.sub(lambda m: f"\\x{ord(m.group()) - 0xDC00:02x}", text)


def strip_eol(line: str) -> str:
    """Remove the line terminator (``\\n``, ``\\r\\n`` or ``\\r``; lines are split on all three)."""
    return line.rstrip("\r\n")


class TextSource:
    """Decoded text of one file, read line by line; ``lineno`` is the last line handed out."""

    def __init__(self, text: io.TextIOWrapper, counting: _Counting, size: int, encoding: str,
                 compressed: bool, on_progress: Callable[[int], None] | None,
                 members: _GzipMembers | None = None) -> None:
        self._text = text
        self._members = members
        self._counting = counting
        self._size = size
        self._on_progress = on_progress
        self._head: list[str] = []
        self._head_used = False
        self.encoding = encoding
        #: Lines UTF-8 cannot decode are read as Windows-1252 (:func:`as_cp1252`).
        self.ansi_fallback = encoding.startswith("utf-8")
        self.compressed = compressed
        self.lineno = 0

    @property
    def stream_problem(self) -> str | None:
        """Damage that ended a gzip file's data early (after what was read), or None."""
        return self._members.problem if self._members is not None else None

    @property
    def described(self) -> str:
        """The encoding as messages name it."""
        return "utf-8 or windows-1252" if self.ansi_fallback else self.encoding

    def head(self, nonblank: int = 2, max_lines: int = 200) -> list[str]:
        """The first lines (terminators kept) up to ``nonblank`` non-blank ones, without consuming them."""
        if not self._head_used:
            count = sum(1 for h in self._head if h.strip())
            while count < nonblank and len(self._head) < max_lines:
                line = self._text.readline()
                if not line:
                    break
                self._head.append(line)
                if line.strip():
                    count += 1
        return list(self._head)

    def numbered_lines(self) -> Iterator[tuple[int, str]]:
        """``(line_number, line)`` pairs, terminators kept; the consumer keeps ``lineno`` up to date."""
        self._head_used = True
        pending, self._head = self._head, []
        return enumerate(chain(pending, self._text), self.lineno + 1)

    def raw_lines(self) -> Iterator[tuple[int, str]]:
        """Yield ``(line_number, line)`` with the line terminator kept."""
        for n, line in self.numbered_lines():
            self.lineno = n
            yield n, line

    def lines(self) -> Iterator[tuple[int, str]]:
        """Yield ``(line_number, line)`` without the line terminator."""
        for n, line in self.raw_lines():
            yield n, strip_eol(line)

    def read_all(self) -> str:
        """The rest of the text in one string (for JSON documents, which are parsed whole)."""
        self._head_used = True
        pending, self._head = self._head, []
        if pending and self.lineno == 0 and self._text.seekable():
            # decode the file again from its start rather than join the head to the rest: the join held
            # the decoded text twice (a 70 MB export with one emoji is 270 MB of text)
            self._text.seek(0)
            return self._text.read()
        return "".join(pending) + self._text.read()

    def finish(self) -> None:
        """Report bytes not read through the stream (after an error) so progress ends at 100%."""
        rest = self._size - self._counting.consumed
        if rest > 0 and self._on_progress is not None:
            self._counting.consumed += rest
            self._on_progress(rest)

    def close(self) -> None:
        for stream in (self._text, self._counting):  # GzipFile leaves its fileobj open
            try:
                stream.close()
            except (OSError, ValueError, EOFError):
                pass

    def __enter__(self) -> TextSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.finish()
        self.close()


def open_text(path: str | os.PathLike[str], on_progress: Callable[[int], None] | None = None) -> TextSource:
    """Open ``path`` for reading as text; raises :class:`UnreadableFile` with a one-line reason."""
    p = Path(path)
    try:
        size = p.stat().st_size
        raw = open(p, "rb")  # noqa: SIM115 - closed by TextSource
    except FileNotFoundError as exc:
        raise UnreadableFile("no such file") from exc
    except IsADirectoryError as exc:
        raise UnreadableFile("is a directory") from exc
    except OSError as exc:
        raise UnreadableFile(f"cannot open: {exc.strerror or exc}") from exc
    counting = _Counting(raw, on_progress)
    buffered = io.BufferedReader(counting, buffer_size=65536)
    try:
        magic = buffered.peek(16)[:16]
        if magic.startswith(_ZIP_MAGIC):
            raise UnreadableFile("zip archive: extract it first (gzip files are read directly)")
        if magic == SQLITE_MAGIC:
            raise UnreadableFile("an SQLite database (an exotrace archive?), not a message-trace export")
        compressed = magic.startswith(_GZIP_MAGIC)
        stream: io.BufferedIOBase = buffered
        members: _GzipMembers | None = None
        if compressed:
            members = _GzipMembers(buffered)
            stream = io.BufferedReader(members, buffer_size=65536)
        sample = stream.peek(_SAMPLE)[:_SAMPLE]  # type: ignore[attr-defined]
        encoding = detect_encoding(sample)
    except UnreadableFile:
        buffered.close()
        raise
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
        buffered.close()
        raise UnreadableFile(f"corrupt gzip data: {exc}") from exc
    except Exception as exc:  # zlib.error
        buffered.close()
        raise UnreadableFile(f"cannot decompress: {exc}") from exc
    # undecodable UTF-8 bytes are kept (as lone surrogates) for a line-by-line Windows-1252 reading; UTF-16
    # has nothing to fall back to: a lone surrogate (a subject cut between two halves of an emoji) is U+FFFD
    errors = "surrogateescape" if encoding.startswith("utf-8") else "replace"
    text = io.TextIOWrapper(stream, encoding=encoding, errors=errors, newline="")
    return TextSource(text, counting, size, encoding, compressed, on_progress, members)
