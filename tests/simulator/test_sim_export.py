"""PowerShell-style exports of the simulated tenant, read back by exotrace's own file reader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sim_helpers import START, window

from exotrace.model import RawRecord, row_key
from exotrace.simulator import SimulatorConfig, start_simulator
from exotrace.sources.file import read_file


@pytest.mark.parametrize(("style", "array", "bom"), [
    ("elastic", False, False), ("ps51", False, True), ("ps7", False, False), ("ps51", True, True),
    ("ps7", True, False),
])
def test_export_round_trips_through_the_file_reader(tmp_path: Path, style: str, array: bool, bom: bool) -> None:
    with start_simulator(SimulatorConfig(seed=4, start=START, history_days=3, tls=False)) as sim:
        tid = sim.tenants[0].tenant_id
        start, end = window(sim, 1, 6)
        path = tmp_path / f"export-{style}.json"
        n = sim.export_powershell(tid, path, start, end, style=style, array=array, bom=bom)
        truth = sim.ground_truth(tid, api="rws", start=start, end=end)
    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf") == bom
    text = raw.decode("utf-8-sig")
    if style == "ps51":
        assert '"\\/Date(' in text
    if style in ("elastic", "ps51"):
        assert "\\u003c" in text and "<" not in text
    else:
        assert "<" in text
    if not array:
        first = json.loads(text.splitlines()[0])
        assert list(first)[:3] == ["Organization", "MessageId", "Received"] and first["Index"] == 0
    items = list(read_file(path))
    records = [i for i in items if isinstance(i, RawRecord)]
    assert len(records) == len(items) == n == len(truth) > 50
    assert {row_key(r.fields["MessageTraceId"], r.fields["RecipientAddress"]) for r in records} == set(truth)


def test_unknown_style_is_refused(tmp_path: Path) -> None:
    with start_simulator(SimulatorConfig(start=START, history_days=1, tls=False)) as sim:
        with pytest.raises(ValueError, match="unknown export style"):
            sim.export_powershell(sim.tenants[0].tenant_id, tmp_path / "x", START, START, style="csv")
