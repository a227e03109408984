"""Usage and environment errors: one ``Error: ...`` line, exit code 2, no traceback; closed pipes end quietly.

The machine may run the tests as root, which may write anywhere, so "cannot create" paths are made with a
regular file where a folder should be.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from exotrace.cli import cli

LINE = ('{"MessageId":"<m@x>","Received":"2024-05-01T10:00:00Z","SenderAddress":"a@fabrikam.com",'
        '"RecipientAddress":"b@contoso.com","Status":"Delivered","Size":10,"MessageTraceId":"t-%d"}')


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture
def trace(tmp_path: Path) -> Path:
    path = tmp_path / "trace.ndjson"
    path.write_text(LINE % 1 + "\n", encoding="utf-8")
    return path


@pytest.fixture
def a_file(tmp_path: Path) -> Path:
    """A regular file, to stand where a folder would have to be."""
    path = tmp_path / "plain-file"
    path.write_text("x")
    return path


def assert_usage_error(result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0]


def test_out_pointing_at_a_folder(tmp_path: Path, trace: Path):
    result = run("ingest", str(trace), "--no-archive", "--out", str(tmp_path), "--no-geoip")
    assert_usage_error(result, "--out", str(tmp_path), "is a directory")


def test_out_that_cannot_be_created(trace: Path, a_file: Path):
    result = run("ingest", str(trace), "--no-archive", "--out", str(a_file / "sub" / "docs.ndjson"), "--no-geoip")
    assert_usage_error(result, "--out", "not a folder")


def test_rejects_that_cannot_be_created_fails_before_the_archive_is_made(tmp_path: Path, trace: Path,
                                                                         a_file: Path):
    db = tmp_path / "a.db"
    result = run("ingest", str(trace), "--archive", str(db), "--rejects", str(a_file / "r.ndjson"), "--no-geoip")
    assert_usage_error(result, "--rejects", "not a folder")
    assert not db.exists()


def test_rejects_in_a_missing_folder_is_created_like_out_and_archive(tmp_path: Path, trace: Path):
    rejects = tmp_path / "new" / "folder" / "rejects.ndjson"
    bad = tmp_path / "bad.ndjson"
    bad.write_text("{oops\n" + LINE % 2 + "\n")
    result = run("ingest", str(bad), "--archive", str(tmp_path / "a.db"), "--rejects", str(rejects), "--no-geoip")
    assert result.exit_code == 1
    assert rejects.read_text().count("\n") == 1


def test_archive_in_a_folder_that_cannot_be_created(trace: Path, a_file: Path):
    result = run("ingest", str(trace), "--archive", str(a_file / "sub" / "a.db"), "--no-geoip")
    assert_usage_error(result, "cannot create archive", "not a folder")


def test_archive_that_is_not_a_database(tmp_path: Path, trace: Path):
    db = tmp_path / "notes.db"
    db.write_text("these are my notes, not a database\n" * 100)
    result = run("ingest", str(trace), "--archive", str(db), "--no-geoip")
    assert_usage_error(result, str(db))
    assert db.read_text().startswith("these are my notes")


def test_corrupt_geoip_database_names_the_file(tmp_path: Path, trace: Path, geoip_dir: Path):
    folder = tmp_path / "geoip"
    folder.mkdir()
    (folder / "GeoLite2-City.mmdb").write_bytes(b"not a maxmind database" * 100)
    (folder / "GeoLite2-ASN.mmdb").write_bytes((geoip_dir / "GeoLite2-ASN-Test.mmdb").read_bytes())
    result = run("ingest", str(trace), "--no-archive", "--out", "-", "--geoip-dir", str(folder))
    assert_usage_error(result, str(folder / "GeoLite2-City.mmdb"), "--no-geoip")
    assert result.stdout == ""


@pytest.mark.parametrize("since", ["99999999d", "9999999999w", "0001-01-01T00:00:00+01:00"])
@pytest.mark.parametrize("command", ["search", "stats"])
def test_times_out_of_range(tmp_path: Path, trace: Path, command: str, since: str):
    db = tmp_path / "a.db"
    assert run("ingest", str(trace), "--archive", str(db), "--no-geoip").exit_code == 0
    result = run(command, "--archive", str(db), "--since", since)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "out of range" in result.stderr or "before the year 1" in result.stderr


def test_extreme_but_valid_times_work(tmp_path: Path, trace: Path):
    db = tmp_path / "a.db"
    run("ingest", str(trace), "--archive", str(db), "--no-geoip")
    result = run("search", "--archive", str(db), "--since", "0001-01-01", "--until", "9999-12-31", "--format", "csv")
    assert result.exit_code == 0 and result.stdout.count("\n") == 2


def test_unknown_format_lists_the_accepted_ones(trace: Path):
    result = run("ingest", str(trace), "--format", "[/]", "--no-archive", "--out", "-")
    assert_usage_error(result, "'[/]'", "eac-summary")


# -- closed pipes ------------------------------------------------------------------------------------------------


def _big_input(tmp_path: Path, rows: int = 3000) -> Path:
    path = tmp_path / "big.ndjson"
    path.write_text("".join(LINE % i + "\n" for i in range(rows)), encoding="utf-8")
    return path


def _first_line_then_close(args: list[str]) -> tuple[int, bytes, bytes]:
    """Run exotrace with stdout into a pipe; read one line, close the pipe (like `| head -1`)."""
    env = {k: v for k, v in os.environ.items() if k not in ("TTY_COMPATIBLE", "FORCE_COLOR")}
    proc = subprocess.Popen([sys.executable, "-m", "exotrace", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()
    stderr = proc.stderr.read()
    return proc.wait(timeout=300), first, stderr


def test_broken_pipe_on_out_stdout_is_quiet_and_the_archive_gets_everything(tmp_path: Path):
    # 3000 documents are far more than a pipe holds, so exotrace is still writing when the reader leaves.
    db = tmp_path / "a.db"
    code, first, stderr = _first_line_then_close(
        ["ingest", str(_big_input(tmp_path)), "--archive", str(db), "--out", "-", "--no-geoip"])
    assert code == 0, stderr
    assert first.startswith(b'{"@timestamp"')
    assert b"Traceback" not in stderr and b"Exception ignored" not in stderr and b"Error" not in stderr
    assert b"The reader of --out went away" in stderr
    assert sqlite3.connect(db).execute("SELECT count(*) FROM messages").fetchone()[0] == 3000


def test_broken_pipe_without_archive_stops_quietly(tmp_path: Path):
    code, first, stderr = _first_line_then_close(
        ["ingest", str(_big_input(tmp_path)), "--no-archive", "--out", "-", "--no-geoip"])
    assert code == 0, stderr
    assert first and b"Traceback" not in stderr and b"Exception ignored" not in stderr


def test_broken_pipe_on_search_output_is_quiet(tmp_path: Path):
    db = tmp_path / "a.db"
    assert run("ingest", str(_big_input(tmp_path)), "--archive", str(db), "--no-geoip").exit_code == 0
    code, first, stderr = _first_line_then_close(["search", "--archive", str(db), "--limit", "0",
                                                  "--format", "ndjson"])
    assert code == 0, stderr
    assert first.startswith(b"{") and stderr == b""


def test_out_or_rejects_among_the_inputs_is_refused_before_anything_is_written(tmp_path: Path, trace: Path):
    before = trace.read_bytes()
    same = run("ingest", str(trace), "--no-archive", "--out", str(trace), "--no-geoip")
    assert_usage_error(same, "--out", "is the input")
    assert trace.read_bytes() == before
    inside = run("ingest", str(tmp_path), "--no-archive", "--out", str(tmp_path / "sub" / ".." / "docs.ndjson"))
    assert_usage_error(inside, "--out", "inside the input folder")
    rejects = run("ingest", str(trace), "--archive", str(tmp_path / "a.db"), "--rejects", str(trace))
    assert_usage_error(rejects, "--rejects", "is the input")
    assert trace.read_bytes() == before and not (tmp_path / "a.db").exists()


@pytest.mark.parametrize("command", ["search", "stats"])
def test_until_before_since_is_a_usage_error(tmp_path: Path, trace: Path, command: str):
    db = tmp_path / "a.db"
    run("ingest", str(trace), "--archive", str(db), "--no-geoip")
    result = run(command, "--archive", str(db), "--since", "2024-05-02", "--until", "2024-04-01")
    assert result.exit_code == 2 and "is not after --since" in result.stderr
