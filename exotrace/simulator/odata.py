"""The small slice of OData the two services accept: a ``$filter`` tokenizer and date literals."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

from exotrace.simulator.data import to_us

_TOKEN = re.compile(
    r"\s*(?:(?P<typed>[A-Za-z]+)'(?P<tval>(?:[^']|'')*)'"
    r"|'(?P<str>(?:[^']|'')*)'"
    r"|(?P<punct>[(),])"
    r"|(?P<word>[^\s(),']+))"
)
_DT = re.compile(
    r"^(\d{4})-(\d\d)-(\d\d)(?:[T ](\d\d):(\d\d)(?::(\d\d)(?:\.(\d{1,9}))?)?)?\s*(Z|[+-]\d\d:?\d\d)?$",
    re.IGNORECASE,
)


class FilterError(ValueError):
    """The filter cannot be understood."""


@dataclass(frozen=True, slots=True)
class Tok:
    kind: str  # "str", "typed", "punct", "word"
    text: str
    type: str = ""  # typed literals: "datetime", "guid", ...; quoted ones: "string"; bare words: ""


def tokenize(text: str) -> list[Tok]:
    out: list[Tok] = []
    pos, text = 0, text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise FilterError(f"Syntax error at position {pos} in '{text}'.")
        pos = m.end()
        if m.group("typed") is not None:
            out.append(Tok("typed", m.group("tval").replace("''", "'"), m.group("typed").lower()))
        elif m.group("str") is not None:
            out.append(Tok("str", m.group("str").replace("''", "'"), "string"))
        elif m.group("punct") is not None:
            out.append(Tok("punct", m.group("punct")))
        elif m.group("word") is not None:
            out.append(Tok("word", m.group("word")))
    return out


def parse_datetime(text: str, round_up: bool = False) -> int:
    """ISO 8601 with Z, an offset or no zone (UTC), 0-9 fractional digits -> epoch microseconds.

    .NET keeps 7 digits (100 ns ticks) and Go's RFC3339Nano writes up to 9 (Elastic's Graph input), which
    the service accepts. Rows carry whole microseconds, so digits past the sixth are cut, or with
    ``round_up`` (a lower bound) rounded up: ``ge ...00.1234561`` must not match a row at ``.123456``."""
    m = _DT.match(text.strip())
    if not m:
        raise ValueError(f"not a date: {text!r}")
    y, mo, d, hh, mm, ss, frac, zone = m.groups()
    tz = UTC
    if zone and zone.upper() != "Z":
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        tz = timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))
    when = datetime(int(y), int(mo), int(d), int(hh or 0), int(mm or 0), int(ss or 0), tzinfo=tz)
    digits = (frac or "").ljust(6, "0")
    micro = int(digits[:6])
    if round_up and digits[6:].strip("0"):
        micro += 1
    return to_us(when) + micro


def parse_ticks(text: str, round_up: bool = False) -> int:
    """:func:`parse_datetime` in 100 ns ticks since the epoch (the resolution of Received); digits past the
    seventh are cut, or with ``round_up`` (a lower bound) rounded up."""
    m = _DT.match(text.strip())
    frac = (m.group(7) or "") if m else ""
    us = parse_datetime(text)
    ticks = us * 10 + int(frac.ljust(7, "0")[6])
    if round_up and frac[7:].strip("0"):
        ticks += 1
    return ticks


@dataclass(frozen=True, slots=True)
class Clause:
    prop: str
    op: str  # eq, ne, gt, ge, lt, le, contains, startswith, endswith
    value: str
    type: str = ""


_COMPARE = {"eq", "ne", "gt", "ge", "lt", "le"}
_FUNCS = {"contains", "startswith", "endswith"}


def parse_clauses(text: str, *, allow_or: bool = True) -> list[Clause]:
    """Flatten a filter into comparison clauses (in order). ``and``/``or``/``not``/parentheses are
    separators; ``in (a, b)`` becomes ``eq b`` (the last value). ``allow_or=False`` rejects all but and/eq."""
    toks = tokenize(text)
    out: list[Clause] = []
    i = 0

    def word(k: int) -> str:
        return toks[k].text.lower() if k < len(toks) and toks[k].kind == "word" else ""

    def literal(k: int) -> Tok:
        if k >= len(toks) or toks[k].kind == "punct":
            raise FilterError(f"Expression expected in '{text}'.")
        return toks[k]

    while i < len(toks):
        t = toks[i]
        if t.kind == "punct" and t.text in "()":
            if not allow_or:
                raise FilterError("Parentheses are not supported in this filter.")
            i += 1
            continue
        w = word(i)
        if w in ("and", "or", "not"):
            if not allow_or and w != "and":
                raise FilterError(f"The operator '{w}' is not supported in this filter.")
            i += 1
            continue
        if t.kind != "word":
            raise FilterError(f"Syntax error near '{t.text}' in '{text}'.")
        if w in _FUNCS and i + 1 < len(toks) and toks[i + 1].text == "(":
            if not allow_or:
                raise FilterError(f"The function '{w}' is not supported in this filter.")
            # fn ( prop , value )
            if i + 5 >= len(toks) or toks[i + 3].text != "," or toks[i + 5].text != ")":
                raise FilterError(f"Invalid use of {w} in '{text}'.")
            lit = literal(i + 4)
            out.append(Clause(toks[i + 2].text, w, lit.text, lit.type))
            i += 6
            continue
        op = word(i + 1)
        if op in _COMPARE:
            if not allow_or and op != "eq":
                raise FilterError(f"The operator '{op}' is not supported in this filter.")
            lit = literal(i + 2)
            out.append(Clause(t.text, op, lit.text, lit.type))
            i += 3
            continue
        if op == "in" and allow_or and i + 2 < len(toks) and toks[i + 2].text == "(":
            j, last = i + 3, None
            while j < len(toks) and toks[j].text != ")":
                if toks[j].kind != "punct":
                    last = toks[j]
                j += 1
            if last is None or j >= len(toks):
                raise FilterError(f"Invalid 'in' expression in '{text}'.")
            out.append(Clause(t.text, "eq", last.text, last.type))
            i = j + 1
            continue
        raise FilterError(f"Invalid filter clause near '{t.text}' in '{text}'.")
    return out
