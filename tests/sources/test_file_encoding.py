"""Encodings, BOMs, gzip and unreadable files."""

from __future__ import annotations

import codecs
import gzip
import json
import zipfile
from pathlib import Path

import pytest
from file_helpers import ps_line, records, rejects, write

from exotrace.sources.file import read_file
from exotrace.sources.file.encoding import detect_encoding

LINES = [ps_line(i) for i in range(4)]
TEXT = "\r\n".join(LINES) + "\r\n"

ENCODINGS = {
    "utf-8": b"",
    "utf-8-bom": codecs.BOM_UTF8,
    "utf-16-le-bom": codecs.BOM_UTF16_LE,
    "utf-16-be-bom": codecs.BOM_UTF16_BE,
    "utf-16-le-nobom": b"",
    "utf-16-be-nobom": b"",
}
CODEC = {"utf-8": "utf-8", "utf-8-bom": "utf-8", "utf-16-le-bom": "utf-16-le", "utf-16-be-bom": "utf-16-be",
         "utf-16-le-nobom": "utf-16-le", "utf-16-be-nobom": "utf-16-be"}


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("name", list(ENCODINGS))
def test_every_encoding_reads_the_same_records(tmp_path: Path, name: str, gz: bool) -> None:
    data = ENCODINGS[name] + TEXT.encode(CODEC[name])
    if gz:
        data = gzip.compress(data)
    path = tmp_path / "export.dat"  # the extension says nothing
    path.write_bytes(data)
    items = list(read_file(path))
    assert not rejects(items)
    recs = records(items)
    assert [r.original for r in recs] == LINES
    assert recs[0].fields["Subject"] == "Müller & Söhne report #0"


def test_bom_is_not_part_of_the_first_original(tmp_path: Path) -> None:
    path = tmp_path / "bom.ndjson"
    path.write_bytes(codecs.BOM_UTF8 + LINES[0].encode())
    (rec,) = records(list(read_file(path)))
    assert rec.original == LINES[0]


def test_windows_1252_fallback(tmp_path: Path) -> None:
    path = write(tmp_path / "ansi.ndjson", LINES[0] + "\n", "cp1252")
    (rec,) = records(list(read_file(path)))
    assert rec.fields["Subject"].startswith("Müller")


def test_detect_encoding_rules() -> None:
    assert detect_encoding("abc".encode("utf-16-le")) == "utf-16-le"
    assert detect_encoding("abc".encode("utf-16-be")) == "utf-16-be"
    assert detect_encoding(codecs.BOM_UTF16_LE + "a".encode("utf-16-le")) == "utf-16"
    assert detect_encoding("é".encode()[:1]) == "utf-8"  # a cut multi-byte character is not an error


def test_corrupt_gzip_gives_one_reject(tmp_path: Path) -> None:
    good = gzip.compress(TEXT.encode())
    path = tmp_path / "broken.gz"
    path.write_bytes(good[:10] + b"\x00garbage" * 20)
    items = list(read_file(path))
    assert len(rejects(items)) == 1 and not records(items)
    assert rejects(items)[0].origin == str(path)


