"""The sinks as the commands use them: `ingest --config` feeds them, `status` shows their metrics."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

SAMPLE = Path(__file__).resolve().parents[2] / "exotrace" / "data" / "sample-messagetrace.ndjson"


def _exotrace(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "exotrace", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=45)  # ingest must not wait out its 60 s flush for a best-effort sink


def test_ingest_feeds_the_sinks_and_status_shows_their_metrics(tmp_path: Path) -> None:
    """A down best-effort sink keeps its documents spooled without holding `ingest` up."""
    config = tmp_path / "exotrace.toml"
    config.write_text(
        '[archive]\npath = "a.db"\n\n'
        '[[sink]]\ntype = "file"\npath = "out/docs.ndjson"\n\n'
        '[[sink]]\ntype = "http"\nname = "optional"\nurl = "http://127.0.0.1:9/in"\nrequired = false\n'
        "retry_initial = 0.01\nretry_max = 0.05\n",
        encoding="utf-8")
    res = _exotrace("ingest", str(SAMPLE), "--archive", "a.db", "--config", str(config), "--no-geoip", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    shipped = (tmp_path / "out" / "docs.ndjson").read_text().splitlines()
    rows = len(shipped)
    assert rows > 10 and f"new {rows}" in res.stderr
    assert len({orjson.loads(x)["email"]["local_id"] + orjson.loads(x)["email"]["to"]["address"][0]
                for x in shipped}) == rows

    st = _exotrace("status", "--config", str(config), "--json", cwd=tmp_path)
    assert st.returncode == 0, st.stderr[-2000:]
    sinks = orjson.loads(st.stdout)["sinks"]
    assert set(sinks) == {"file", "optional"}
    assert sinks["file"]["sent"] == rows and sinks["file"]["pending"] == 0
    opt = sinks["optional"]
    assert opt["sent"] == 0 and opt["spooled"] == rows and opt["pending"] == rows
    assert opt["failed"] >= rows and opt["retried"] >= rows and opt["dead_lettered"] == 0

    text = _exotrace("status", "--config", str(config), cwd=tmp_path)
    assert text.returncode == 0
    flat = " ".join(text.stderr.split())
    assert f"sink file: sent={rows} failed=0 retried=0 spooled=0 dead_lettered=0" in flat
    assert "sink optional: sent=0" in flat and f"spooled={rows}" in flat
