"""CSV shapes: Export-Csv of the cmdlets, admin-center summary, enhanced summary and extended reports."""

from __future__ import annotations

import codecs
from pathlib import Path

import pytest
from file_helpers import FILES, records, rejects, write

from exotrace.sources.file import read_file
from exotrace.sources.file.csv_dates import to_iso
from exotrace.sources.file.eac import status_from_events

PS_HEADER = ('"PSComputerName","RunspaceId","PSShowComputerName","Organization","MessageId","Received",'
             '"SenderAddress","RecipientAddress","Subject","Status","ToIP","FromIP","Size","MessageTraceId",'
             '"StartDate","EndDate","Index"')


def ps_row(subject: str, received: str = "10/21/2024 5:25:30 PM", size: str = "22704") -> str:
    quoted = '"' + subject.replace('"', '""') + '"'
    return (f'"outlook.office365.com","3c7e9f10","False","contoso.onmicrosoft.com","<a1@fabrikam.com>","{received}",'
            f'"lena@fabrikam.com","ada@contoso.com",{quoted},"Delivered","","81.2.69.144","{size}",'
            '"a6f62809-5cda-4454-0962-08dab38940d6","10/21/2024 9:40:10 AM","10/22/2024 9:40:10 AM","0"')


def test_export_csv_windows_powershell_51() -> None:
    path = FILES / "export-csv-ps51.csv"
    recs = records(list(read_file(path)))
    assert [(r.line, r.shape) for r in recs] == [(3, "csv"), (4, "csv")]
    first, second = (r.fields for r in recs)
    assert first["Received"] == "2024-10-21T17:25:30"
    assert first["StartDate"] == "2024-10-21T09:40:10"
    assert first["Size"] == 22704 and first["Index"] == 0
    assert first["ToIP"] is None and first["FromIP"] == "89.160.20.112"
    assert first["PSComputerName"] == "outlook.office365.com"  # unmapped columns keep their names
    assert second["Subject"] == "Quarterly numbers,\r\nsecond line of the subject"
    assert second["Status"] == "FilteredAsSpam" and second["Received"] == "2024-10-21T05:20:01"
    raw = path.read_bytes().decode().split("\r\n")
    assert recs[0].original == raw[2]
    assert recs[1].original == raw[3] + "\r\n" + raw[4]


@pytest.mark.parametrize("subject", [
    '=HYPERLINK("http://evil.example","Click")', "+SUM(A1:A9)", "-2+3", "@cmd", "\t=1+1", "'quoted'",
])
def test_injection_looking_subjects_are_kept_verbatim(tmp_path: Path, subject: str) -> None:
    path = write(tmp_path / "trace.csv", PS_HEADER + "\n" + ps_row(subject) + "\n")
    (rec,) = records(list(read_file(path)))
    assert rec.fields["Subject"] == subject


@pytest.mark.parametrize("encoding,bom", [
    ("utf-8", b""), ("utf-8", codecs.BOM_UTF8), ("utf-16-le", codecs.BOM_UTF16_LE), ("utf-16-le", b""),
    ("utf-16-be", codecs.BOM_UTF16_BE),
])
def test_csv_in_every_encoding(tmp_path: Path, encoding: str, bom: bytes) -> None:
    text = "#TYPE Selected.Microsoft.Exchange.Management.FfoReporting.MessageTrace\r\n" + PS_HEADER + "\r\n"
    text += ps_row("Grüße aus Köln") + "\r\n"
    path = tmp_path / "trace.txt"
    path.write_bytes(bom + text.encode(encoding))
    (rec,) = records(list(read_file(path)))
    assert rec.fields["Subject"] == "Grüße aus Köln" and rec.line == 3


def test_csv_row_errors_are_rejected_and_reading_goes_on(tmp_path: Path) -> None:
    text = "\n".join([PS_HEADER, ps_row("one"), '"only","three","fields"', ps_row("bad size", size="12kB"),
                      ps_row("four")]) + "\n"
    items = list(read_file(write(tmp_path / "trace.csv", text)))
    assert [r.fields["Subject"] for r in records(items)] == ["one", "four"]
    bad = rejects(items)
    assert [(b.line, b.field) for b in bad] == [(3, None), (4, "Size")]
    assert bad[0].reason == "expected 17 columns, found 3"
    assert bad[1].raw == ps_row("bad size", size="12kB")


