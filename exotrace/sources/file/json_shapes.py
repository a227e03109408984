"""JSON inputs: NDJSON (streamed), JSON documents (arrays, pages, concatenated objects).

Every decoded value goes through :func:`items_from_value`, which knows the envelopes:

* a record: an object with message-trace keys (legacy PascalCase or Graph camelCase);
* a page: ``{"value": [...]}`` (Graph ``@odata.context``, RWS JSON light ``odata.metadata``) or
  RWS verbose ``{"d": {"results": [...]}}`` / ``{"d": [...]}``; an empty page yields nothing;
* an array of records or of pages.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Generator, Iterator
from typing import Any

import orjson

from exotrace.model import GRAPH_TO_LEGACY, LEGACY_FIELDS, RawRecord, Reject
from exotrace.sources.file.encoding import TextSource, as_cp1252, safe_text, undecodable

__all__ = ["items_from_value", "read_document", "read_ndjson", "record_shape", "unwrap_fields"]

Item = RawRecord | Reject

_TRACE_KEYS = frozenset(LEGACY_FIELDS) | frozenset(GRAPH_TO_LEGACY)
#: camelCase keys that only Graph uses (``id``/``status``/``subject``/``size`` are too generic alone).
_GRAPH_ONLY = frozenset(k for k in GRAPH_TO_LEGACY if k not in {"id", "status", "subject", "size"})
#: Raw text kept in a reject for an unreadable rest of a document.
_MAX_REJECT_RAW = 1 << 20


def unwrap_fields(obj: dict[str, Any]) -> dict[str, Any]:
    """Fields of a record: PowerShell 5.1 ``{"value": "/Date(..)/", "DisplayHint": ..}`` -> the string,
    ``__metadata`` (RWS verbose) dropped; everything else as given (the same dict when nothing changes)."""
    if "__metadata" not in obj and dict not in map(type, obj.values()):
        return obj
    out: dict[str, Any] = {}
    for key, value in obj.items():
        if key == "__metadata":
            continue
        if isinstance(value, dict) and "value" in value and "DisplayHint" in value:
            value = value["value"]
        out[key] = value
    return out


def record_shape(obj: dict[str, Any], default: str) -> str:
    """``graph`` when Graph-only camelCase keys are present, else ``default``."""
    return default if _GRAPH_ONLY.isdisjoint(obj) else "graph"


def _dumps(value: Any) -> str:
    """Compact JSON text of ``value``; undecodable input bytes are shown as ``\\xNN``."""
    return _encode(value)[0]


def _encode(value: Any) -> tuple[str, str | None]:
    """``(JSON text, problem)``: problem says why orjson (and so the archive and sinks) cannot encode it.

    The standard decoder used for JSON documents accepts what orjson refuses: lone ``\\ud800`` escapes and
    integers beyond 64 bits. Such text is still returned, escaped, so it can be kept in a reject.
    """
    try:
        return orjson.dumps(value).decode(), None
    except orjson.JSONEncodeError as exc:
        text = safe_text(json.dumps(value, ensure_ascii=False, separators=(",", ":")))
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = json.dumps(value, separators=(",", ":"))  # \uXXXX escapes: storable, shows the bad escape
        return text, str(exc)


def _page_elements(obj: dict[str, Any]) -> tuple[list[Any], str] | None:
    """``(elements, shape)`` when ``obj`` is a page envelope, else None."""
    if "value" not in obj and "d" not in obj:
        return None
    d = obj.get("d")
    if isinstance(d, dict) and isinstance(d.get("results"), list):
        return d["results"], "rws-verbose"
    if isinstance(d, list):
        return d, "rws-verbose"
    value = obj.get("value")
    if isinstance(value, list) and not _TRACE_KEYS.intersection(obj):
        if "@odata.context" in obj or "@odata.nextLink" in obj:
            return value, "graph"
        return value, "rws"
    return None


def items_from_value(
    value: Any,
    *,
    origin: str,
    line: int,
    original: str | None = None,
    shape: str | None = None,
    default_shape: str = "powershell",
    positions: dict[int, list[int]] | None = None,
    line_of: Callable[[int], int] | None = None,
) -> Iterator[Item]:
    """Records (or rejects) from one decoded JSON value found at ``line``.

    ``original`` is the exact input text of ``value`` when known (an NDJSON line); otherwise each
    record's original is ``orjson.dumps(element)``. ``shape`` forces the shape label. ``positions``
    and ``line_of`` (from :func:`read_document`) give array elements their own start lines.
    """
    if isinstance(value, list):
        offsets = positions.get(id(value)) if positions else None
        for i, element in enumerate(value):
            el_line = line_of(offsets[i]) if offsets and line_of else line
            yield from items_from_value(element, origin=origin, line=el_line, shape=shape,
                                        default_shape=default_shape, positions=positions, line_of=line_of)
        return
    if not isinstance(value, dict):
        yield Reject(origin, line, f"expected a JSON object, found {_type_name(value)}",
                     raw=original if original is not None else _dumps(value))
        return
    page = _page_elements(value)
    if page is not None:
        elements, page_shape = page
        offsets = positions.get(id(elements)) if positions else None
        for i, element in enumerate(elements):
            el_line = line_of(offsets[i]) if offsets and line_of else line
            if not isinstance(element, dict):
                yield Reject(origin, el_line, f"page element {i} is {_type_name(element)}, not an object",
                             raw=_dumps(element))
                continue
            label = shape or record_shape(element, page_shape)
            yield _record(element, origin, el_line, *_encode(element), label)
        return
    label = shape or record_shape(value, default_shape)
    text, problem = (original, None) if original is not None else _encode(value)
    yield _record(value, origin, line, text, problem, label)


def _record(obj: dict[str, Any], origin: str, line: int, original: str, problem: str | None, shape: str) -> Item:
    """A record, or a reject for an object without trace fields, with undecodable bytes or values JSON
    cannot carry (``problem``)."""
    if _TRACE_KEYS.isdisjoint(obj):
        keys = ", ".join(list(obj)[:5]) or "none"
        return Reject(origin, line, f"not a message-trace record (keys: {keys})", raw=original)
    if "\\x" in original and undecodable(json.dumps(obj, ensure_ascii=False)):
        return Reject(origin, line, "record holds bytes that are not valid text in the file's encoding",
                      raw=original)
    if problem is not None:
        return Reject(origin, line, _unrepresentable(problem), raw=original)
    return RawRecord(fields=unwrap_fields(obj), original=original, origin=origin, line=line, shape=shape)


def _unrepresentable(problem: str) -> str:
    """Reject reason for a record orjson cannot encode, from orjson's message."""
    if "surrogate" in problem:
        return "record holds a lone surrogate escape (\\ud800-\\udfff), which is not text"
    if "64-bit" in problem:
        return "record holds an integer beyond the 64-bit range"
    return f"record holds a value that cannot be encoded: {problem}"


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {str: "a string", bool: "a boolean", int: "a number", float: "a number", list: "an array"}.get(
        type(value), type(value).__name__)


