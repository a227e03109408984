"""Folders, format detection and overrides, progress reporting, the shipped sample."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from file_helpers import FILES, ps_line, records, rejects, write

from exotrace.errors import ConfigError
from exotrace.sources.file import FORMATS, json_shapes, read_file, read_paths, total_bytes

SAMPLE = Path(__file__).parents[2] / "exotrace" / "data" / "sample-messagetrace.ndjson"


def test_formats_tuple() -> None:
    assert FORMATS[0] == "auto"
    assert {"ndjson", "json", "graph", "rws", "csv", "eac-summary", "eac-enhanced", "eac-extended"} <= set(FORMATS)


def test_folder_recursion_is_sorted_and_skips_hidden(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "deep").mkdir(parents=True)
    (tmp_path / ".cache").mkdir()
    write(tmp_path / "b" / "1.ndjson", ps_line(3))
    write(tmp_path / "a" / "z.json", ps_line(2))
    write(tmp_path / "a" / "deep" / "x.log", ps_line(1), gz=True)
    write(tmp_path / "0.ndjson", ps_line(0))
    write(tmp_path / ".hidden.ndjson", ps_line(9))
    write(tmp_path / ".cache" / "c.ndjson", ps_line(9))
    single = write(tmp_path / "single.ndjson", ps_line(4))
    recs = records(list(read_paths([tmp_path, single])))
    assert [r.fields["Index"] for r in recs] == [0, 1, 2, 3, 4]  # single.ndjson named again: read once
    assert recs[1].origin == str(tmp_path / "a" / "deep" / "x.log")
    assert recs[-1].origin == str(single)


def test_read_paths_accepts_a_single_path_and_reports_missing_ones(tmp_path: Path) -> None:
    path = write(tmp_path / "one.ndjson", ps_line(0))
    assert len(records(list(read_paths(path)))) == 1
    (missing,) = list(read_paths([tmp_path / "gone"]))
    assert missing.origin == str(tmp_path / "gone") and missing.reason == "no such file"


def test_progress_adds_up_to_total_bytes(tmp_path: Path) -> None:
    write(tmp_path / "big.ndjson", "\n".join(ps_line(i) for i in range(3000)))
    write(tmp_path / "small.json.gz", json.dumps([json.loads(ps_line(1))]), gz=True)
    write(tmp_path / "broken.gz", "x")  # not gzip after all: plain text "x", rejected
    # a document is decoded again from its start after detection read its head: its bytes count once
    write(tmp_path / "pretty.json", json.dumps([json.loads(ps_line(i)) for i in range(50)], indent=4), "utf-16")
    seen: list[int] = []
    items = list(read_paths([tmp_path], on_progress=seen.append))
    assert len(records(items)) == 3051
    assert len(seen) > 3 and all(n > 0 for n in seen)
    assert sum(seen) == total_bytes([tmp_path])


def test_ndjson_is_streamed_not_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(self: object) -> str:
        raise AssertionError("NDJSON must not be read whole")

    monkeypatch.setattr("exotrace.sources.file.encoding.TextSource.read_all", boom)
    path = write(tmp_path / "t.ndjson", "\n".join(ps_line(i) for i in range(50)))
    assert len(records(list(read_file(path)))) == 50


def test_detection_ignores_the_extension(tmp_path: Path) -> None:
    csv_as_json = write(tmp_path / "trace.json", (FILES / "export-csv-ps51.csv").read_text())
    json_as_csv = write(tmp_path / "trace.csv", (FILES / "graph-page.json").read_text())
    assert {r.shape for r in records(list(read_file(csv_as_json)))} == {"csv"}
    assert {r.shape for r in records(list(read_file(json_as_csv)))} == {"graph"}


def test_format_override_labels_and_readers(tmp_path: Path) -> None:
    path = write(tmp_path / "t.ndjson", "\n".join(ps_line(i) for i in range(2)))
    assert {r.shape for r in records(list(read_file(path, format="rws")))} == {"rws"}
    assert {r.shape for r in records(list(read_file(path, format="graph")))} == {"graph"}
    as_doc = records(list(read_file(path, format="json")))  # two concatenated values
    assert [r.line for r in as_doc] == [1, 2]
    pretty = write(tmp_path / "p.json", json.dumps(json.loads(ps_line(0)), indent=2))
    forced = list(read_file(pretty, format="ndjson"))  # wrong override: every line rejected, none lost
    assert not records(forced) and len(rejects(forced)) == len(pretty.read_text().strip().split("\n"))


def test_eac_override_on_a_plain_csv(tmp_path: Path) -> None:
    text = "origin_timestamp,sender_address,recipient_status\n2024-01-01 10:00:00,a@x.example,b@contoso.com##Receive\n"
    (rec,) = records(list(read_file(write(tmp_path / "r.csv", text), format="eac-enhanced")))
    assert rec.fields["Received"] == "2024-01-01T10:00:00" and rec.fields["Status"] == "Pending"


def test_unknown_format_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        list(read_paths([tmp_path], format="xml"))


def test_unrecognised_text_is_one_reject(tmp_path: Path) -> None:
    items = list(read_file(write(tmp_path / "notes.txt", "hello\nworld\n")))
    assert len(items) == 1 and "unrecognised" in items[0].reason


def test_array_element_lines_are_cheap_offsets() -> None:
    lines = json_shapes._Lines("a\nb\nc\nd", 1)
    assert [lines(0), lines(2), lines(6), lines(2)] == [1, 2, 4, 2]


def test_shipped_sample_is_clean() -> None:
    lines = SAMPLE.read_text(encoding="utf-8").splitlines()
    items = list(read_file(SAMPLE))
    assert not rejects(items)
    recs = records(items)
    assert 30 <= len(recs) <= 50 and [r.original for r in recs] == lines
    statuses = {r.fields["Status"] for r in recs}
    assert {"Delivered", "Failed", "Pending", "GettingStatus", "FilteredAsSpam", "Quarantined", "Expanded"} <= statuses
    keys = {(r.fields["MessageTraceId"], r.fields["RecipientAddress"].lower()) for r in recs}
    assert len(keys) == len(recs)
    assert all(r.fields["SenderAddress"].endswith("contoso.com") or r.fields["RecipientAddress"].lower().endswith(
        "contoso.com") for r in recs)


def test_folder_skips_sqlite_files_wal_shm_journal_and_spool(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import logging
    import sqlite3

    db = tmp_path / "exotrace.db"
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE t (x)")
    conn.execute("INSERT INTO t VALUES (1)")  # -wal and -shm exist while the connection is open
    (tmp_path / "exotrace.db-journal").write_bytes(b"\xd9\xd5\x05\xf9\x20\xa1\x63\xd7")
    (tmp_path / "exotrace.db.spool").mkdir()
    write(tmp_path / "exotrace.db.spool" / "sink-0001.ndjson", '{"ecs": {"version": "8.11.0"}}\n')
    write(tmp_path / "other.sqlite", "")
    (tmp_path / "other.sqlite").write_bytes(db.read_bytes()[:100])
    write(tmp_path / "trace.ndjson", ps_line(0))
    write(tmp_path / "notes-wal", "not a companion: no database beside it\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "exotrace.db", "exotrace.db-journal", "exotrace.db-shm", "exotrace.db-wal", "exotrace.db.spool",
        "notes-wal", "other.sqlite", "trace.ndjson"]
    with caplog.at_level(logging.INFO, logger="exotrace.sources.file"):
        items = list(read_paths(tmp_path))
    conn.close()
    assert [Path(i.origin).name for i in items] == ["notes-wal", "trace.ndjson"]
    assert len(records(items)) == 1
    skipped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Skipping")]
    assert len(skipped) == 6 and any("spool" in m for m in skipped)
    assert total_bytes(tmp_path) == sum((tmp_path / n).stat().st_size for n in ("notes-wal", "trace.ndjson"))


def test_sqlite_file_named_explicitly_is_one_clear_reject(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "exotrace.db"
    sqlite3.connect(db).execute("CREATE TABLE t (x)")
    (reject,) = list(read_paths([db]))
    assert "SQLite database" in reject.reason


def test_linked_folders_are_read_once_and_files_reached_twice_are_read_once(tmp_path: Path) -> None:
    real = tmp_path / "elsewhere" / "real"
    real.mkdir(parents=True)
    write(real / "x.ndjson", ps_line(1))
    scan = tmp_path / "scan"
    scan.mkdir()
    write(scan / "plain.ndjson", ps_line(2))
    (scan / "linked").symlink_to(real)  # a linked folder: followed
    (scan / "loop").symlink_to(scan)  # a link back up: not walked again
    (scan / "again.ndjson").symlink_to(scan / "plain.ndjson")  # the same file through a link: read once
    named = [scan, scan / "plain.ndjson", real / "x.ndjson"]  # and named again on the command line
    lines = [r.line for r in records(list(read_paths(named)))]
    subjects = sorted(r.fields["Subject"] for r in records(list(read_paths(named))))
    assert len(lines) == 2 and subjects == sorted(json.loads(ps_line(n))["Subject"] for n in (1, 2))


def test_a_bom_at_the_start_of_any_line_is_not_part_of_the_record(tmp_path: Path) -> None:
    # two BOM'd UTF-8 exports joined with cat: the second BOM starts line 2
    path = tmp_path / "joined.ndjson"
    path.write_bytes(b"\xef\xbb\xbf" + ps_line(1).encode() + b"\n\xef\xbb\xbf" + ps_line(2).encode() + b"\n")
    items = list(read_file(path))
    assert rejects(items) == [] and [r.line for r in records(items)] == [1, 2]


def test_an_ndjson_file_that_starts_mid_line_loses_only_that_line(tmp_path: Path) -> None:
    text = "\n".join(ps_line(i) for i in range(10)) + "\n"
    items = list(read_file(write(tmp_path / "rotated.ndjson", text[60:])))
    assert [r.line for r in records(items)] == list(range(2, 11)) and [r.line for r in rejects(items)] == [1]


def test_a_one_element_array_written_over_three_lines_is_a_document(tmp_path: Path) -> None:
    items = list(read_file(write(tmp_path / "one.json", "[\n" + ps_line(0) + "\n]\n")))
    assert rejects(items) == [] and len(records(items)) == 1


def test_excels_sep_hint_line(tmp_path: Path) -> None:
    text = "sep=;\nReceived;SenderAddress;RecipientAddress;MessageTraceId\n2026-11-28T15:04:05Z;a@f.com;u@c.com;id-1\n"
    items = list(read_file(write(tmp_path / "excel.csv", text)))
    assert rejects(items) == [] and [r.line for r in records(items)] == [3]


def test_a_sink_spool_folder_is_skipped_even_without_its_archive(tmp_path: Path) -> None:
    # `ingest --no-archive --config` keeps sink state in ./exotrace.db.spool with no exotrace.db beside it
    spool = tmp_path / "exotrace.db.spool"
    (spool / "spool" / "http").mkdir(parents=True)
    (spool / "pipeline.json").write_text('{"next_seq": 3}')
    (spool / "spool" / "http" / "000001.seg").write_text(ps_line(7) + "\n")
    write(tmp_path / "export.ndjson", ps_line(1))
    items = list(read_paths([tmp_path]))
    assert rejects(items) == [] and [r.fields["Index"] for r in records(items)] == [1]


def test_a_folder_and_a_link_to_it_inside_the_walk_are_read_under_the_folders_name(tmp_path: Path) -> None:
    real = tmp_path / "in" / "z-real"
    real.mkdir(parents=True)
    write(real / "x.ndjson", ps_line(1))
    (tmp_path / "in" / "a-alias").symlink_to(real)  # walked first by name, but only an alias
    hidden = tmp_path / "in" / ".kept"
    hidden.mkdir()
    write(hidden / "y.ndjson", ps_line(2))
    (tmp_path / "in" / "visible").symlink_to(hidden)  # the only way into a hidden folder: followed
    recs = records(list(read_paths([tmp_path / "in"])))
    assert sorted((Path(r.origin).parent.name, r.fields["Index"]) for r in recs) == [("visible", 2), ("z-real", 1)]