def test_unterminated_quote_at_end_is_rejected(tmp_path: Path) -> None:
    text = PS_HEADER + "\n" + ps_row("ok") + "\n" + '"outlook.office365.com","never closed\n'
    items = list(read_file(write(tmp_path / "trace.csv", text)))
    assert len(records(items)) == 1
    assert rejects(items)[0].line == 3 and "unterminated" in rejects(items)[0].reason


def test_semicolon_delimited_export(tmp_path: Path) -> None:
    text = "Received;SenderAddress;RecipientAddress;Subject;Status;Size;MessageTraceId\n"
    text += "21.10.2024 17:25:30;a@fabrikam.com;b@contoso.com;Hallo, Welt;Delivered;10;x-1\n"
    (rec,) = records(list(read_file(write(tmp_path / "de.csv", text))))
    assert rec.fields["Received"] == "2024-10-21T17:25:30" and rec.fields["Subject"] == "Hallo, Welt"


def test_admin_center_summary_with_display_names(tmp_path: Path) -> None:
    text = ('"Date (UTC)","Sender","Recipient","Subject","Status","Message ID","Message trace ID",'
            '"From IP","To IP","Size"\n'
            '"2024-10-21 17:25:30","lena@fabrikam.com","ada@contoso.com","Hi","Filtered as spam",'
            '"<x@fabrikam.com>","0b4f8e1c-9a77-4c3e-8d2f-08dcfd11c0aa","89.160.20.112","","1,234"\n'
            '"2024-10-21 17:25:31","lena@fabrikam.com","bob@contoso.com","Hi","Getting status",'
            '"<x@fabrikam.com>","0b4f8e1c-9a77-4c3e-8d2f-08dcfd11c0aa","89.160.20.112","","1234"\n')
    recs = records(list(read_file(write(tmp_path / "summary.csv", text))))
    assert [r.shape for r in recs] == ["eac-summary"] * 2
    f = recs[0].fields
    assert f["Received"] == "2024-10-21T17:25:30" and f["SenderAddress"] == "lena@fabrikam.com"
    assert f["RecipientAddress"] == "ada@contoso.com" and f["Status"] == "FilteredAsSpam"
    assert f["MessageTraceId"] == "0b4f8e1c-9a77-4c3e-8d2f-08dcfd11c0aa" and f["Size"] == 1234
    assert f["ToIP"] is None and f["MessageId"] == "<x@fabrikam.com>"
    assert recs[1].fields["Status"] == "GettingStatus"


def test_enhanced_summary_gives_one_record_per_recipient() -> None:
    path = FILES / "eac-enhanced.csv"
    recs = records(list(read_file(path)))
    raw = path.read_text().split("\n")
    got = [(r.line, r.fields["RecipientAddress"], r.fields["Status"], r.fields["recipient_status"]) for r in recs]
    assert got == [
        (2, "ada@contoso.com", "Delivered", "Receive, Deliver"),
        (2, "grace@contoso.com", "Failed", "Receive, Fail"),
        (2, "team@contoso.com", "Expanded", "Receive, Expand"),
        (3, "ext@litware.example", "Pending", "Receive, Defer"),
    ]
    f = recs[0].fields
    assert f["Received"] == "2024-09-02T08:15:02.1200000Z" and f["Size"] == 120331
    assert f["MessageTraceId"] == "11c2d3e4-5f60-4718-a9b0-08dccb000001" and f["FromIP"] == "89.160.20.112"
    assert f["Subject"] == "Board pack, September" and f["directionality"] == "Incoming"
    assert recs[3].fields["Subject"] == "+SUM(A1:A9)"
    assert all(r.shape == "eac-enhanced" and r.original == raw[r.line - 1] for r in recs)


def test_extended_report_groups_events_by_message_and_recipient() -> None:
    path = FILES / "eac-extended.csv"
    recs = records(list(read_file(path)))
    got = [(r.fields["RecipientAddress"], r.fields["Status"], r.fields["events"]) for r in recs]
    assert got == [
        ("ada@contoso.com", "Delivered", "RECEIVE, DELIVER"),
        ("bob@contoso.com", "Pending", "RECEIVE, DEFER"),
        ("ext@litware.example", "Delivered", "RECEIVE, SEND"),
    ]
    ada, bob, ext = (r.fields for r in recs)
    assert ada["Received"] == "2024-09-03T07:00:01.000Z" and ada["FromIP"] == "89.160.20.112"
    assert ada["MessageTraceId"] == "22c2d3e4-5f60-4718-a9b0-08dccb000010" and ada["Size"] == 7300
    assert ext["ToIP"] == "1.128.0.1" and ext["Received"] == "2024-09-03T07:04:59.000Z"
    raw = path.read_text().split("\n")
    assert recs[0].original.split("\n") == [raw[1], raw[2], raw[3]]  # its events plus the shared AGENTINFO
    assert recs[2].line == 6 and recs[2].original.split("\n") == [raw[5], raw[6]]