# ---------------------------------------------------------------------------------------------- NDJSON


#: A line longer than this that holds an array is read element by element (:func:`_array_elements`).
BIG_ARRAY_LINE = 1 << 20


def read_ndjson(src: TextSource, origin: str, shape: str | None = None) -> Iterator[Item]:
    """One JSON value per line, streamed; a bad line is rejected and reading goes on."""
    loads = orjson.loads
    decode_error = orjson.JSONDecodeError
    for n, raw in src.numbered_lines():
        src.lineno = n
        line = raw.rstrip("\r\n")  # one terminator at most: a bare \r ends a line too
        if not line or line.isspace():
            continue
        text = line
        if len(text) > BIG_ARRAY_LINE and text.lstrip().startswith("["):
            # a whole export on one line (ConvertTo-Json -Compress): element by element, never all decoded
            yield from _array_elements(text, len(text) - len(text.lstrip()), origin, shape, n)
            continue
        try:
            value = loads(text)
        except decode_error as exc:
            # a BOM (one of files joined by cat), or bytes UTF-8 could not decode (orjson refuses the lone
            # surrogates surrogateescape gives them): an ANSI line. Both are looked for only here.
            fixed = text.removeprefix("\ufeff")
            if src.ansi_fallback and undecodable(fixed):
                fixed = as_cp1252(fixed)
            try:
                if fixed == text or undecodable(fixed):
                    raise exc
                value = loads(fixed)
            except decode_error as final:
                if undecodable(fixed):
                    yield Reject(origin, n, f"bytes that are not valid {src.described} text", raw=safe_text(line))
                else:
                    yield Reject(origin, n, f"invalid JSON: {_short(final)}", raw=as_cp1252(line))
                continue
            line = text = fixed
        # The common case, inlined: one flat record per line. orjson accepted the text, so it holds no
        # undecodable bytes; without a brace after the first one, no value is an object (nothing to unwrap,
        # no PowerShell 5.1 DisplayHint wrapper) and, without a bracket, none is a list.
        if type(value) is dict and "value" not in value and "d" not in value and not _TRACE_KEYS.isdisjoint(value) \
                and line.find("{", 1) < 0:
            shape_of = shape or ("powershell" if _GRAPH_ONLY.isdisjoint(value) else "graph")
            yield RawRecord(value, line, origin, n, shape_of, None, None, "[" not in line)
        else:
            yield from items_from_value(value, origin=origin, line=n, original=line, shape=shape)


