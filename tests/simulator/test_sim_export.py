"""PowerShell-style exports of the simulated tenant, read back by exotrace's own file reader: every date
form msapi.md 4.4 lists gives back the ground truth rows."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sim_helpers import START, window

from exotrace.model import RawRecord, row_key
from exotrace.normalize.dates import parse_timestamp
from exotrace.simulator import SimTenant, SimulatorConfig, start_simulator
from exotrace.simulator.data import to_us
from exotrace.simulator.export import STYLES
from exotrace.simulator.server import Simulator
from exotrace.sources.file import read_paths

_PLAIN = ("Organization", "MessageId", "SenderAddress", "RecipientAddress", "Subject", "Status", "ToIP", "FromIP",
          "Size", "MessageTraceId")


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    # rws_role=False: exports come from the cmdlets, which do not care about RWS access
    tenants = [SimTenant.default("contoso", rws_role=False)]
    with start_simulator(SimulatorConfig(seed=4, start=START, history_days=12, tls=False, tenants=tenants)) as s:
        yield s


def _read_back(path: Path) -> dict[str, dict[str, Any]]:
    items = list(read_paths(path))
    records = [i for i in items if isinstance(i, RawRecord)]
    assert len(records) == len(items), [i for i in items if not isinstance(i, RawRecord)][:3]
    out = {row_key(r.fields["MessageTraceId"], r.fields["RecipientAddress"]): r.fields for r in records}
    assert len(out) == len(records)
    return out


def _same_rows(got: dict[str, dict[str, Any]], truth: dict[str, dict[str, Any]], millis: bool) -> None:
    assert set(got) == set(truth) and len(truth) > 50
    for key, want in truth.items():
        row = got[key]
        assert {k: row[k] for k in _PLAIN} == {k: want[k] for k in _PLAIN}, key
        received = to_us(parse_timestamp(row["Received"]))
        expected = to_us(parse_timestamp(want["Received"]))
        assert received == (expected // 1000 * 1000 if millis else expected), key


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize(("array", "bom", "encoding"), [(False, False, "utf-8"), (True, True, "utf-8"),
                                                        (False, False, "utf-16")])
def test_every_style_round_trips_through_the_file_reader(sim: Simulator, tmp_path: Path, style: str, array: bool,
                                                         bom: bool, encoding: str) -> None:
    tid = sim.tenants[0].tenant_id
    start, end = window(sim, 11, 6)  # older than RWS's 10 days: the cmdlets serve 90
    at = sim.clock.now()
    path = tmp_path / f"export-{style}.json"
    n = sim.export_powershell(tid, path, start, end, style=style, array=array, bom=bom, encoding=encoding,
                              utc_offset=-300, at=at)
    raw = path.read_bytes()
    if encoding == "utf-16":
        assert raw.startswith(b"\xff\xfe")
        text = raw.decode("utf-16")
    else:
        assert raw.startswith(b"\xef\xbb\xbf") == bom
        text = raw.decode("utf-8-sig")
    first = json.loads(text)[0] if array else json.loads(text.splitlines()[0])
    assert list(first)[:3] == ["Organization", "MessageId", "Received"] and first["Index"] == 0
    received = first["Received"]
    expect = {"elastic": r"\d{4}-\d\d-\d\dT[\d:]{8}(\.\d{1,6})?Z", "ps7": r".*T[\d:]{8}\.\d{7}Z",
              "ps7-local": r".*T[\d:]{8}\.\d{7}-05:00", "ps7-unspecified": r".*T[\d:]{8}\.\d{7}",
              "ps51": r"/Date\(\d+\)/", "ps51-offset": r"/Date\(\d+-0500\)/"}
    if style == "ps51-wrapped":
        assert set(received) == {"value", "DisplayHint", "DateTime"} and received["DisplayHint"] == 2
        assert re.fullmatch(r"/Date\(\d+\)/", received["value"])
        assert re.fullmatch(r"\w+day, \w+ \d{1,2}, \d{4} \d{1,2}:\d\d:\d\d [AP]M", received["DateTime"])
    else:
        assert re.fullmatch(expect[style], received), received
    if style.startswith("ps51"):
        assert '"\\/Date(' in text
    if style == "elastic" or style.startswith("ps51"):
        assert "\\u003c" in text and "<" not in text
    else:
        assert "<" in text
    truth = dict(sim._iter_rows(tid, at, "rws", True, start, end))
    assert n == len(truth)
    _same_rows(_read_back(path), truth, millis=style.startswith("ps51"))


def test_v2_fields_and_remoting_properties(sim: Simulator, tmp_path: Path) -> None:
    tid = sim.tenants[0].tenant_id
    start, end = window(sim, 2, 24)
    at = sim.clock.now()
    path = tmp_path / "v2.json"
    sim.export_powershell(tid, path, start, end, style="ps7", fields="v2", remoting=True, at=at)
    first = json.loads(path.read_text().splitlines()[0])
    assert list(first) == ["Organization", "MessageId", "Received", "SenderAddress", "RecipientAddress", "Subject",
                           "Status", "ToIP", "FromIP", "Size", "MessageTraceId", "PSComputerName", "RunspaceId",
                           "PSShowComputerName"]
    got = _read_back(path)
    statuses = {r["Status"] for r in got.values()}
    assert "None" not in statuses  # Get-MessageTraceV2 removed None
    graph = dict(sim._iter_rows(tid, at, "graph", True, start, end))
    # the cmdlet names what Graph's enum cannot (a redirected recipient: Resolved); the rest is Graph's
    assert "Resolved" in statuses and "unknownFutureValue" not in statuses
    assert {k for k, r in got.items() if r["Status"] != graph[k]["Status"]} == \
        {k for k, r in graph.items() if r["Status"] == "unknownFutureValue"}


def test_unknown_style_is_refused(sim: Simulator, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown export style"):
        sim.export_powershell(sim.tenants[0].tenant_id, tmp_path / "x", START, START, style="csv")
    with pytest.raises(ValueError, match="unknown encoding"):
        sim.export_powershell(sim.tenants[0].tenant_id, tmp_path / "x", START, START, encoding="latin-1")


def test_export_command_writes_what_the_simulator_serves(tmp_path: Path) -> None:
    from exotrace.cli.simulate import simulate

    path = tmp_path / "trace.json"
    result = CliRunner().invoke(simulate, ["export", str(path), "--seed", "5", "--start", "2026-05-01T12:00:00Z",
                                           "--since", "30h", "--until", "6h", "--style", "ps51-offset", "--bom",
                                           "--rows-per-day", "800", "--history-days", "5"])
    assert result.exit_code == 0, result.output
    assert "Wrote" in result.output and "2026-04-30T06:00:00Z to 2026-05-01T06:00:00Z" in result.output
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    cfg = SimulatorConfig(seed=5, start=START, rows_per_day=800, history_days=5, tls=False)
    with start_simulator(cfg) as s:
        from datetime import timedelta

        truth = s.ground_truth(s.tenants[0].tenant_id, at=START, api="rws", start=START - timedelta(hours=30),
                               end=START - timedelta(hours=6))
    _same_rows(_read_back(path), truth, millis=True)
    bad = CliRunner().invoke(simulate, ["export", str(path), "--since", "1d", "--until", "2d"])
    assert bad.exit_code == 2 and "--until is before --since" in bad.output
    other = CliRunner().invoke(simulate, ["export", str(path), "--tenant", "nope"])
    assert other.exit_code == 2 and "no tenant 'nope'" in other.output