def test_unknown_csv_is_rejected_whole(tmp_path: Path) -> None:
    items = list(read_file(write(tmp_path / "other.csv", "name,age\nada,36\nalan,41\n")))
    assert not records(items)
    assert len(items) == 1 and "unrecognised" in items[0].reason


def test_forced_csv_format_reads_unknown_columns_under_their_names(tmp_path: Path) -> None:
    items = list(read_file(write(tmp_path / "other.csv", "name,age\nada,36\nalan,41\n"), format="csv"))
    assert [r.fields["name"] for r in records(items)] == ["ada", "alan"]


@pytest.mark.parametrize("value,expected", [
    ("10/21/2024 5:25:30 PM", "2024-10-21T17:25:30"),
    ("10/21/2024 12:05:00 AM", "2024-10-21T00:05:00"),
    ("1/2/2024 12:00:00 PM", "2024-01-02T12:00:00"),
    ("21/10/2024 17:25:30", "2024-10-21T17:25:30"),
    ("02/01/2024 17:25:30", "2024-01-02T17:25:30"),
    ("21.10.2024 17:25:30", "2024-10-21T17:25:30"),
    ("2024/10/21 17:25:30", "2024-10-21T17:25:30"),
    ("2024-10-21 17:25:30.123", "2024-10-21T17:25:30.123"),
    ("2024-10-21T17:25:30.6006882Z", "2024-10-21T17:25:30.6006882Z"),
    ("/Date(1730284496164)/", "/Date(1730284496164)/"),
    ("31/02/2024 10:00:00", "31/02/2024 10:00:00"),
    ("yesterday", "yesterday"),
    ("", ""),
])
def test_culture_dates(value: str, expected: str) -> None:
    assert to_iso(value) == expected


@pytest.mark.parametrize("events,status", [
    (["Receive", "Deliver"], "Delivered"),
    (["RECEIVE", "AGENTINFO", "SEND"], "Delivered"),
    (["Receive", "Defer", "Deliver"], "Delivered"),
    (["Receive", "Defer"], "Pending"),
    (["Receive"], "Pending"),
    (["Receive", "Fail"], "Failed"),
    (["Receive", "Expand"], "Expanded"),
    (["Receive", "Resolve", "Deliver"], "Delivered"),
    (["Receive", "Resolve"], "Resolved"),
    (["Receive", "Quarantine"], "Quarantined"),
    (["Receive", "Drop"], "Failed"),
])
def test_status_from_events(events: list[str], status: str) -> None:
    assert status_from_events(events) == status


def test_export_csv_of_get_messagetracev2_powershell_7() -> None:
    # PowerShell 7 Export-Csv: no #TYPE line, every value quoted, en-US dates, V2's eleven properties.
    recs = records(list(read_file(FILES / "export-csv-v2-ps7.csv")))
    assert [(r.line, r.shape) for r in recs] == [(2, "csv"), (3, "csv"), (4, "csv")]
    first, second, third = (r.fields for r in recs)
    assert first["Received"] == "2025-11-20T15:04:05" and first["Size"] == 48213
    assert first["MessageTraceId"] == second["MessageTraceId"] == "5f3a2b1c-7d9e-4f60-a1b2-08de2a1b3c4d"
    assert second["Status"] == "GettingStatus" and third["Status"] == "FilteredAsSpam"
    assert third["Received"] == "2025-11-20T02:59:41" and third["FromIP"] == "2a02:cf40::1"
    assert third["Subject"] == '=HYPERLINK("http://evil.example","Open")' and first["ToIP"] is None