def parses_standalone(line: str) -> bool:
    """True when ``line`` alone is a JSON object or array (an NDJSON line)."""
    text = line.strip().lstrip("\ufeff")
    if not text or text[0] not in "{[":
        return False
    if len(text) > BIG_ARRAY_LINE and text[0] == "[":
        return text[-1] == "]"  # a whole export on one line: not decoded just to tell its shape
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return True


def _short(exc: Exception) -> str:
    return str(exc).split("\n")[0][:200]


# ---------------------------------------------------------------------------------------------- documents

_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


class _ParseError(ValueError):
    def __init__(self, msg: str, pos: int) -> None:
        super().__init__(msg)
        self.msg = msg
        self.pos = pos


def _skip(text: str, pos: int) -> int:
    m = _WS.match(text, pos)
    return m.end() if m else pos


def _parse(text: str, pos: int, depth: int, positions: dict[int, list[int]]) -> tuple[Any, int]:
    """Decode the JSON value at ``pos``; arrays within ``depth`` levels record element offsets.

    Objects are decoded in one call unless they are page envelopes (``value``/``d`` keys), which
    are walked so the records inside them get their own line numbers too.
    """
    ch = text[pos:pos + 1]
    if depth > 0 and ch == "[":
        items: list[Any] = []
        offsets: list[int] = []
        pos = _skip(text, pos + 1)
        if text[pos:pos + 1] == "]":
            return items, pos + 1
        while True:
            offsets.append(pos)
            value, pos = _parse(text, pos, depth - 1, positions)
            items.append(value)
            pos = _skip(text, pos)
            c = text[pos:pos + 1]
            if c == ",":
                pos = _skip(text, pos + 1)
                continue
            if c == "]":
                positions[id(items)] = offsets
                return items, pos + 1
            raise _ParseError("expected ',' or ']'", pos)
    if depth > 0 and ch == "{":
        whole, end = _raw_decode(text, pos)
        if "value" not in whole and "d" not in whole:
            return whole, end  # a record: decoded in one C call; only envelopes are walked by hand
        obj: dict[str, Any] = {}
        pos = _skip(text, pos + 1)
        if text[pos:pos + 1] == "}":
            return obj, pos + 1
        while True:
            if text[pos:pos + 1] != '"':
                raise _ParseError("expected a property name in double quotes", pos)
            key, pos = _raw_decode(text, pos)
            pos = _skip(text, pos)
            if text[pos:pos + 1] != ":":
                raise _ParseError("expected ':'", pos)
            pos = _skip(text, pos + 1)
            obj[key], pos = _parse(text, pos, depth - 1, positions)
            pos = _skip(text, pos)
            c = text[pos:pos + 1]
            if c == ",":
                pos = _skip(text, pos + 1)
                continue
            if c == "}":
                return obj, pos + 1
            raise _ParseError("expected ',' or '}'", pos)
    return _raw_decode(text, pos)


