"""Archive statistics."""

from __future__ import annotations

from exotrace.archive import Archive
from exotrace.archive.testing import make_document as doc
from exotrace.model import Reject


def test_stats_counts(arch: Archive) -> None:
    arch.upsert([
        doc("t1", "a@contoso.com", sender="x@example.com", received="2024-05-01T10:00:00.000Z"),
        doc("t2", "b@contoso.com", sender="x@example.com", received="2024-05-01T11:00:00.000Z", status="Failed"),
        doc("t3", "c@fabrikam.com", sender="y@example.com", received="2024-05-02T10:00:00.000Z",
            direction="outbound"),
        doc("t4", "d@contoso.com", sender=None, received="2024-05-03T10:00:00.000Z", direction=None),
    ])
    arch.add_rejects([Reject("f.json", 2, "not JSON")])
    s = arch.stats()
    assert s["total"] == 4
    assert s["by_status"] == {"Delivered": 3, "Failed": 1}
    assert s["by_direction"] == {"inbound": 2, "outbound": 1, "unknown": 1}
    assert s["by_day"] == {"2024-05-01": 2, "2024-05-02": 1, "2024-05-03": 1}
    assert s["top_senders"][0] == {"sender": "x@example.com", "count": 2}
    assert {"sender": "<>", "count": 1} in s["top_senders"]
    assert s["top_recipient_domains"] == [{"domain": "contoso.com", "count": 3}, {"domain": "fabrikam.com", "count": 1}]
    assert s["rejects"] == 1
    assert (s["first_received"], s["last_received"]) == ("2024-05-01T10:00:00.000Z", "2024-05-03T10:00:00.000Z")


def test_stats_time_window_and_top(arch: Archive) -> None:
    arch.upsert([doc(f"t{i}", f"u{i}@d{i}.com", received=f"2024-05-0{i}T10:00:00.000Z") for i in range(1, 6)])
    s = arch.stats(since="2024-05-02", until="2024-05-03", top=1)
    assert s["total"] == 2
    assert s["since"] == "2024-05-02T00:00:00.000Z" and s["until"] == "2024-05-04T00:00:00.000Z"
    assert len(s["top_recipient_domains"]) == 1


def test_stats_of_empty_archive(arch: Archive) -> None:
    s = arch.stats()
    assert s["total"] == 0 and s["by_status"] == {} and s["first_received"] is None