def test_truncated_gzip_keeps_what_was_read(tmp_path: Path) -> None:
    big = "\n".join(ps_line(i) for i in range(2000)) + "\n"
    data = gzip.compress(big.encode())
    path = tmp_path / "cut.ndjson.gz"
    path.write_bytes(data[: len(data) * 2 // 3])
    items = list(read_file(path))
    assert records(items), "rows before the cut are kept"
    last = items[-1]
    assert not hasattr(last, "fields") and "not read" in last.reason
    assert all(i.line < last.line for i in records(items))


def test_binary_and_zip_files_are_rejected_once(tmp_path: Path) -> None:
    binary = tmp_path / "image.png"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    zipped = tmp_path / "export.zip"
    with zipfile.ZipFile(zipped, "w") as zf:
        zf.writestr("a.ndjson", TEXT)
    for path in (binary, zipped):
        items = list(read_file(path))
        assert len(items) == 1 and rejects(items)[0].line == 0
    assert "zip" in list(read_file(zipped))[0].reason


def test_undecodable_line_after_the_sample_is_rejected_alone(tmp_path: Path) -> None:
    good = "\n".join(ps_line(i) for i in range(100)) + "\n"
    path = tmp_path / "mixed.ndjson"
    # 0x81 and 0x8d are neither UTF-8 nor Windows-1252 (which reads the other non-UTF-8 bytes)
    path.write_bytes(good.encode() + b'{"Subject":"\x81\x8d bad"}\n' + ps_line(200).encode() + b"\n")
    items = list(read_file(path))
    assert [r.line for r in records(items)] == [*range(1, 101), 102]
    (bad,) = rejects(items)
    assert bad.line == 101 and "not valid utf-8" in bad.reason
    assert bad.raw == '{"Subject":"\\x81\\x8d bad"}'
    bad.raw.encode("utf-8")  # storable


def test_undecodable_bytes_in_a_json_document_reject_only_that_record(tmp_path: Path) -> None:
    rows = ",\n".join(ps_line(i) for i in range(60)).encode().replace(b"report #50", b"report \x8150")
    path = tmp_path / "doc.json"  # the bad byte lies beyond the sample used to pick the encoding
    path.write_bytes(b"[\n" + rows + b"\n]\n")
    items = list(read_file(path))
    assert [i.line for i in rejects(items)] == [52]
    assert len(records(items)) == 59
    assert "\\x8150" in rejects(items)[0].raw


def test_missing_file_and_empty_file(tmp_path: Path) -> None:
    (missing,) = list(read_file(tmp_path / "nope.json"))
    assert missing.reason == "no such file"
    assert list(read_file(write(tmp_path / "empty.json", ""))) == []
    assert list(read_file(write(tmp_path / "blank.json", "\n  \n"))) == []


@pytest.mark.parametrize("suffix", [".ndjson", ".json", ".csv"])
def test_ansi_lines_among_utf8_ones_are_each_read_in_their_own_encoding(tmp_path: Path, suffix: str) -> None:
    # PowerShell 5.1 appends ANSI (Windows-1252) lines to a UTF-8 log: no line may turn into mojibake
    subjects = ["Réunion", "Café 会議", "Grüße", "naïve"]
    encodings = ["cp1252", "utf-8", "cp1252", "utf-8"]
    rows = [json.loads(ps_line(n, Subject=s)) for n, s in enumerate(subjects)]
    if suffix == ".csv":
        names = list(rows[0])
        lines = [",".join(names)] + [",".join(f'"{r[k]}"' if r[k] is not None else "" for k in names) for r in rows]
        chunks = [lines[0].encode()] + [line.encode(e) for line, e in zip(lines[1:], encodings, strict=True)]
    elif suffix == ".json":
        chunks = [b"["] + [(json.dumps(r, ensure_ascii=False) + ("," if n < 3 else "")).encode(e)
                          for n, (r, e) in enumerate(zip(rows, encodings, strict=True))] + [b"]"]
    else:
        chunks = [json.dumps(r, ensure_ascii=False).encode(e) for r, e in zip(rows, encodings, strict=True)]
    path = tmp_path / f"mixed{suffix}"
    path.write_bytes(b"\r\n".join(chunks) + b"\r\n")
    items = list(read_file(path))
    assert rejects(items) == []
    assert [r.fields["Subject"] for r in records(items)] == subjects


def test_bytes_neither_utf8_nor_windows_1252_reject_their_line_only(tmp_path: Path) -> None:
    # 0x81 is undefined in Windows-1252: that line is rejected, its bytes shown as \x81
    path = tmp_path / "bad.ndjson"
    good = [ps_line(n).encode() for n in range(3)]
    bad = ps_line(9, Subject="x\u00e9y").encode("cp1252").replace(b"x\xe9y", b"x\x81y")
    path.write_bytes(b"\n".join([good[0], bad, good[1], good[2]]) + b"\n")
    items = list(read_file(path))
    assert len(records(items)) == 3
    (reject,) = rejects(items)
    assert reject.line == 2 and "not valid utf-8 or windows-1252" in reject.reason and "\\x81" in reject.raw


def test_trailing_bytes_after_a_gzip_stream_lose_no_line(tmp_path: Path) -> None:
    big = "\n".join(ps_line(i) for i in range(2000)) + "\n"
    path = tmp_path / "tail.ndjson.gz"
    path.write_bytes(gzip.compress(big.encode()) + b"junk")  # gzip -d reads this file
    items = list(read_file(path))
    assert len(records(items)) == 2000
    (bad,) = rejects(items)
    assert bad.line == 2001 and "corrupt compressed data after line 2000" in bad.reason


def test_a_lone_surrogate_in_utf16_is_read_as_a_replacement_character(tmp_path: Path) -> None:
    # the admin center cuts subjects at 256 UTF-16 units and may split an emoji: the row is kept
    lines = [ps_line(i) for i in range(60)]
    data = bytearray(codecs.BOM_UTF16_LE + "\r\n".join(lines).encode("utf-16-le") + "\r\n".encode("utf-16-le"))
    mark = "report #50".encode("utf-16-le")
    at = data.index(mark) + len(mark) - 4
    data[at:at + 2] = b"\x3c\xd8"  # a high surrogate with no low one after it
    path = tmp_path / "outfile.ndjson"
    path.write_bytes(bytes(data))
    items = list(read_file(path))
    assert rejects(items) == [] and len(records(items)) == 60
    assert [r.line for r in records(items)] == list(range(1, 61))
    assert "\ufffd" in records(items)[50].fields["Subject"]


def test_utf16_without_bom_of_mostly_non_ascii_text(tmp_path: Path) -> None:
    header = "date_time_utc,sender_address,recipient_address,message_subject,status\r\n"
    rows = "".join(f"2026-11-28 15:04:0{n},a@fabrikam.jp,u{n}@contoso.com,{'会議の議事録' * 40},Delivered\r\n"
                   for n in range(5))
    path = tmp_path / "report.csv"
    path.write_bytes((header + rows).encode("utf-16-le"))
    assert detect_encoding(path.read_bytes()[:4096]) == "utf-16-le"
    assert len(records(list(read_file(path)))) == 5


def test_one_control_character_or_a_zeroed_tail_is_no_binary_file(tmp_path: Path) -> None:
    esc = write(tmp_path / "esc.ndjson", "\n".join([ps_line(0, Subject="x\x1by"), ps_line(1)]) + "\n")
    assert len(records(list(read_file(esc)))) == 2
    tail = tmp_path / "crashed.ndjson"
    tail.write_bytes("\n".join(ps_line(i) for i in range(5)).encode() + b"\n" + b"\x00" * 4096)
    items = list(read_file(tail))
    assert len(records(items)) == 5 and [r.line for r in rejects(items)] == [6]


def test_utf32_with_bom(tmp_path: Path) -> None:
    path = tmp_path / "utf32.csv"
    text = ("Received,SenderAddress,RecipientAddress,Subject,MessageTraceId\r\n"
            "2026-11-28 15:04:05,a@f.com,u@c.com,Grüße,x\r\n")
    path.write_bytes(text.encode("utf-32"))  # with its BOM, as Export-Csv -Encoding UTF32 writes
    (rec,) = records(list(read_file(path)))
    assert rec.fields["Subject"] == "Grüße"


def test_an_ansi_column_name(tmp_path: Path) -> None:
    text = "Received,SenderAddress,RecipientAddress,MessageTraceId,Größe\r\n2026-11-28 15:04:05,a@f.de,u@c.com,x,1\r\n"
    path = tmp_path / "ansi.csv"
    path.write_bytes(text.encode("cp1252"))
    items = list(read_file(path))
    assert rejects(items) == [] and records(items)[0].fields["Größe"] == "1"


def test_utf16_detection_when_the_sample_ends_inside_a_surrogate_pair(tmp_path: Path) -> None:
    header = "date_time_utc,sender_address,recipient_address,message_subject,status\r\n"
    row = "2026-11-28 15:04:05,a@fabrikam.jp,u@contoso.com,{},Delivered\r\n"
    for pad in range(388, 396):  # the emoji's two halves fall on both sides of byte 1024 for pad 392
        text = header + row.format("会" * pad + "🎉" + "議" * 40)
        path = tmp_path / f"u16-{pad}.csv"
        path.write_bytes(text.encode("utf-16-le"))
        assert detect_encoding(path.read_bytes()[:4096]) == "utf-16-le", pad


def test_a_line_cut_by_gzip_damage_is_not_read_as_whole(tmp_path: Path) -> None:
    # a CSV cut inside its last column would otherwise parse: a record with a truncated value
    rows = [f"2026-11-28 15:04:05,a@f.com,u{n}@c.com,<m{n}@x>,id-{n}" for n in range(5000)]
    text = "Received,SenderAddress,RecipientAddress,MessageId,MessageTraceId\n" + "\n".join(rows) + "\n"
    data = gzip.compress(text.encode())
    for cut in range(len(data) // 2, len(data) // 2 + 40, 7):
        path = tmp_path / f"cut{cut}.csv.gz"
        path.write_bytes(data[:cut])
        items = list(read_file(path))
        got = [(r.fields["MessageId"], r.fields["MessageTraceId"]) for r in records(items)]
        assert got == [(f"<m{n}@x>", f"id-{n}") for n in range(len(got))] and len(got) > 1000
        assert "corrupt compressed data" in rejects(items)[-1].reason
