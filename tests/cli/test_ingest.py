"""``exotrace ingest`` end to end: files in, archive and NDJSON out, rejects kept, exit codes."""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from exotrace.cli import cli

SAMPLE = Path(__file__).resolve().parents[2] / "exotrace" / "data" / "sample-messagetrace.ndjson"

GOOD = (
    '{"Organization":"contoso.com","MessageId":"\\u003cm1@x\\u003e","Received":"2026-11-01T10:00:00.1234567",'
    '"SenderAddress":"ann@fabrikam.com","RecipientAddress":"bob@contoso.com","Subject":"=cmd()","Status":"Delivered",'
    '"ToIP":null,"FromIP":"81.2.69.144","Size":10,"MessageTraceId":"11111111-1111-1111-1111-111111111111"}'
)


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture()
def mixed(tmp_path: Path) -> Path:
    """Three lines: a good record, malformed JSON, a record with an unparsable date."""
    bad_date = GOOD.replace("2026-11-01T10:00:00.1234567", "someday").replace("1111-1111-1111", "2222-2222-2222")
    path = tmp_path / "mixed.ndjson"
    path.write_text("\n".join([GOOD, '{"Received": oops', bad_date]) + "\n", encoding="utf-8")
    return path


def test_sample_into_archive_twice_changes_nothing(tmp_path: Path):
    db = tmp_path / "a.db"
    first = run("ingest", str(SAMPLE), "--archive", str(db), "--local-domain", "contoso.com", "--no-geoip")
    assert first.exit_code == 0, first.output
    assert "rejected 0" in first.stderr
    count = sqlite3.connect(db).execute("select count(*) from messages").fetchone()[0]
    assert count > 30
    second = run("ingest", str(SAMPLE), "--archive", str(db), "--local-domain", "contoso.com", "--no-geoip")
    assert second.exit_code == 0
    assert f"new 0, updated 0, unchanged {count}" in second.stderr
    assert sqlite3.connect(db).execute("select count(*) from messages").fetchone()[0] == count
    # Other options give other documents: rows are updated in place, never duplicated.
    third = run("ingest", str(SAMPLE), "--archive", str(db), "--no-geoip")
    assert f"new 0, updated {count}" in third.stderr
    assert sqlite3.connect(db).execute("select count(*) from messages").fetchone()[0] == count


def test_bad_records_reported_kept_and_exit_1(tmp_path: Path, mixed: Path):
    db = tmp_path / "a.db"
    rejects = tmp_path / "rejects.ndjson"
    result = run("ingest", str(mixed), "--archive", str(db), "--rejects", str(rejects), "--no-geoip")
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert any(line.startswith(f"{mixed}:2: ") for line in lines), result.stderr
    assert any(line.startswith(f"{mixed}:3: ") and "date" in line for line in lines), result.stderr
    assert "Traceback" not in result.output
    assert "read 3, new 1" in result.stderr and "rejected 2" in result.stderr
    kept = [orjson.loads(line) for line in rejects.read_text().splitlines()]
    assert [r["line"] for r in kept] == [2, 3]
    assert "oops" in kept[0]["raw"]
    con = sqlite3.connect(db)
    assert con.execute("select count(*) from messages").fetchone()[0] == 1
    assert con.execute("select count(*) from rejects").fetchone()[0] == 2


def test_stdout_ndjson_without_archive(tmp_path: Path, mixed: Path):
    result = run("ingest", str(mixed), "--no-archive", "--out", "-", "--local-domain", "contoso.com",
                 "--preserve-original", "--no-geoip")
    assert result.exit_code == 1
    docs = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert len(docs) == 2  # the good record and the pipeline_error document; the bad JSON line is a reject
    good = docs[0]
    assert good["email"]["direction"] == "inbound"
    assert good["email"]["subject"] == "=cmd()"
    assert good["event"]["original"] == GOOD
    assert docs[1]["event"]["kind"] == "pipeline_error"
    assert not (tmp_path / "exotrace.db").exists()