def _raw_decode(text: str, pos: int) -> tuple[Any, int]:
    try:
        return _DECODER.raw_decode(text, pos)
    except json.JSONDecodeError as exc:
        raise _ParseError(exc.msg, exc.pos) from exc


class _Lines:
    """Offset -> 1-based line number, for offsets visited in increasing order (cheap)."""

    def __init__(self, text: str, first_line: int) -> None:
        self._text = text
        self._pos = 0
        self._line = first_line

    def __call__(self, offset: int) -> int:
        if offset >= self._pos:
            self._line += self._text.count("\n", self._pos, offset)
        else:
            self._line -= self._text.count("\n", offset, self._pos)
        self._pos = offset
        return self._line


#: Where a page's records start: Graph's and RWS light's ``"value": [``, RWS verbose's ``"results": [``.
_ENVELOPE_ARRAY = re.compile(r'"(?:value|results)"\s*:\s*\[')


#: The widest indentation looked for before a value (more: the value does not start a line).
_MAX_INDENT = 256


def _next_sibling(text: str, start: int) -> int:
    """Where the next value indented as the one at ``start`` begins a line (``len(text)``: nowhere).

    Only the ``_MAX_INDENT`` characters before ``start`` are looked at: in JSON on one line (``-Compress``)
    each element would otherwise scan the whole line before it."""
    line = text.rfind("\n", max(0, start - _MAX_INDENT), start) + 1
    if line == 0 and start > _MAX_INDENT:
        return len(text)
    indent = text[line:start]
    if indent.strip():  # not at a line's start (JSON on one line): no sibling to find
        return len(text)
    found = re.compile("\n" + re.escape(indent) + r"[\[{]").search(text, start + 1)  # one scan, to the first
    return found.start() + 1 + len(indent) if found else len(text)


def _own_slice(text: str, start: int) -> tuple[str, int, int]:
    """(the text to parse the value at ``start`` from, that text's offset in ``text``, the next sibling's
    start): the value's own slice when a sibling follows (an error then costs the value's length, not the
    file's: the decoder counts lines from its text's start), else the whole text."""
    nxt = _next_sibling(text, start)
    return (text[start:nxt], start, nxt) if nxt < len(text) else (text, 0, nxt)


def _shifted(line_of: Callable[[int], int], base: int) -> Callable[[int], int]:
    """``line_of`` for offsets into a slice that starts at ``base``."""
    return (lambda offset: line_of(base + offset)) if base else line_of


def _damaged(text: str, start: int, end: int, at: int, message: str, origin: str,
             line_of: Callable[[int], int]) -> Reject:
    """The reject for the damaged value at ``text[start:end]``, which JSON refuses at offset ``at``."""
    start_line, where = line_of(start), line_of(min(at, len(text)))
    if end < len(text):
        last = line_of(max(text.rfind("\n", start, end), start))  # the line before the next value's
        span = f" (the value of lines {start_line}-{last} was not read)"
    else:
        span = f" (line {start_line} onwards was not read)" if where != start_line else ""
    return Reject(origin, where, f"invalid JSON: {message}{span}",
                  raw=safe_text(text[start:min(end, start + _MAX_REJECT_RAW)]).rstrip())


