"""Values that used to crash ``exotrace ingest``: each bad record is reported and kept, the rest is read.

Every case runs end to end: a bad record between two good ones, into a real archive and ``--out``. The bad
record must show up as ``FILE:LINE: reason``, in ``--rejects`` and the archive's rejects table (or, where
Elastic would index it, as a document), and the good records after it must be archived. Exit code 1 when a
record was rejected, never a traceback.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from exotrace.cli import cli

TRACE_IDS = ("11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222",
             "33333333-3333-3333-3333-333333333333")


def record(n: int, **overrides: object) -> dict:
    row = {"Organization": "contoso.com", "MessageId": f"<m{n}@fabrikam.com>", "Received": "2024-05-01T10:00:00Z",
           "SenderAddress": "ann@fabrikam.com", "RecipientAddress": "bob@contoso.com", "Subject": f"mail {n}",
           "Status": "Delivered", "ToIP": None, "FromIP": "81.2.69.144", "Size": 10, "MessageTraceId": TRACE_IDS[n],
           "StartDate": "2024-05-01T00:00:00Z", "EndDate": "2024-05-02T00:00:00Z", "Index": n}
    row.update(overrides)
    return row


class Outcome:
    def __init__(self, result, tmp_path: Path) -> None:
        self.result = result
        self.code = result.exit_code
        self.stderr = result.stderr
        out = tmp_path / "out.ndjson"
        self.docs = [orjson.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
        rejects = tmp_path / "rejects.ndjson"
        self.rejects = [orjson.loads(line) for line in rejects.read_text().splitlines()] if rejects.exists() else []
        with sqlite3.connect(tmp_path / "a.db") as con:
            self.archived = [t for (t,) in con.execute("SELECT trace_id FROM messages ORDER BY trace_id")]
            self.stored_rejects = con.execute("SELECT line, reason FROM rejects ORDER BY line").fetchall()


def ingest(tmp_path: Path, name: str, text: str) -> Outcome:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    result = CliRunner().invoke(cli, [
        "ingest", str(path), "--archive", str(tmp_path / "a.db"), "--out", str(tmp_path / "out.ndjson"),
        "--rejects", str(tmp_path / "rejects.ndjson"), "--no-geoip"], catch_exceptions=True)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    assert "Traceback" not in result.output
    return Outcome(result, tmp_path)


def ndjson(*rows: dict) -> str:
    return "".join(orjson.dumps(r).decode() + "\n" for r in rows)


def raw_ndjson(*rows: dict, bad: tuple[str, str] | None = None) -> str:
    """NDJSON with one value spliced in verbatim (numbers orjson cannot write)."""
    lines = [orjson.dumps(r).decode() for r in rows]
    if bad is not None:
        lines[1] = lines[1].replace(*bad)
    return "\n".join(lines) + "\n"


# -- dates out of datetime's range: the normalizer's part (see the lead's normalizer fix) -----------------------


@pytest.mark.parametrize("value", ["/Date(99999999999999999)/", "/Date(253402300800000)/", "/Date(-62135596800001)/"])
def test_received_out_of_range_is_a_pipeline_error_document(tmp_path: Path, value: str):
    # Elastic's date processor fails on such a value: the record becomes an event.kind pipeline_error document
    # whose error.message names the date, and the rest of the file is read.
    outcome = ingest(tmp_path, "dates.ndjson", ndjson(record(0), record(1, Received=value), record(2)))
    assert outcome.code == 1
    assert any(line.startswith(f"{tmp_path / 'dates.ndjson'}:2: ") and "date" in line.lower()
               for line in outcome.stderr.splitlines()), outcome.stderr
    assert outcome.archived == [TRACE_IDS[0], TRACE_IDS[2]]
    errors = [d for d in outcome.docs if d.get("event", {}).get("kind") == "pipeline_error"]
    assert len(errors) == 1 and len(outcome.docs) == 3
    assert "date" in " ".join(errors[0]["error"]["message"]).lower()
    assert [r["line"] for r in outcome.rejects] == [2]
    assert [line for line, _ in outcome.stored_rejects] == [2]


@pytest.mark.parametrize("name", ["StartDate", "EndDate"])
def test_query_window_out_of_range_is_kept_like_any_unreadable_window(tmp_path: Path, name: str):
    # StartDate/EndDate are informational: an unreadable one is kept as it is (docs/normalize.md); a value
    # beyond datetime's range is no different. The row is archived, nothing is rejected.
    value = "/Date(99999999999999999)/"
    outcome = ingest(tmp_path, "window.ndjson", ndjson(record(0), record(1, **{name: value}), record(2)))
    assert outcome.code == 0, outcome.stderr
    assert outcome.archived == list(TRACE_IDS)
    assert outcome.docs[1]["microsoft"]["online_message_trace"][name] == value
    assert outcome.rejects == []


def test_received_out_of_range_in_a_csv_export(tmp_path: Path):
    header = "Received,SenderAddress,RecipientAddress,Status,Size,MessageTraceId\n"
    rows = [f"2024-05-01 10:00:00,a@fabrikam.com,b@contoso.com,Delivered,1,{TRACE_IDS[0]}",
            f"/Date(99999999999999999)/,a@fabrikam.com,b@contoso.com,Delivered,1,{TRACE_IDS[1]}",
            f"2024-05-01 10:00:00,a@fabrikam.com,b@contoso.com,Delivered,1,{TRACE_IDS[2]}"]
    outcome = ingest(tmp_path, "dates.csv", header + "\n".join(rows) + "\n")
    assert outcome.code == 1
    assert outcome.archived == [TRACE_IDS[0], TRACE_IDS[2]]
    assert [d["event"].get("kind") for d in outcome.docs] == [None, "pipeline_error", None]


# -- sizes beyond 64 bits -----------------------------------------------------------------------------------------


def test_json_size_of_2_to_the_63_is_a_pipeline_error_document(tmp_path: Path):
    # Elastic maps Size as long: 2^63 does not fit, its convert processor fails. Our fingerprint cannot
    # encode it either (the normalizer's part).
    text = raw_ndjson(record(0), record(1, Size=777), record(2), bad=('"Size":777', '"Size":9223372036854775808'))
    outcome = ingest(tmp_path, "size.ndjson", text)
    assert outcome.code == 1
    assert any(":2: " in line and "Size" in line for line in outcome.stderr.splitlines()), outcome.stderr
    assert outcome.archived == [TRACE_IDS[0], TRACE_IDS[2]]
    assert [d["event"].get("kind") for d in outcome.docs] == [None, "pipeline_error", None]


@pytest.mark.parametrize("column", ["Size", "Index"])
@pytest.mark.parametrize("value", [str(2**63), str(2**64)])
def test_csv_integer_beyond_64_bits_is_a_reject(tmp_path: Path, column: str, value: str):
    header = "Received,SenderAddress,RecipientAddress,Status,Size,MessageTraceId,Index\n"
    rows = []
    for n in range(3):
        size, index = ("1", str(n)) if n != 1 else ((value, "1") if column == "Size" else ("1", value))
        rows.append(f"2024-05-01 10:00:00,a@fabrikam.com,b@contoso.com,Delivered,{size},{TRACE_IDS[n]},{index}")
    outcome = ingest(tmp_path, "big.csv", header + "\n".join(rows) + "\n")
    assert outcome.code == 1
    assert f"{tmp_path / 'big.csv'}:3: {column} is out of range" in outcome.stderr
    assert outcome.archived == [TRACE_IDS[0], TRACE_IDS[2]]
    assert [(r["line"], r["field"]) for r in outcome.rejects] == [(3, column)]
    assert len(outcome.docs) == 2


def test_json_document_index_beyond_64_bits_is_a_reject(tmp_path: Path):
    # A pretty-printed document is parsed by the standard decoder, which keeps any integer.
    rows = [orjson.dumps(record(n), option=orjson.OPT_INDENT_2).decode() for n in range(3)]
    rows[1] = rows[1].replace('"Index": 1', '"Index": 18446744073709551616')
    outcome = ingest(tmp_path, "array.json", "[\n" + ",\n".join(rows) + "\n]\n")
    assert outcome.code == 1
    assert "64-bit" in outcome.stderr
    assert outcome.archived == [TRACE_IDS[0], TRACE_IDS[2]]
    assert len(outcome.rejects) == 1 and len(outcome.stored_rejects) == 1


# -- text that is not text --------------------------------------------------------------------------------------


def test_lone_surrogate_escape_in_a_json_document_is_a_reject(tmp_path: Path):
    rows = [orjson.dumps(record(n), option=orjson.OPT_INDENT_2).decode() for n in range(3)]
    rows[1] = rows[1].replace('"mail 1"', '"mail \\ud800 1"')
    outcome = ingest(tmp_path, "array.json", "[\n" + ",\n".join(rows) + "\n]\n")
    assert outcome.code == 1
    assert "lone surrogate" in outcome.stderr
    assert outcome.archived == [TRACE_IDS[0], TRACE_IDS[2]]
    (reject,) = outcome.rejects
    assert "\\ud800" in reject["raw"]
    assert len(outcome.stored_rejects) == 1


def test_lone_surrogate_in_ndjson_is_a_reject(tmp_path: Path):
    text = raw_ndjson(record(0), record(1), record(2), bad=('"mail 1"', '"mail \\ud800 1"'))
    outcome = ingest(tmp_path, "lines.ndjson", text)
    assert outcome.code == 1
    assert outcome.archived == [TRACE_IDS[0], TRACE_IDS[2]]
    assert [r["line"] for r in outcome.rejects] == [2]


# -- normalizer rejects name their field --------------------------------------------------------------------------


@pytest.mark.parametrize(("overrides", "field"), [
    ({"Received": "yesterday-ish"}, "Received"),
    ({"Received": None}, "Received"),
    ({"SenderAddress": "no-at-sign"}, "SenderAddress"),
    ({"RecipientAddress": "bob.contoso.com"}, "RecipientAddress"),
    ({"FromIP": "999.1.2.3"}, "FromIP"),
    ({"ToIP": "not-an-ip"}, "ToIP"),
    ({"Size": "ten"}, "Size"),
    ({"Subject": ["a", "list"]}, "Subject"),
])
def test_a_normalizer_reject_names_its_field_everywhere(tmp_path: Path, overrides: dict, field: str):
    # The field is in the message, in --rejects and in the archive's rejects.field column.
    outcome = ingest(tmp_path, "bad.ndjson", ndjson(record(0), record(1, **overrides), record(2)))
    assert outcome.code == 1
    assert any(line.startswith(f"{tmp_path / 'bad.ndjson'}:2: ") and line.endswith(f"(field {field})")
               for line in outcome.stderr.splitlines()), outcome.stderr
    assert [(r["line"], r["field"]) for r in outcome.rejects] == [(2, field)]
    with sqlite3.connect(tmp_path / "a.db") as con:
        assert con.execute("SELECT line, field FROM rejects").fetchall() == [(2, field)]
    assert outcome.archived == [TRACE_IDS[0], TRACE_IDS[2]]