def test_out_file_and_usage_errors(tmp_path: Path):
    out = tmp_path / "docs.ndjson"
    result = run("ingest", str(SAMPLE), "--no-archive", "--out", str(out), "--no-geoip")
    assert result.exit_code == 0
    assert len(out.read_text().splitlines()) > 30
    assert run("ingest", str(SAMPLE), "--no-archive").exit_code == 2
    bad_format = run("ingest", str(SAMPLE), "--format", "xml", "--no-archive", "--out", "-")
    assert bad_format.exit_code == 2 and "Error:" in bad_format.stderr
    assert run("ingest", str(tmp_path / "missing.json")).exit_code == 2


def test_geoip_from_dir(tmp_path: Path, geoip_dir: Path):
    path = tmp_path / "one.ndjson"
    path.write_text(GOOD + "\n", encoding="utf-8")
    result = run("ingest", str(path), "--no-archive", "--out", "-", "--geoip-dir", str(geoip_dir))
    doc = orjson.loads(result.stdout.splitlines()[0])
    assert doc["source"]["geo"]["city_name"] == "London"


def test_sinks_from_config_receive_each_new_or_updated_row_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)  # without an archive, sink state goes to ./exotrace.db.spool
    out_dir = tmp_path / "ship"
    config = tmp_path / "exotrace.toml"
    config.write_text(f'[[sink]]\ntype = "file"\nname = "archive-copy"\npath = "{out_dir / "docs.ndjson"}"\n',
                      encoding="utf-8")
    result = run("ingest", str(SAMPLE), "--archive", str(tmp_path / "a.db"), "--config", str(config),
                 "--no-geoip")
    assert result.exit_code == 0, result.stderr
    shipped = [orjson.loads(line) for f in sorted(out_dir.parent.rglob("docs*.ndjson*")) for line in
               f.read_text().splitlines()]
    count = sqlite3.connect(tmp_path / "a.db").execute("select count(*) from messages").fetchone()[0]
    assert len(shipped) == count
    # ingesting the same file again changes nothing, in the archive and in the sinks
    again = run("ingest", str(SAMPLE), "--archive", str(tmp_path / "a.db"), "--config", str(config), "--no-geoip")
    assert again.exit_code == 0, again.stderr
    reshipped = [line for f in sorted(out_dir.parent.rglob("docs*.ndjson*")) for line in f.read_text().splitlines()]
    assert len(reshipped) == count
    # without an archive nothing says what is new: every document goes
    alone = run("ingest", str(SAMPLE), "--no-archive", "--config", str(config), "--no-geoip")
    assert alone.exit_code == 0, alone.stderr
    resent = [line for f in sorted(out_dir.parent.rglob("docs*.ndjson*")) for line in f.read_text().splitlines()]
    assert len(resent) == 2 * count
    assert (tmp_path / "exotrace.db.spool" / "pipeline.json").is_file() and not (tmp_path / "exotrace.db").exists()


FILES = Path(__file__).resolve().parents[1] / "data" / "files"


def test_two_alike_rows_of_one_report_are_two_messages(tmp_path: Path):
    """A summary report without Message ID: an alert sent twice in the same second to the same recipient.
    The second row was taken for another observation of the first ("new 1, unchanged 1": one was lost)."""
    header = '"Date (UTC)","Sender","Recipient","Subject","Status","Message ID"\n'
    row = '"20/11/2025 16:04:05","alerts@fabrikam.com","ops@contoso.com","Alert: disk full","{}",""\n'
    report = tmp_path / "report.csv"
    report.write_text(header + row.format("Delivered") + row.format("FilteredAsSpam"), encoding="utf-8")
    db = tmp_path / "a.db"
    first = run("ingest", str(report), "--archive", str(db), "--no-geoip")
    assert "read 2, new 2, updated 0, unchanged 0" in first.stderr, first.stderr
    assert sorted(r[3] for r in _rows(db)) == ["Delivered", "FilteredAsSpam"]
    again = run("ingest", str(report), "--archive", str(db), "--no-geoip")  # the same file: the same keys
    assert "read 2, new 0, updated 0, unchanged 2" in again.stderr, again.stderr
    later = tmp_path / "later.csv"  # a later download with the first one quarantined meanwhile
    later.write_text(header + row.format("Quarantined") + row.format("FilteredAsSpam"), encoding="utf-8")
    third = run("ingest", str(later), "--archive", str(db), "--no-geoip")
    assert "new 0, updated 1, unchanged 1" in third.stderr, third.stderr
    assert sorted(r[3] for r in _rows(db)) == ["FilteredAsSpam", "Quarantined"]


