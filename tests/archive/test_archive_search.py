"""Search filters, one by one, and their combinations; newest first; limits."""

from __future__ import annotations

import pytest

from exotrace.archive import Archive, SearchQuery
from exotrace.archive.testing import make_document as doc


@pytest.fixture
def filled(arch: Archive) -> Archive:
    arch.upsert([
        doc("t1", "linus@contoso.com", sender="alice@example.com", received="2024-05-01T10:00:00.000Z",
            subject="Invoice May", message_id="<a1@example.com>", from_ip="81.2.69.144", direction="inbound",
            tenant="Contoso"),
        doc("t2", "bob@mail.contoso.com", sender="news@lists.example.com", received="2024-05-02T10:00:00.000Z",
            subject="Weekly digest", message_id="<a2@example.com>", from_ip="2A02:CF43:EAE5::B62B",
            status="filteredAsSpam", direction="inbound", tenant="Contoso"),
        doc("t3", "carol@notcontoso.com", sender="linus@contoso.com", received="2024-05-03T10:00:00.000Z",
            subject="Re: Ünïcode Straße", message_id="<a3@contoso.com>", from_ip="10.0.0.1",
            to_ip="216.160.83.56", status="Failed", direction="outbound", tenant="Fabrikam"),
        doc("t4", "linus@contoso.com", sender=None, received="2024-05-04T10:00:00.000Z", subject=None,
            message_id="<ndr@contoso.com>", from_ip=None, status="GettingStatus", direction="external"),
        doc("t4", "dave@contoso.com", sender=None, received="2024-05-04T10:00:00.000Z", subject="100% off_",
            message_id="<ndr@contoso.com>", from_ip=None, status="Delivered", direction="internal"),
    ])
    return arch


def ids(arch: Archive, **kwargs) -> list[str]:
    return [f"{r['trace_id']}:{r['recipient']}" for r in arch.search(SearchQuery(**kwargs))]


def test_all_newest_first(filled: Archive) -> None:
    assert ids(filled) == ["t4:dave@contoso.com", "t4:linus@contoso.com", "t3:carol@notcontoso.com",
                           "t2:bob@mail.contoso.com", "t1:linus@contoso.com"]
    assert len(ids(filled, limit=2)) == 2
    assert len(ids(filled, limit=None)) == 5


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("linus@contoso.com", {"t1", "t4"}),
        ("LINUS@Contoso.COM", {"t1", "t4"}),
        ("*@contoso.com", {"t1", "t4"}),
        ("@contoso.com", {"t1", "t4"}),
        ("contoso.com", {"t1", "t2", "t4"}),
        ("*.contoso.com", {"t2"}),
        ("notcontoso.com", {"t3"}),
        ("l*@contoso.com", {"t1", "t4"}),
        ("*o*@*contoso.com", {"t2", "t3"}),
        ("nobody.example", set()),
    ],
)
def test_recipient_patterns(filled: Archive, pattern: str, expected: set[str]) -> None:
    rows = filled.search(SearchQuery(recipient=pattern))
    assert {r["trace_id"] for r in rows if r["recipient"] != "dave@contoso.com"} == expected


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("alice@example.com", ["t1"]),
        ("*@example.com", ["t1"]),
        ("example.com", ["t2", "t1"]),
        ("*.example.com", ["t2"]),
        ("<>", ["t4", "t4"]),
        ("contoso.com", ["t3"]),
    ],
)
def test_sender_patterns(filled: Archive, pattern: str, expected: list[str]) -> None:
    assert [r["trace_id"] for r in filled.search(SearchQuery(sender=pattern))] == expected


def test_domain_suffix_with_limit_merges_domains_newest_first(arch: Archive) -> None:
    docs = []
    for i in range(30):
        domain = ["contoso.com", "a.contoso.com", "b.a.contoso.com"][i % 3]
        docs.append(doc(f"t{i:02d}", f"u@{domain}", received=f"2024-05-01T10:00:{i:02d}.000Z"))
    docs.append(doc("other", "u@notcontoso.com", received="2024-05-01T11:00:00.000Z"))
    arch.upsert(docs)
    rows = arch.search(SearchQuery(recipient="contoso.com", limit=7))
    assert [r["trace_id"] for r in rows] == [f"t{i:02d}" for i in range(29, 22, -1)]
    rows = arch.search(SearchQuery(recipient="contoso.com", limit=7, status="Failed"))
    assert rows == []


def test_status_any_spelling_and_several(filled: Archive) -> None:
    assert ids(filled, status="filteredasspam") == ["t2:bob@mail.contoso.com"]
    assert ids(filled, status="FilteredAsSpam") == ["t2:bob@mail.contoso.com"]
    assert {r.split(":")[0] for r in ids(filled, status=("failed", "gettingStatus"))} == {"t3", "t4"}
    assert len(ids(filled, status="delivered,failed")) == 3