@pytest.mark.parametrize(("header", "value", "expected"), [
    ("Date (UTC+01:00)", "2024-10-21 17:25:30", "2024-10-21T17:25:30+01:00"),
    ("Date (UTC-05:00)", "10/21/2024 5:25:30 PM", "2024-10-21T17:25:30-05:00"),
    ("Date (UTC+05:30)", "21.10.2024 17:25:30", "2024-10-21T17:25:30+05:30"),
    ("Date (UTC+1)", "2024-10-21 17:25:30", "2024-10-21T17:25:30+01:00"),
    ("Date (UTC)", "2024-10-21 17:25:30", "2024-10-21T17:25:30"),
    ("Date (UTC+00:00)", "2024-10-21 17:25:30", "2024-10-21T17:25:30"),
    ("Date (UTC+01:00)", "2024-10-21T17:25:30Z", "2024-10-21T17:25:30Z"),  # a value's own zone wins
])
def test_offset_in_a_date_header_is_applied(tmp_path: Path, header: str, value: str, expected: str) -> None:
    text = (f'"{header}","Sender","Recipient","Subject","Status"\n'
            f'"{value}","a@fabrikam.com","b@contoso.com","Hi","Delivered"\n')
    (rec,) = records(list(read_file(write(tmp_path / "summary.csv", text))))
    assert rec.fields["Received"] == expected


def test_admin_center_summary_without_trace_id_in_local_time() -> None:
    recs = records(list(read_file(FILES / "eac-summary-no-trace-id.csv")))
    assert [r.shape for r in recs] == ["eac-summary"] * 3
    assert recs[0].fields["Received"] == "2025-11-20T16:04:05+01:00"
    assert "MessageTraceId" not in recs[0].fields
    assert recs[2].fields["MessageId"] is None


@pytest.mark.parametrize("column", ["Size", "Index"])
@pytest.mark.parametrize("value", [str(2**63), str(2**64), str(-(2**63) - 1)])
def test_integers_beyond_64_bits_reject_the_row(tmp_path: Path, column: str, value: str) -> None:
    size, index = (value, "0") if column == "Size" else ("1", value)
    row = ps_row("big", size=size).rsplit(",", 1)[0] + f',"{index}"'
    text = "\n".join([PS_HEADER, row, ps_row("next")]) + "\n"
    items = list(read_file(write(tmp_path / "trace.csv", text)))
    (bad,) = rejects(items)
    assert (bad.line, bad.field) == (2, column) and "out of range" in bad.reason
    assert [r.fields["Subject"] for r in records(items)] == ["next"]
    assert records(items)[0].fields["Size"] == 22704


def test_largest_64_bit_size_is_still_a_number(tmp_path: Path) -> None:
    text = PS_HEADER + "\n" + ps_row("max", size=str(2**63 - 1)) + "\n"
    (rec,) = records(list(read_file(write(tmp_path / "trace.csv", text))))
    assert rec.fields["Size"] == 2**63 - 1


@pytest.mark.parametrize(("rows", "expected"), [
    # Excel en-US re-save: month-first with a 24-hour clock; the 28th proves the order for the 5th
    (["11/28/2026 15:04", "11/5/2026 15:04"], ["2026-11-28T15:04:00", "2026-11-05T15:04:00"]),
    (["11/5/2026 15:04", "11/28/2026 15:04"], ["2026-11-05T15:04:00", "2026-11-28T15:04:00"]),  # proof later
    # en-AU PowerShell: day-first with a 12-hour clock
    (["28/11/2026 3:04:05 PM", "5/11/2026 3:04:05 PM"], ["2026-11-28T15:04:05", "2026-11-05T15:04:05"]),
    (["5/11/2026 3:04:05 PM", "28/11/2026 3:04:05 PM"], ["2026-11-05T15:04:05", "2026-11-28T15:04:05"]),
    # nothing proves the order: the clock decides (12-hour: en-US month-first; 24-hour: day-first)
    (["5/11/2026 3:04:05 PM"], ["2026-05-11T15:04:05"]),
    (["5/11/2026 15:04:05"], ["2026-11-05T15:04:05"]),
    # ISO with a one-digit hour
    (["2026-11-28 9:04:05"], ["2026-11-28T09:04:05"]),
])
def test_a_files_slash_dates_are_read_in_the_order_the_file_proves(tmp_path: Path, rows: list[str],
                                                                   expected: list[str]) -> None:
    text = "Received,SenderAddress,RecipientAddress,MessageTraceId\n" + "".join(
        f"{r},a@fabrikam.com,u{n}@contoso.com,00000000-0000-0000-0000-00000000000{n}\n" for n, r in enumerate(rows))
    recs = records(list(read_file(write(tmp_path / "excel.csv", text))))
    assert [r.fields["Received"] for r in recs] == expected
    # the order is the file's: the next file starts unproven again
    (other,) = records(list(read_file(write(tmp_path / "other.csv", text.splitlines()[0] + "\n" +
                                            "5/11/2026 15:04:05,a@fabrikam.com,z@contoso.com,x\n"))))
    assert other.fields["Received"] == "2026-11-05T15:04:05"