def _dump(db: Path) -> list:
    with sqlite3.connect(db) as con:
        return [con.execute(f"SELECT * FROM {t} ORDER BY id").fetchall()
                for t in ("messages", "documents", "history", "rejects")]


def _rows(db: Path) -> list[tuple]:
    with sqlite3.connect(db) as con:
        return con.execute("SELECT key, trace_id, recipient, status FROM messages ORDER BY recipient, key").fetchall()


def test_eac_summary_without_trace_id_is_archived_under_derived_keys(tmp_path: Path):
    db = tmp_path / "a.db"
    report = FILES / "eac-summary-no-trace-id.csv"
    first = run("ingest", str(report), "--archive", str(db), "--no-geoip")
    assert first.exit_code == 0, first.stderr
    assert "read 3, new 3, updated 0, unchanged 0, rejected 0" in first.stderr
    assert "3 rows have no MessageTraceId: archived under a key derived from" in first.stderr
    rows = _rows(db)
    assert [(r[2], r[3]) for r in rows] == [("ada@contoso.com", "Delivered"), ("ada@contoso.com", "Failed"),
                                            ("bob@contoso.com", "Pending")]
    assert all(r[0].startswith("derived-") and r[1] == "" for r in rows)
    found = run("search", "--archive", str(db), "--recipient", "ada@contoso.com", "--format", "json")
    assert [r["status"] for r in orjson.loads(found.stdout)] == ["Delivered", "Failed"]
    assert orjson.loads(found.stdout)[0]["received"] == "2025-11-20T15:04:05.000Z"  # UTC+01:00 applied
    again = run("ingest", str(report), "--archive", str(db), "--no-geoip")
    assert "read 3, new 0, updated 0, unchanged 3" in again.stderr
    # A later download of the same report: bob's message was delivered meanwhile; same row, new status.
    later = tmp_path / "later.csv"
    later.write_bytes(report.read_bytes().replace(b'"Pending"', b'"Delivered"'))
    third = run("ingest", str(later), "--archive", str(db), "--no-geoip")
    assert "new 0, updated 1, unchanged 2" in third.stderr
    assert [r[3] for r in _rows(db)] == ["Delivered", "Failed", "Delivered"]


def test_record_without_recipient_is_reported_counted_and_kept(tmp_path: Path):
    path = tmp_path / "no-recipient.ndjson"
    no_recipient = orjson.loads(GOOD)
    del no_recipient["RecipientAddress"]
    path.write_text(orjson.dumps(no_recipient).decode() + "\n" + GOOD.replace("bob@", "carl@") + "\n")
    db, kept = tmp_path / "a.db", tmp_path / "rejects.ndjson"
    result = run("ingest", str(path), "--archive", str(db), "--rejects", str(kept), "--no-geoip")
    assert result.exit_code == 1
    assert f"{path}:1: no RecipientAddress" in result.stderr
    assert "read 2, new 1, updated 0, unchanged 0, rejected 1" in result.stderr
    (reject,) = [orjson.loads(line) for line in kept.read_text().splitlines()]
    assert (reject["line"], reject["field"]) == (1, "RecipientAddress")
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT line, field FROM rejects").fetchall() == [(1, "RecipientAddress")]
    # Without an archive the document has nowhere it cannot go: it is written like any other.
    out = run("ingest", str(path), "--no-archive", "--out", "-", "--no-geoip")
    assert out.exit_code == 0 and len(out.stdout.splitlines()) == 2


def test_reingesting_elastic_test_log_changes_nothing(tmp_path: Path, shared_dir: Path):
    log = shared_dir / "peers" / "elastic" / "pipeline" / "test-log.log"
    db = tmp_path / "a.db"
    args = ("ingest", str(log), "--archive", str(db), "--local-domain", "contoso.com", "--no-geoip")
    first = run(*args)
    assert first.exit_code == 0 and "read 7, new 5, updated 2" in first.stderr
    before = _dump(db)
    for _ in range(2):
        again = run(*args)
        assert "read 7, new 0, updated 0, unchanged 7, rejected 0" in again.stderr
        assert _dump(db) == before