def _array_elements(text: str, start: int, origin: str, shape: str | None,
                   first_line: int) -> Generator[Item, None, int]:
    """The elements of the array at ``start``, one by one as they are parsed (a big export is never held
    decoded all at once): a damaged element is rejected and reading goes on at the next one
    (:func:`_next_sibling`); returns where the array ends.

    Each element is parsed from its own slice (:func:`_own_slice`). A missing comma between two whole
    elements is let pass.
    """
    line_of = _Lines(text, first_line)
    pos = _skip(text, start + 1)
    while pos < len(text) and text[pos] != "]":
        element = pos
        chunk, base, nxt = _own_slice(text, element)
        positions: dict[int, list[int]] = {}
        try:
            value, end = _parse(chunk, element - base, 2, positions)
            end = _skip(chunk, end)
            if chunk[end:end + 1] not in (",", "]") and not (base and end == len(chunk)):
                raise _ParseError("expected ',' or ']'", end)
        except _ParseError as exc:
            yield _damaged(text, element, nxt, base + exc.pos, exc.msg, origin, line_of)
            pos = nxt
            continue
        yield from items_from_value(value, origin=origin, line=line_of(element), shape=shape, positions=positions,
                                    line_of=_shifted(line_of, base))
        pos = base + end
        if text[pos:pos + 1] == ",":
            pos = _skip(text, pos + 1)
    return min(pos + 1, len(text))


def _parse_value(text: str, start: int, positions: dict[int, list[int]]) -> tuple[Any, int, int]:
    """The top-level value at ``start``, its end and the offset ``positions`` are relative to.

    It is parsed from its own slice (:func:`_own_slice`: many damaged values appended to one file each
    cost the whole file before). A value that runs past that slice (an unusual layout) is parsed again
    from the whole text; errors are raised with offsets into ``text``.
    """
    chunk, base, _ = _own_slice(text, start)
    if base:
        try:
            value, end = _parse(chunk, 0, 3, positions)
            return value, start + end, start
        except _ParseError as exc:
            if exc.pos < len(chunk.rstrip()):
                raise _ParseError(exc.msg, start + exc.pos) from exc
            positions.clear()
    value, end = _parse(text, start, 3, positions)
    return value, end, 0


def read_document(src: TextSource, origin: str, shape: str | None = None) -> Iterator[Item]:
    """A whole JSON document (or several concatenated ones), decoded into one string; an array's records
    are handed out as they are parsed.

    Pretty-printed ``ConvertTo-Json`` arrays, pages and back-to-back objects are all accepted. A value that
    is not valid JSON is one reject naming the line where it fails, and reading goes on at the next value
    that starts a line as it did (the next element of a pretty-printed array, the next appended object):
    the elements before a damaged one are kept, and those after it too. Where no such line follows (a
    file cut short, JSON on one line), the rest of the file is that reject.
    """
    text = src.read_all()
    if src.ansi_fallback and undecodable(text):
        text = as_cp1252(text)
    first_line = src.lineno + 1
    if text.startswith("\ufeff"):
        text = text[1:]
    line_of = _Lines(text, first_line)
    pos = _skip(text, 0)
    while pos < len(text):
        start = pos
        if text[start] == "[":  # element by element: a big export is never held decoded all at once
            pos = yield from _array_elements(text, start, origin, shape, first_line)
            pos = _skip(text, pos)
            continue
        positions: dict[int, list[int]] = {}
        try:
            value, pos, base = _parse_value(text, start, positions)
        except _ParseError as exc:
            envelope = _ENVELOPE_ARRAY.search(text, start, min(len(text), start + 4096))
            if text[start] == "{" and envelope is not None:  # a damaged page: its records one by one
                head = text[start:envelope.start()]
                label = shape or ("rws" if "odata.metadata" in head or '"d"' in head else None)
                damaged = 0
                for item in _array_elements(text, envelope.end() - 1, origin, label, first_line):
                    damaged += isinstance(item, Reject)
                    yield item
                pos = _next_sibling(text, start)
                if not damaged:  # the damage lies outside the records (a broken next link, say): say so
                    yield _damaged(text, start, pos, exc.pos, f"{exc.msg} (outside the page's records, "
                                   "which were read)", origin, line_of)
            else:
                pos = _next_sibling(text, start)
                yield _damaged(text, start, pos, exc.pos, exc.msg, origin, line_of)
            pos = _skip(text, pos)
            continue
        yield from items_from_value(value, origin=origin, line=line_of(start), shape=shape, positions=positions,
                                    line_of=_shifted(line_of, base))
        pos = _skip(text, pos)
        if text[pos:pos + 1] == ",":  # tolerate "{...},\n{...}" exports
            pos = _skip(text, pos + 1)
