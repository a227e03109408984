"""``exotrace ingest`` end to end: files in, archive and NDJSON out, rejects kept, exit codes."""

from __future__ import annotations

import sqlite3
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


def test_sinks_from_config_receive_every_document(tmp_path: Path):
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
