"""Every line of Elastic's pipeline test input gives exactly Elastic's expected document.

Field by field: every expected field must be present with the same value; any other field must be
one of exotrace's documented extra fields; the empty OData page gives no document.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from exotrace.model import RawRecord
from exotrace.normalize import EXTRA_FIELDS, NormalizeOptions, Normalizer


def flatten(doc: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in doc.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


def records(path) -> list[RawRecord | None]:
    """One entry per input line: a record, or None for an empty OData page."""
    out: list[RawRecord | None] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        fields = orjson.loads(line)
        if isinstance(fields.get("value"), list) and not fields["value"]:
            out.append(None)
            continue
        out.append(RawRecord(fields=fields, original=line, origin=str(path), line=number))
    return out


@pytest.fixture(scope="module")
def cases(shared_dir, geoip_dir):
    base = shared_dir / "peers" / "elastic" / "pipeline"
    expected = orjson.loads((base / "test-log.log-expected.json").read_bytes())["expected"]
    inputs = records(base / "test-log.log")
    normalizer = Normalizer(
        NormalizeOptions(local_domains=("contoso.com",), geoip_dir=geoip_dir, preserve_original=True)
    )
    assert len(inputs) == len(expected) == 8
    return list(zip(inputs, expected, strict=True)), normalizer


@pytest.mark.parametrize("index", range(8))
def test_case_matches_elastic(cases, index):
    pairs, normalizer = cases
    record, expected = pairs[index]
    if expected is None:
        assert record is None, "an empty page must give no document"
        return
    document = normalizer.normalize(record)
    ours = flatten(document.doc)
    theirs = flatten(expected)
    for path, value in theirs.items():
        assert path in ours, f"case {index + 1}: missing {path}"
        assert ours[path] == value, f"case {index + 1}: {path}: {ours[path]!r} != {value!r}"
    extras = sorted(set(ours) - set(theirs))
    unexpected = [p for p in extras if not any(p == e or p.startswith(e + ".") for e in EXTRA_FIELDS)]
    assert not unexpected, f"case {index + 1}: undocumented extra fields {unexpected}"


def test_exact_shape_without_extras(cases, shared_dir, geoip_dir):
    """With extras off, documents equal Elastic's exactly (no field more, none less)."""
    pairs, _ = cases
    exact = Normalizer(
        NormalizeOptions(local_domains=("contoso.com",), geoip_dir=geoip_dir, preserve_original=True, extras=False)
    )
    for record, expected in pairs:
        if record is not None:
            assert exact.normalize(record).doc == expected
