"""Rejected input records are kept with origin, line, reason, field and raw text."""

from __future__ import annotations

from exotrace.archive import Archive
from exotrace.model import Reject


def test_rejects_are_stored_and_deduplicated(arch: Archive) -> None:
    rejects = [
        Reject("export.csv", 12, "bad date", raw="a,b,c", field="Received"),
        Reject("export.csv", 13, "not JSON", raw="{oops"),
    ]
    assert arch.add_rejects(rejects, source="ingest") == 2
    assert arch.add_rejects(rejects, source="ingest") == 0
    assert arch.add_rejects([]) == 0
    assert arch.reject_count() == 2
    newest, oldest = arch.rejects()
    assert (oldest["origin"], oldest["line"], oldest["reason"], oldest["field"], oldest["raw"]) == (
        "export.csv", 12, "bad date", "Received", "a,b,c"
    )
    assert newest["field"] is None and newest["source"] == "ingest"
    assert arch.stats()["rejects"] == 2


def test_same_reason_on_another_line_is_another_reject(arch: Archive) -> None:
    arch.add_rejects([Reject("f.json", 1, "not JSON", raw="x"), Reject("f.json", 2, "not JSON", raw="x")])
    assert arch.reject_count() == 2