GRAPH_ROW = ('{"id":"03a3f843-0575-4704-2d97-08de6895c472","messageId":"<a@b.example>","status":"%s",'
             '"receivedDateTime":"2026-02-10T11:15:58.842Z","recipientAddress":"cdgg@contoso.com",'
             '"senderAddress":"x@fabrikam.com","subject":"s","size":1}')


def test_graph_file_with_one_row_twice_converges_and_repeats_as_unchanged(tmp_path: Path):
    db = tmp_path / "a.db"
    path = tmp_path / "graph.ndjson"
    path.write_text(GRAPH_ROW % "quarantined" + "\n" + GRAPH_ROW % "delivered" + "\n")
    first = run("ingest", str(path), "--archive", str(db), "--no-geoip")
    assert first.exit_code == 0
    before = _dump(db)
    for _ in range(2):
        assert "new 0, updated 0, unchanged 2" in run("ingest", str(path), "--archive", str(db), "--no-geoip").stderr
        assert _dump(db) == before
    # The same two rows in the other order give the same row.
    other, reversed_db = tmp_path / "reversed.ndjson", tmp_path / "b.db"
    other.write_text(GRAPH_ROW % "delivered" + "\n" + GRAPH_ROW % "quarantined" + "\n")
    os.utime(other, (path.stat().st_atime, path.stat().st_mtime))
    run("ingest", str(other), "--archive", str(reversed_db), "--no-geoip")
    assert _rows(reversed_db) == _rows(db)


def test_files_without_observation_time_are_ordered_by_modification_time(tmp_path: Path):
    quarantined, released = tmp_path / "monday.ndjson", tmp_path / "tuesday.ndjson"
    quarantined.write_text(GRAPH_ROW % "quarantined" + "\n")
    released.write_text(GRAPH_ROW % "delivered" + "\n")
    os.utime(quarantined, (1_700_000_000, 1_700_000_000))
    os.utime(released, (1_700_086_400, 1_700_086_400))
    db = tmp_path / "a.db"
    run("ingest", str(released), "--archive", str(db), "--no-geoip")
    late = run("ingest", str(quarantined), "--archive", str(db), "--no-geoip")  # the older export, read last
    assert "updated 0, unchanged 1" in late.stderr
    assert _rows(db)[0][3] == "Delivered"
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT observed_at FROM messages").fetchone()[0] == "2023-11-15T22:13:20.000Z"


def test_ingesting_the_current_folder_skips_its_own_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           caplog: pytest.LogCaptureFixture):
    work = tmp_path / "exports"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("EXOTRACE_ARCHIVE", raising=False)
    (work / "trace.ndjson").write_text(GOOD + "\n")
    config = tmp_path / "sinks.toml"  # with a sink, a spool folder appears beside the archive
    config.write_text(f'[[sink]]\ntype = "file"\nname = "copy"\npath = "{tmp_path / "out" / "docs.ndjson"}"\n')
    first = run("ingest", ".", "--no-geoip", "--config", str(config))
    assert first.exit_code == 0, first.stderr
    assert (work / "exotrace.db.spool").is_dir()
    for _ in range(2):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="exotrace.sources.file"):
            again = run("ingest", ".", "--no-geoip", "--config", str(config))
        assert again.exit_code == 0, again.stderr
        assert "read 1, new 0, updated 0, unchanged 1, rejected 0" in again.stderr
        notes = caplog.text
        assert "Skipping ./exotrace.db: an SQLite database" in notes
        assert "Skipping ./exotrace.db-wal" in notes  # the archive is open while the folder is read
        assert "Skipping ./exotrace.db.spool: the spool folder" in notes


