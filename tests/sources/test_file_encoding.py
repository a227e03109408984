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