def test_time_range(filled: Archive) -> None:
    assert [i[:2] for i in ids(filled, since="2024-05-02", until="2024-05-02")] == ["t2"]
    assert [i[:2] for i in ids(filled, since="2024-05-03T10:00:00Z")] == ["t4", "t4", "t3"]
    assert [i[:2] for i in ids(filled, until="2024-05-01")] == ["t1"]  # a bare date includes that day
    assert ids(filled, since="1h") == []


def test_message_id_with_or_without_brackets(filled: Archive) -> None:
    assert ids(filled, message_id="<a2@example.com>") == ["t2:bob@mail.contoso.com"]
    assert ids(filled, message_id="a2@example.com") == ["t2:bob@mail.contoso.com"]
    assert len(ids(filled, message_id="ndr@contoso.com")) == 2


def test_trace_id(filled: Archive) -> None:
    assert ids(filled, trace_id="T4") == ["t4:dave@contoso.com", "t4:linus@contoso.com"]
    assert ids(filled, trace_id="t") == []


def test_subject_substring(filled: Archive) -> None:
    assert ids(filled, subject="invoice") == ["t1:linus@contoso.com"]
    assert ids(filled, subject="straße") == ["t3:carol@notcontoso.com"]
    assert ids(filled, subject="ÜNÏCODE") == ["t3:carol@notcontoso.com"]
    assert ids(filled, subject="100%") == ["t4:dave@contoso.com"]
    assert ids(filled, subject="0% off_") == ["t4:dave@contoso.com"]
    assert ids(filled, subject="_") == ["t4:dave@contoso.com"]


def test_ip_matches_from_or_to_in_any_spelling(filled: Archive) -> None:
    assert ids(filled, ip="81.2.69.144") == ["t1:linus@contoso.com"]
    assert ids(filled, ip="216.160.83.56") == ["t3:carol@notcontoso.com"]
    assert ids(filled, ip="2a02:cf43:eae5:0:0:0:0:b62b") == ["t2:bob@mail.contoso.com"]
    with pytest.raises(ValueError, match="not an IP"):
        filled.search(SearchQuery(ip="999.1.1.1"))


def test_direction_and_tenant(filled: Archive) -> None:
    assert ids(filled, direction="Outbound") == ["t3:carol@notcontoso.com"]
    assert [i[:2] for i in ids(filled, tenant="contoso")] == ["t2", "t1"]
    with pytest.raises(ValueError, match="unknown direction"):
        filled.search(SearchQuery(direction="sideways"))


def test_filters_combine(filled: Archive) -> None:
    assert ids(filled, recipient="contoso.com", status="delivered", since="2024-05-01") == [
        "t4:dave@contoso.com", "t1:linus@contoso.com"
    ]
    assert ids(filled, recipient="contoso.com", sender="example.com", status="filteredAsSpam") == [
        "t2:bob@mail.contoso.com"
    ]


def test_rows_carry_columns_and_document(filled: Archive) -> None:
    [row] = filled.search(SearchQuery(trace_id="t1"))
    assert row["status"] == "Delivered"
    assert row["sender"] == "alice@example.com"
    assert row["subject"] == "Invoice May"
    assert row["first_seen"] and row["updated_at"] and row["fingerprint"]
    assert row["doc"]["email"]["local_id"] == "t1"


def test_address_search_walks_days_newest_first_across_the_limit(arch: Archive) -> None:
    docs = [doc(f"d{day:02d}-{n}", "linus@contoso.com", received=f"2024-05-{day:02d}T{n:02d}:00:00.000Z")
            for day in range(1, 11) for n in range(3)]
    docs.append(doc("nodate", "linus@contoso.com", received=""))
    docs.append(doc("other", "zed@contoso.com", received="2024-05-10T23:00:00.000Z"))
    arch.upsert(docs)
    rows = arch.search(SearchQuery(recipient="linus@contoso.com", limit=7))
    assert [r["trace_id"] for r in rows] == ["d10-2", "d10-1", "d10-0", "d09-2", "d09-1", "d09-0", "d08-2"]
    rows = arch.search(SearchQuery(recipient="contoso.com", since="2024-05-03T01:00Z", until="2024-05-04", limit=0))
    assert [r["trace_id"] for r in rows] == ["d04-2", "d04-1", "d04-0", "d03-2", "d03-1"]
    everything = arch.search(SearchQuery(recipient="linus@contoso.com", limit=None))
    assert len(everything) == 31 and everything[-1]["trace_id"] == "nodate"
    assert ids(arch, sender="alice@example.com", limit=2) == ["other:zed@contoso.com", "d10-2:linus@contoso.com"]


def test_days_present(arch: Archive) -> None:
    from exotrace.archive.query import days_present

    arch.upsert([doc(f"t{d}", received=f"2024-05-0{d}T10:00:00.000Z") for d in (1, 3, 5)])
    assert list(days_present(arch.conn)) == [19848, 19846, 19844]
    assert list(days_present(arch.conn, 19845, 19847)) == [19846]
    plan = " ".join(r[3] for r in arch.conn.execute("EXPLAIN QUERY PLAN SELECT max(day) FROM messages WHERE day < 1"))
    assert "INDEX" in plan
