"""JSON shapes: NDJSON, pages (Graph, RWS light and verbose), PowerShell arrays, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
from file_helpers import FILES, ps_line, records, rejects, write

from exotrace.sources.file import read_file


def test_elastic_test_log_gives_seven_records_with_exact_originals(shared_dir: Path) -> None:
    elastic_log = shared_dir / "peers" / "elastic" / "pipeline" / "test-log.log"
    lines = elastic_log.read_text(encoding="utf-8").split("\n")
    items = list(read_file(elastic_log))
    assert not rejects(items)
    recs = records(items)
    assert len(recs) == 7
    assert [r.line for r in recs] == [1, 2, 3, 4, 6, 7, 8]  # line 5 is an empty page
    for r in recs:
        assert r.original == lines[r.line - 1]
        assert r.origin == str(elastic_log)
    assert recs[5].shape == "graph" and recs[5].fields["status"] == "delivered"
    assert recs[0].shape == "powershell"
    assert recs[0].fields["MessageId"].startswith("<a210cf91")


def test_ndjson_keeps_line_text_and_decodes_escapes(tmp_path: Path) -> None:
    lines = [ps_line(i) for i in range(3)]
    path = write(tmp_path / "trace.log", "\r\n".join(lines) + "\r\n")
    recs = records(list(read_file(path)))
    assert [r.original for r in recs] == lines
    assert "\\u003c" in recs[0].original
    assert recs[0].fields["MessageId"] == "<m0@fabrikam.com>"
    assert recs[0].fields["Subject"] == "Müller & Söhne report #0"
    assert [r.line for r in recs] == [1, 2, 3]


def test_malformed_line_in_the_middle_is_rejected_and_the_rest_read(tmp_path: Path) -> None:
    lines = [ps_line(0), ps_line(1), '{"Organization":"contoso.com","MessageId":', "", ps_line(3), "[1, 2", ps_line(4)]
    path = write(tmp_path / "trace.ndjson", "\n".join(lines))
    items = list(read_file(path))
    bad = rejects(items)
    assert [(b.line, b.origin) for b in bad] == [(3, str(path)), (6, str(path))]
    assert bad[0].reason.startswith("invalid JSON")
    assert bad[0].raw == lines[2]
    assert [r.line for r in records(items)] == [1, 2, 5, 7]


def test_bad_first_line_does_not_hide_the_ndjson_file(tmp_path: Path) -> None:
    path = write(tmp_path / "trace.ndjson", "\n".join(["{not json", ps_line(1), ps_line(2)]))
    items = list(read_file(path))
    assert [(type(i).__name__, i.line) for i in items] == [("Reject", 1), ("RawRecord", 2), ("RawRecord", 3)]


def test_non_objects_and_foreign_objects_are_rejected(tmp_path: Path) -> None:
    path = write(tmp_path / "mixed.ndjson", "\n".join([ps_line(0), "42", '"text"', '{"access_token":"x"}']))
    items = list(read_file(path))
    assert len(records(items)) == 1
    reasons = [(r.line, r.reason) for r in rejects(items)]
    assert reasons[0] == (2, "expected a JSON object, found a number")
    assert reasons[1] == (3, "expected a JSON object, found a string")
    assert reasons[2][0] == 4 and "not a message-trace record" in reasons[2][1]


@pytest.mark.parametrize("page", [
    '{"odata.metadata":"https://reports.office365.com/ecp/ReportingWebService/Reporting.svc/$metadata#MessageTrace",'
    '"value":[]}',
    '{"d":{"results":[]}}',
    '{"value":[]}',
    '{"@odata.context":"https://graph.microsoft.com/v1.0/$metadata#admin/exchange/tracing/messageTraces","value":[]}',
])
def test_empty_pages_yield_nothing(tmp_path: Path, page: str) -> None:
    assert list(read_file(write(tmp_path / "page.json", page))) == []
    both = write(tmp_path / "two.ndjson", page + "\n" + ps_line(1) + "\n")
    assert [r.line for r in records(list(read_file(both)))] == [2]


def test_ndjson_of_rws_pages(tmp_path: Path) -> None:
    row = json.loads(ps_line(0))
    page1 = {"odata.metadata": "https://x/$metadata#MessageTrace", "value": [row, {**row, "Index": 1}],
             "odata.nextLink": "../../reportingwebservice/reporting.svc/MessageTrace?$skiptoken=2"}
    page2 = {"odata.metadata": "https://x/$metadata#MessageTrace", "value": []}
    path = write(tmp_path / "pages.ndjson", json.dumps(page1) + "\n" + json.dumps(page2) + "\n")
    recs = records(list(read_file(path)))
    assert [(r.line, r.shape, r.fields["Index"]) for r in recs] == [(1, "rws", 0), (1, "rws", 1)]
    assert recs[0].original == orjson.dumps(row).decode()


def test_json_array_of_pages_with_element_lines(tmp_path: Path) -> None:
    row = json.loads(ps_line(0))
    pages = [{"odata.metadata": "m", "value": [row]}, {"odata.metadata": "m", "value": [{**row, "Index": 7}]}]
    path = write(tmp_path / "pages.json", json.dumps(pages, indent=2))
    recs = records(list(read_file(path)))
    text = path.read_text().split("\n")
    assert [r.fields["Index"] for r in recs] == [0, 7]
    for r in recs:  # each record's line is where its object starts
        assert text[r.line - 1].strip() == "{"
        assert '"Organization"' in text[r.line]


def test_rws_verbose_page_drops_metadata_from_fields() -> None:
    recs = records(list(read_file(FILES / "rws-verbose.json")))
    assert [r.shape for r in recs] == ["rws-verbose", "rws-verbose"]
    assert "__metadata" not in recs[0].fields
    assert recs[0].fields["Received"] == "/Date(1730800000000)/"
    assert recs[1].fields["MessageId"] is None and recs[1].fields["Subject"] == ""
    assert json.loads(recs[0].original)["__metadata"]["type"] == "TenantReporting.MessageTrace"


def test_graph_page_pretty_printed() -> None:
    recs = records(list(read_file(FILES / "graph-page.json")))
    assert [(r.shape, r.line) for r in recs] == [("graph", 4), ("graph", 16)]
    assert recs[0].fields["status"] == "filteredAsSpam"
    assert recs[0].fields["receivedDateTime"] == "2025-06-13T10:30:00.1234567Z"
    assert recs[1].fields["fromIP"] == ""


def test_single_graph_object(tmp_path: Path) -> None:
    obj = {"id": "1b2c", "recipientAddress": "a@contoso.com", "senderAddress": "b@fabrikam.com",
           "receivedDateTime": "2025-06-13T10:30:00Z", "status": "pending"}
    path = write(tmp_path / "one.json", json.dumps(obj, indent=4))
    recs = records(list(read_file(path)))
    assert len(recs) == 1 and recs[0].shape == "graph" and recs[0].fields == obj and recs[0].line == 1


def test_powershell_51_pretty_array_with_displayhint_dates() -> None:
    recs = records(list(read_file(FILES / "ps51-array.json")))
    assert [(r.line, r.shape) for r in recs] == [(2, "powershell"), (22, "powershell")]
    first, second = (r.fields for r in recs)
    assert first["StartDate"] == "/Date(1730246400000)/"  # DisplayHint object unwrapped
    assert first["EndDate"] == "/Date(1730332800000+0100)/"
    assert second["Received"] == "/Date(1730284496164)/"
    assert first["MessageId"] == "<5d1f0c2e.4a7b@mail.fabrikam.com>"
    assert first["Subject"] == "Invoice 2024-118 & delivery note"
    assert list(first)[:3] == ["Organization", "MessageId", "Received"]


def test_powershell_7_iso_dates_left_as_they_are(tmp_path: Path) -> None:
    values = ["2024-10-21T17:25:30.6006882Z", "2024-10-21T17:25:30+01:00", "2024-10-21T17:25:30.1",
              "2024-10-21T17:25:30"]
    path = write(tmp_path / "ps7.ndjson", "\n".join(ps_line(i, Received=v) for i, v in enumerate(values)))
    assert [r.fields["Received"] for r in records(list(read_file(path)))] == values


def test_concatenated_pretty_objects(tmp_path: Path) -> None:
    rows = [json.loads(ps_line(i)) for i in range(3)]
    text = "\n".join(json.dumps(r, indent=4) for r in rows)
    recs = records(list(read_file(write(tmp_path / "appended.json", text))))
    assert [r.fields["Index"] for r in recs] == [0, 1, 2]
    assert [r.line for r in recs] == [1, 17, 33]


def test_broken_json_document_keeps_values_before_and_rejects_the_rest(tmp_path: Path) -> None:
    rows = [json.loads(ps_line(i)) for i in range(2)]
    text = json.dumps(rows[0], indent=2) + "\n" + json.dumps(rows[1], indent=2)[:-5] + "\n"
    items = list(read_file(write(tmp_path / "broken.json", text)))
    assert len(records(items)) == 1
    (bad,) = rejects(items)
    assert bad.reason.startswith("invalid JSON") and bad.line > 17
    assert "line 17 onwards" in bad.reason
    assert bad.raw.startswith("{")


@pytest.mark.parametrize(("value", "reason"), [
    ('"x\\ud800y"', "lone surrogate"),
    ('"\\udfff"', "lone surrogate"),
    ("123456789012345678901234567890", "64-bit"),
])
def test_values_json_cannot_carry_reject_only_their_record(tmp_path: Path, value: str, reason: str) -> None:
    # A pretty-printed document goes through the standard decoder, which accepts these; orjson (and so the
    # archive and every sink) cannot encode them.
    good = [ps_line(i) for i in range(3)]
    bad = ps_line(9).replace('"Index":9', f'"Index":{value}')
    path = write(tmp_path / "doc.json", "[\n" + ",\n".join([good[0], bad, *good[1:]]) + "\n]\n")
    items = list(read_file(path))
    (rejected,) = rejects(items)
    assert rejected.line == 3 and reason in rejected.reason
    rejected.raw.encode("utf-8")  # storable
    assert value.strip('"').split("\\")[-1][:4] in rejected.raw  # the bad value is shown
    assert len(records(items)) == 3


def _pretty_array(count: int) -> tuple[list[dict], str]:
    rows = [json.loads(ps_line(i)) for i in range(count)]
    return rows, json.dumps(rows, indent=4) + "\n"  # ConvertTo-Json's layout: one element per indented block


def test_a_damaged_array_element_is_rejected_and_the_elements_around_it_are_kept(tmp_path: Path) -> None:
    rows, text = _pretty_array(10)
    lines_per = (text.count("\n") - 2) // 10
    text = text.replace('report #4"', 'report "4"', 1)  # an unescaped quote
    assert 'report "4"' in text
    items = list(read_file(write(tmp_path / "midbad.json", text)))
    assert [r.fields["Index"] for r in records(items)] == [0, 1, 2, 3, 5, 6, 7, 8, 9]
    assert [r.line for r in records(items)][4] == 2 + 5 * lines_per  # line numbers stay right after it
    (bad,) = rejects(items)
    start = 2 + 4 * lines_per
    assert f"the value of lines {start}-{start + lines_per - 1} was not read" in bad.reason
    assert start <= bad.line < start + lines_per and bad.raw.startswith("{") and bad.raw.endswith("},")


def test_an_array_cut_short_keeps_every_whole_element(tmp_path: Path) -> None:
    rows, text = _pretty_array(50)
    items = list(read_file(write(tmp_path / "cut.json", text[: len(text) * 3 // 4])))  # an interrupted export
    kept = [r.fields["Index"] for r in records(items)]
    assert kept == list(range(len(kept))) and len(kept) >= 36
    (bad,) = rejects(items)
    assert "onwards was not read" in bad.reason and bad.raw.startswith("{")


def test_a_damaged_object_among_appended_ones_loses_only_itself(tmp_path: Path) -> None:
    rows = [json.loads(ps_line(i)) for i in range(4)]
    blocks = [json.dumps(r, indent=4) for r in rows]
    blocks[1] = blocks[1].replace('"Status": ', '"Status" ', 1)  # a missing colon
    items = list(read_file(write(tmp_path / "appended.json", "\n".join(blocks) + "\n")))
    assert [r.fields["Index"] for r in records(items)] == [0, 2, 3]
    assert len(rejects(items)) == 1


def test_many_damaged_appended_objects_are_each_rejected_with_their_lines(tmp_path: Path) -> None:
    """Each appended object is parsed on its own (20,000 with every other damaged took 73 s: each error
    counted lines from the file's start; now 1 s)."""
    blocks = [json.dumps(json.loads(ps_line(i)), indent=4) for i in range(200)]
    lines_per = blocks[0].count("\n") + 1
    for n in range(0, 200, 2):
        blocks[n] = blocks[n].replace('"Index": ', '"Index" ', 1)
    items = list(read_file(write(tmp_path / "appended.json", "\n".join(blocks) + "\n")))
    assert [r.fields["Index"] for r in records(items)] == list(range(1, 200, 2))
    assert [r.line for r in records(items)] == [1 + n * lines_per for n in range(1, 200, 2)]
    assert [b.line for b in rejects(items)] == [n * lines_per + lines_per - 1 for n in range(0, 200, 2)]


def test_a_value_laid_out_past_its_first_line_start_is_read_whole(tmp_path: Path) -> None:
    """A page whose records start a line as the page does is still one value (read whole, not cut there)."""
    row = json.loads(ps_line(1))
    text = '{"value":\n[\n' + json.dumps(row) + "\n]}\n" + json.dumps(json.loads(ps_line(2)), indent=2) + "\n"
    items = list(read_file(write(tmp_path / "odd.json", text), format="json"))
    assert rejects(items) == [] and [r.fields["Index"] for r in records(items)] == [1, 2]


def test_a_missing_comma_between_two_whole_elements_loses_nothing(tmp_path: Path) -> None:
    rows, text = _pretty_array(3)
    text = text.replace("},\n    {", "}\n    {", 1)  # the first element's comma is gone
    items = list(read_file(write(tmp_path / "nocomma.json", text)))
    assert rejects(items) == [] and [r.fields["Index"] for r in records(items)] == [0, 1, 2]


def test_many_damaged_elements_are_each_rejected_with_their_lines(tmp_path: Path) -> None:
    rows, text = _pretty_array(200)
    lines_per = (text.count("\n") - 2) // 200
    for n in range(0, 200, 2):  # every other element loses a colon
        text = text.replace(f'"Index": {n}\n', f'"Index" {n}\n', 1)
    items = list(read_file(write(tmp_path / "many.json", text)))
    assert [r.fields["Index"] for r in records(items)] == list(range(1, 200, 2))
    assert [b.line for b in rejects(items)] == [2 + n * lines_per + lines_per - 2 for n in range(0, 200, 2)]


def test_a_damaged_record_of_a_saved_page_loses_only_itself(tmp_path: Path) -> None:
    rows = [{"id": f"id-{n}", "receivedDateTime": "2026-11-28T15:04:05Z", "recipientAddress": f"u{n}@c.com",
             "senderAddress": "a@f.com", "status": "delivered"} for n in range(5)]
    page = json.dumps({"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#x", "value": rows}, indent=4)
    broken = page.replace('"recipientAddress": "u2@c.com",', '"recipientAddress": "u2@c.com"', 1)
    items = list(read_file(write(tmp_path / "page.json", broken + "\n")))
    assert [r.fields["id"] for r in records(items)] == ["id-0", "id-1", "id-3", "id-4"]
    assert {r.shape for r in records(items)} == {"graph"} and len(rejects(items)) == 1
    # RWS light: the records keep their shape
    light = json.dumps({"odata.metadata": "https://x/$metadata#MessageTrace", "value": [
        {"MessageTraceId": f"t{n}", "RecipientAddress": f"u{n}@c.com", "Received": "2026-11-28T15:04:05"}
        for n in range(3)]}, indent=2).replace('"t1",', '"t1"', 1)
    items = list(read_file(write(tmp_path / "light.json", light + "\n")))
    assert [(r.fields["MessageTraceId"], r.shape) for r in records(items)] == [("t0", "rws"), ("t2", "rws")]
    # damage outside the records (a cut next link): every record is read, and the damage is reported
    cut = page[:-1].rstrip() + ',\n    "@odata.nextLink": "https://graph.micro\n}\n'  # after the value array
    items = list(read_file(write(tmp_path / "cut.json", cut)))
    assert len(records(items)) == 5 and len(rejects(items)) == 1
    assert "outside the page's records" in rejects(items)[0].reason


def test_a_big_array_is_handed_out_element_by_element(tmp_path: Path) -> None:
    """A ConvertTo-Json array is not held decoded all at once, nor its text twice: reading a 9 MB export
    peaks near its text's size (it peaked at 4.5x: the text joined to its detected head, then every record
    decoded into one list before the first was handed out)."""
    import tracemalloc

    path = write(tmp_path / "big.json", json.dumps([json.loads(ps_line(i)) for i in range(20_000)], indent=4,
                                                   ensure_ascii=False))
    size = path.stat().st_size
    tracemalloc.start()
    try:
        items = read_file(path)
        first = next(items)
        held = tracemalloc.get_traced_memory()[0]
        count = 1 + sum(1 for _ in items)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == 20_000 and records([first])[0].fields["Index"] == 0
    assert held < 1.5 * size, (held, size)  # the text, not the records
    assert peak < 3.5 * size, (peak, size)  # what decoding the file costs (3x in CPython), no more


@pytest.mark.parametrize("damaged", [False, True])
def test_an_export_on_one_line_is_read_element_by_element(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          damaged: bool) -> None:
    """``ConvertTo-Json -Compress`` of a whole export is one NDJSON line: it was decoded at once (to tell
    its shape, then to read it: 18x the file in memory); a line this long is now read element by element,
    and damage loses only the elements from the damaged one on."""
    from exotrace.sources.file import json_shapes

    monkeypatch.setattr(json_shapes, "BIG_ARRAY_LINE", 1000)
    rows = [json.loads(ps_line(i)) for i in range(50)]
    text = json.dumps(rows, separators=(",", ":"))
    if damaged:
        text = text.replace('"Index":30', '"Index" 30', 1)
    items = list(read_file(write(tmp_path / "compressed.json", text + "\n")))
    kept = [r.fields["Index"] for r in records(items)]
    assert kept == (list(range(30)) if damaged else list(range(50)))
    assert all(r.line == 1 for r in records(items))
    assert len(rejects(items)) == (1 if damaged else 0)