def test_a_quote_inside_an_unquoted_field_is_a_literal_quote(tmp_path: Path) -> None:
    # ConvertTo-Csv -UseQuotes Never (PowerShell 7): only a quote at a field's start opens a quoted field
    header = 'Received,SenderAddress,RecipientAddress,Subject (max 5"),MessageTraceId'
    rows = [f"2026-11-28 10:00:0{n},a@fabrikam.com,u{n}@contoso.com,{s},id-{n}"
            for n, s in enumerate(["plain", 'Re: 24" monitor', "after", '"quoted, with comma"'])]
    items = list(read_file(write(tmp_path / "noquotes.csv", header + "\n" + "\n".join(rows) + "\n")))
    assert rejects(items) == []
    assert [r.fields["Subject"] for r in records(items)] == ["plain", 'Re: 24" monitor', "after",
                                                                        "quoted, with comma"]
    assert [r.line for r in records(items)] == [2, 3, 4, 5]


def test_a_slash_date_in_a_subject_does_not_decide_the_files_date_order(tmp_path: Path) -> None:
    text = ("Received,SenderAddress,RecipientAddress,Subject,MessageTraceId\n"
            "5/11/2026 3:04:05 PM,a@f.de,u1@c.com,Rechnung vom 15/03/2026,id-1\n"
            "5/12/2026 3:04:05 PM,a@f.de,u2@c.com,hello,id-2\n")
    recs = records(list(read_file(write(tmp_path / "us.csv", text))))
    assert [r.fields["Received"] for r in recs] == ["2026-05-11T15:04:05", "2026-05-12T15:04:05"]


def test_a_file_of_iso_dates_is_not_read_ahead() -> None:
    from exotrace.sources.file.csv_shapes import CsvRow, _date_order

    consumed = []

    def rows():
        for n in range(1000):
            consumed.append(n)
            yield CsvRow(n + 2, "", [f"2026-11-28T15:04:{n % 60:02d}Z", "a@f.com"])

    ahead, order = _date_order(rows(), "x.csv", [0])
    assert order is None and len(ahead) == 1 and consumed == [0]


def test_a_literal_quote_and_a_quoted_line_break_in_one_record(tmp_path: Path) -> None:
    header = "Received,SenderAddress,RecipientAddress,Subject,MessageId,MessageTraceId"
    rows = ['2026-11-28 10:00:00,a@f.com,u0@c.com,plain,<m0>,id-0',
            '2026-11-28 10:00:01,a@f.com,u1@c.com,"two\nlines",5" disk,id-1',  # even quote count, still open
            '2026-11-28 10:00:02,a@f.com,u2@c.com,after,<m2>,id-2']
    items = list(read_file(write(tmp_path / "mixed.csv", header + "\n" + "\n".join(rows) + "\n")))
    assert rejects(items) == []
    assert [(r.line, r.fields["Subject"], r.fields["MessageId"]) for r in records(items)] == [
        (2, "plain", "<m0>"), (3, "two\nlines", '5" disk'), (5, "after", "<m2>")]


def test_an_unmatched_quote_loses_its_line_only(tmp_path: Path) -> None:
    header = "Received,SenderAddress,RecipientAddress,Subject,MessageTraceId"
    rows = ['2026-11-28 10:00:00,a@f.com,u@c.com,"never closed,id-x'] + [
        f"2026-11-28 10:00:01,a@f.com,u{n}@c.com,subject {n},id-{n}" for n in range(300)]
    items = list(read_file(write(tmp_path / "unclosed.csv", header + "\n" + "\n".join(rows) + "\n")))
    assert [(b.line, "unterminated" in b.reason) for b in rejects(items)] == [(2, True)]
    assert [r.line for r in records(items)] == list(range(3, 303))