def _exotrace(*args: str, env: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess:
    """Run the real command in a child process (for terminals and pipes, which CliRunner cannot fake)."""
    environ = {k: v for k, v in os.environ.items() if k not in ("TTY_COMPATIBLE", "FORCE_COLOR")}
    return subprocess.run([sys.executable, "-m", "exotrace", *args], env={**environ, **(env or {})},
                          capture_output=True, timeout=300, **kwargs)


def test_progress_bar_on_a_terminal(tmp_path: Path):
    path = tmp_path / "big.ndjson"
    line = GOOD.replace('"Subject":"=cmd()"', '"Subject":"' + "x" * 600 + '"')
    path.write_text("\n".join(line.replace("1111-1111-1111", f"{i:04d}-1111-1111") for i in range(2000)) + "\n")
    assert path.stat().st_size > 1 << 20
    args = ("ingest", str(path), "--no-archive", "--out", str(tmp_path / "o.ndjson"), "--no-geoip")
    plain = _exotrace(*args)
    assert plain.returncode == 0 and b"Ingesting" not in plain.stderr  # stderr is a pipe: no bar
    shown = _exotrace(*args, env={"TTY_COMPATIBLE": "1", "COLUMNS": "100"})  # rich: "this is a terminal"
    stderr = shown.stderr.decode()
    assert shown.returncode == 0, stderr
    assert "Ingesting" in stderr and "━" in stderr
    done = re.findall(r"(\d+\.\d)/(\d+\.\d) MB", stderr)
    assert done and done[-1][0] == done[-1][1]  # the bar ends full
    assert stderr.rstrip().endswith("Ingested: read 2000, written 2000, rejected 0")
    quiet = _exotrace(*args, "-q", env={"TTY_COMPATIBLE": "1"})
    assert quiet.returncode == 0 and quiet.stderr == b""


def test_format_help_lists_the_accepted_values():
    result = run("ingest", "--help")
    for name in ("auto", "ndjson", "json", "graph", "rws", "powershell", "csv", "eac-summary", "eac-enhanced",
                 "eac-extended"):
        assert name in result.output


def test_get_messagetracev2_export_csv_end_to_end(tmp_path: Path):
    db = tmp_path / "a.db"
    result = run("ingest", str(FILES / "export-csv-v2-ps7.csv"), "--archive", str(db), "--local-domain",
                 "contoso.com", "--no-geoip")
    assert result.exit_code == 0 and "read 3, new 3" in result.stderr
    found = orjson.loads(run("search", "--archive", str(db), "--format", "json", "--ip", "2a02:cf40::1").stdout)
    assert [(r["status"], r["direction"], r["received"]) for r in found] == [
        ("FilteredAsSpam", "inbound", "2025-11-20T02:59:41.000Z")]
    assert found[0]["trace_id"] == "7c1d2e3f-4a5b-4c6d-9e0f-08de2a0f1e2d"


def _legacy_row(status: str, trace_id: str = "11111111-1111-1111-1111-111111111111", subject: str = "hi",
                **extra: object) -> str:
    row = {"MessageId": f"<{subject}@x>", "Received": "2026-11-01T10:00:00Z", "SenderAddress": "ann@fabrikam.com",
           "RecipientAddress": "bob@contoso.com", "Subject": subject, "Status": status, "Size": 10,
           "MessageTraceId": trace_id, **extra}
    return orjson.dumps(row).decode()


def test_an_export_asked_up_to_tomorrow_is_observed_when_it_was_written(tmp_path: Path):
    """EndDate in the future of the file: the export knows only what was true when it was written, so a
    later collector read of the row keeps its newer status."""
    export = tmp_path / "export.ndjson"
    export.write_text(_legacy_row("Quarantined", StartDate="2026-11-01T00:00:00Z", EndDate="2026-11-03T00:00:00Z")
                      + "\n")
    written = 1_793_527_200  # 2026-11-01T10:00:00Z, two days before its EndDate
    os.utime(export, (written, written))
    collected = tmp_path / "collected.ndjson"  # the same row as the collector saw it at 13:00 that day
    collected.write_text(_legacy_row("Delivered") + "\n")
    os.utime(collected, (written + 3 * 3600, written + 3 * 3600))
    db = tmp_path / "a.db"
    run("ingest", str(collected), "--archive", str(db), "--no-geoip")
    late = run("ingest", str(export), "--archive", str(db), "--no-geoip")
    assert "updated 0, unchanged 1" in late.stderr
    assert _rows(db)[0][3] == "Delivered"


def test_a_blank_trace_id_is_no_trace_id(tmp_path: Path):
    """Two mails to one recipient with a blank MessageTraceId are two rows (derived keys), not one."""
    path = tmp_path / "blank.ndjson"
    path.write_text(_legacy_row("Delivered", trace_id=" ", subject="first") + "\n"
                    + _legacy_row("Delivered", trace_id=" ", subject="second") + "\n")
    db = tmp_path / "a.db"
    result = run("ingest", str(path), "--archive", str(db), "--no-geoip")
    assert "new 2" in result.stderr
    with sqlite3.connect(db) as con:
        keys = [k for (k,) in con.execute("SELECT key FROM messages ORDER BY key")]
    assert len(keys) == 2 and all(k.startswith("derived-") for k in keys)


def test_files_exotrace_creates_are_private_to_its_user(tmp_path: Path):
    """Archive (and its WAL), NDJSON, rejects and the spool hold mail metadata: no group or other access,
    whatever the caller's umask."""
    src = tmp_path / "in.ndjson"
    src.write_text(GOOD + "\n{broken\n")
    config = tmp_path / "sinks.toml"
    config.write_text(f'[[sink]]\ntype = "file"\nname = "copy"\npath = "{tmp_path / "out" / "docs.ndjson"}"\n')
    args = [sys.executable, "-m", "exotrace", "ingest", str(src), "--archive", str(tmp_path / "a.db"),
            "--out", str(tmp_path / "docs.ndjson"), "--rejects", str(tmp_path / "rejects.ndjson"),
            "--config", str(config), "--no-geoip", "-q"]
    done = subprocess.run(args, capture_output=True, text=True, preexec_fn=lambda: os.umask(0o022))
    assert done.returncode == 1, done.stderr  # one line rejected
    made = [p for p in tmp_path.rglob("*") if p != src and p != config]
    assert {p.name for p in made} >= {"a.db", "docs.ndjson", "rejects.ndjson", "a.db.spool", "out"}
    loose = {str(p.relative_to(tmp_path)): oct(p.stat().st_mode & 0o777) for p in made if p.stat().st_mode & 0o077}
    assert loose == {}


def test_a_bad_line_read_through_another_spelling_of_its_path_is_one_reject(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch):
    folder = tmp_path / "in1"
    folder.mkdir()
    (folder / "a.ndjson").write_text(GOOD + "\n{broken\n")
    db = tmp_path / "a.db"
    monkeypatch.chdir(tmp_path)
    for spelling in ("in1", "./in1/", str(folder / "a.ndjson"), "in1/../in1/a.ndjson"):
        assert run("ingest", spelling, "--archive", str(db), "--no-geoip").exit_code == 1
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT count(*) FROM rejects").fetchone()[0] == 1


def _two_lines(result) -> str:
    assert "Traceback" not in result.output + result.stderr
    return result.stderr


def test_outputs_that_would_overwrite_the_archive_or_each_other_are_usage_errors(tmp_path: Path):
    src = tmp_path / "in.ndjson"
    src.write_text(GOOD + "\n")
    db = tmp_path / "a.db"
    assert run("ingest", str(src), "--archive", str(db), "--no-geoip").exit_code == 0
    for args in (["--out", str(db)], ["--rejects", f"{db}-wal"],
                 ["--out", str(tmp_path / "x.nd"), "--rejects", str(tmp_path / "." / "x.nd")]):
        result = run("ingest", str(src), "--archive", str(db), "--no-geoip", *args)
        assert result.exit_code == 2 and "Error:" in _two_lines(result), args
    assert sqlite3.connect(db).execute("SELECT count(*) FROM messages").fetchone()[0] == 1
    for name in ("", ":memory:"):
        result = run("ingest", str(src), "--archive", name, "--no-geoip")
        assert result.exit_code == 2 and "is not a file name" in _two_lines(result)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full to simulate a full disk")
def test_a_full_disk_is_one_line_naming_the_file(tmp_path: Path):
    src = tmp_path / "in.ndjson"
    src.write_text(GOOD + "\n")
    result = run("ingest", str(src), "--no-archive", "--out", "/dev/full", "--no-geoip")
    assert result.exit_code == 2 and "Error: /dev/full: No space left on device" in _two_lines(result)


def test_json_nested_too_deeply_is_a_reject_and_the_next_file_is_read(tmp_path: Path):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    good = tmp_path / "good.ndjson"
    good.write_text(GOOD + "\n")
    result = run("ingest", str(deep), str(good), "--archive", str(tmp_path / "a.db"), "--no-geoip")
    assert result.exit_code == 1
    assert "deep.json:1: JSON nested too deeply" in _two_lines(result) and "new 1" in result.stderr


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_fifo_inside_a_folder_is_skipped_not_waited_on(tmp_path: Path):
    folder = tmp_path / "in"
    folder.mkdir()
    os.mkfifo(folder / "x.json")
    (folder / "good.ndjson").write_text(GOOD + "\n")
    done = subprocess.run([sys.executable, "-m", "exotrace", "ingest", str(folder), "--archive",
                           str(tmp_path / "a.db"), "--no-geoip"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "new 1" in done.stderr


def test_a_config_that_is_not_utf8_is_a_config_error(tmp_path: Path):
    config = tmp_path / "bad.toml"
    config.write_bytes(b"\xff\xfe[\x00")
    src = tmp_path / "in.ndjson"
    src.write_text(GOOD + "\n")
    result = run("ingest", str(src), "--config", str(config), "--archive", str(tmp_path / "a.db"), "--no-geoip")
    assert result.exit_code == 2 and "not UTF-8 text" in _two_lines(result)


def test_local_domains_are_taken_as_people_write_them(tmp_path: Path):
    src = tmp_path / "in.ndjson"
    src.write_text(GOOD + "\n")  # ann@fabrikam.com -> bob@contoso.com
    for spelling in ("@Contoso.com.", "contoso.com"):
        result = run("ingest", str(src), "--no-archive", "--out", "-", "--no-geoip", "--local-domain", spelling)
        assert orjson.loads(result.stdout)["email"]["direction"] == "inbound", spelling
    for bad in ("", "a b", "user@contoso.com", "*.contoso.com"):
        result = run("ingest", str(src), "--no-archive", "--out", "-", "--local-domain", bad)
        assert result.exit_code == 2 and "is not a domain name" in result.stderr


def test_a_relative_sink_path_is_read_against_the_config_files_folder(tmp_path: Path, monkeypatch):
    conf_dir = tmp_path / "etc"
    conf_dir.mkdir()
    config = conf_dir / "exotrace.toml"
    config.write_text('[[sink]]\ntype = "file"\npath = "out/docs.ndjson"\n', encoding="utf-8")
    elsewhere = tmp_path / "work"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = run("ingest", str(SAMPLE), "--archive", str(tmp_path / "a.db"), "--config", str(config), "--no-geoip")
    assert result.exit_code == 0, result.stderr
    assert (conf_dir / "out" / "docs.ndjson").stat().st_size > 0
    assert not (elsewhere / "out").exists()


def test_rows_committed_but_never_delivered_reach_the_sinks_on_the_next_run(tmp_path: Path):
    # A run that committed rows and stopped before its sinks acknowledged them (here: a run without
    # sinks) leaves the archive's sink cursor behind; the next run with sinks resubmits those rows once.
    db = tmp_path / "a.db"
    assert run("ingest", str(SAMPLE), "--archive", str(db), "--no-geoip").exit_code == 0
    out_dir = tmp_path / "ship"
    config = tmp_path / "exotrace.toml"
    config.write_text(f'[[sink]]\ntype = "file"\npath = "{out_dir / "docs.ndjson"}"\n', encoding="utf-8")
    count = sqlite3.connect(db).execute("select count(*) from messages").fetchone()[0]

    def shipped() -> list[str]:
        return [line for f in sorted(out_dir.glob("docs*.ndjson*")) for line in f.read_text().splitlines()]

    second = run("ingest", str(SAMPLE), "--archive", str(db), "--config", str(config), "--no-geoip")
    assert second.exit_code == 0, second.stderr
    assert "unchanged" in second.stderr and len(shipped()) == count
    third = run("ingest", str(SAMPLE), "--archive", str(db), "--config", str(config), "--no-geoip")
    assert third.exit_code == 0 and len(shipped()) == count  # acknowledged: not again


def test_sinks_get_the_rows_another_process_archived_between_this_runs_own(tmp_path: Path):
    """An ``ingest`` without sinks that writes to the same archive meanwhile: its rows fall between this
    run's, and the shared cursor must not pass them undelivered (it moved to the archive's last change, so
    those rows never reached the sinks, not even on the next run)."""
    from exotrace.archive import Archive
    from exotrace.archive.testing import make_document
    from exotrace.cli.ingest import _SinkDelivery
    from exotrace.collect.shipper import read_cursor
    from exotrace.sinks import SyncSinkPipeline, load_sinks

    out = tmp_path / "ship" / "docs.ndjson"
    pipeline = SyncSinkPipeline(load_sinks([{"type": "file", "name": "copy", "path": str(out)}], tmp_path),
                                state_dir=tmp_path / "a.db.spool")
    pipeline.start()

    def docs(prefix: str) -> list:
        return [make_document(f"{prefix}-0000-0000-0000-{i:012d}", f"u{i}@contoso.com") for i in range(5)]

    try:
        with Archive.open(tmp_path / "a.db") as mine, Archive.open(tmp_path / "a.db") as other:
            deliver = _SinkDelivery(pipeline, mine)
            first = mine.upsert(docs("aaaaaaaa"))
            deliver(first.changed, first.seqs)
            other.upsert(docs("bbbbbbbb"))  # the other process: no sinks
            last = mine.upsert(docs("cccccccc"))
            deliver(last.changed, last.seqs)
            other.upsert(docs("dddddddd"))  # after this run's last change: the next run's
            assert deliver.finish()
            assert read_cursor(mine) == last.seqs[1] == 15
    finally:
        pipeline.close()
    shipped = sorted(orjson.loads(line)["email"]["local_id"][:8] for f in out.parent.rglob("docs*.ndjson*")
                     for line in f.read_text().splitlines())
    assert shipped == ["aaaaaaaa"] * 5 + ["bbbbbbbb"] * 5 + ["cccccccc"] * 5


@pytest.mark.parametrize("later_first", [False, True])
def test_observed_at_orders_two_exports_of_the_same_window(tmp_path: Path, later_first: bool):
    """Two exports of one past window carry the same EndDate, so they tied and the digest chose (the later
    export's Failed could lose to the earlier Delivered). ``--observed-at`` says when an export was taken."""
    window = ',"StartDate":"2026-10-31T10:00:00Z","EndDate":"2026-11-02T10:00:00Z"}'
    early = tmp_path / "early.ndjson"
    early.write_text(GOOD[:-1] + window + "\n", encoding="utf-8")
    late = tmp_path / "late.ndjson"
    late.write_text(GOOD[:-1].replace('"Status":"Delivered"', '"Status":"Failed"') + window + "\n", encoding="utf-8")
    db = str(tmp_path / "a.db")
    runs = [["ingest", str(early), "--archive", db, "--no-geoip"],
            ["ingest", str(late), "--archive", db, "--no-geoip", "--observed-at", "2026-11-09T08:00:00Z"]]
    for args in reversed(runs) if later_first else runs:
        assert run(*args).exit_code == 0
    status = sqlite3.connect(db).execute("SELECT status, observed_at FROM messages").fetchall()
    assert status == [("Failed", "2026-11-09T08:00:00.000Z")]


def test_a_folder_without_files_is_said_so(tmp_path: Path):
    (tmp_path / "in").mkdir()
    result = run("ingest", str(tmp_path / "in"), "--archive", str(tmp_path / "a.db"), "--no-geoip")
    assert result.exit_code == 0 and "Warning: no record was read" in result.stderr


def test_observed_at_in_the_future_is_refused(tmp_path: Path):
    """A typo in the year would pin the rows' statuses for good: every later observation would be older."""
    path = tmp_path / "one.ndjson"
    path.write_text(GOOD + "\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["ingest", str(path), "--archive", str(tmp_path / "a.db"), "--no-geoip",
                                      "--observed-at", "2099-01-01"])
    assert result.exit_code == 2 and "in the future" in result.output
    assert not (tmp_path / "a.db").exists()
