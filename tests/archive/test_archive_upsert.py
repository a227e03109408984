"""Upsert semantics: new, unchanged, updated, stale statuses, history, errors, changes_since."""

from __future__ import annotations

import sqlite3

from exotrace.archive import Archive, SearchQuery
from exotrace.archive.testing import make_document as doc
from exotrace.archive.testing import make_error_document
from exotrace.model import row_key

KEY = row_key("00000000-0000-0000-0000-000000000001", "linus@contoso.com")


def test_new_rows_get_first_seen_history(arch: Archive) -> None:
    res = arch.upsert([doc(status="GettingStatus"), doc("t2", "b@contoso.com")], source="test")
    assert (res.new, res.updated, res.unchanged, res.errors) == (2, 0, 0, 0)
    assert [d.key for d in res.changed] == [KEY, row_key("t2", "b@contoso.com")]
    assert arch.count() == 2
    history = arch.history(KEY)
    assert len(history) == 1
    assert history[0]["event"] == "first_seen"
    assert history[0]["old_status"] is None
    assert history[0]["new_status"] == "GettingStatus"
    assert history[0]["source"] == "test"


def test_same_input_twice_changes_nothing(arch: Archive, db_path) -> None:
    batch = [doc("t1"), doc("t2", status="Failed"), doc("t3", sender=None)]
    arch.upsert(batch)
    before = _dump(db_path)
    res = arch.upsert(batch)
    assert (res.new, res.updated, res.unchanged) == (0, 0, 3)
    assert res.changed == []
    assert _dump(db_path) == before


def _dump(path) -> list:
    with sqlite3.connect(path) as conn:
        return [
            conn.execute(f"SELECT * FROM {t} ORDER BY id").fetchall()
            for t in ("messages", "documents", "history", "rejects")
        ]


def test_final_status_replaces_provisional_and_appends_history(arch: Archive) -> None:
    arch.upsert([doc(status="GettingStatus", observed_at="2024-05-01T10:01:00Z")])
    res = arch.upsert([doc(status="Delivered", observed_at="2024-05-01T10:05:00Z")], source="collect")
    assert (res.new, res.updated) == (0, 1)
    assert arch.snapshot() == {KEY: "Delivered"}
    change = arch.history(KEY)[-1]
    assert change["event"] == "status_change"
    assert (change["old_status"], change["new_status"]) == ("GettingStatus", "Delivered")
    assert change["observed_at"] == "2024-05-01T10:05:00.000Z"
    assert change["source"] == "collect"
    assert arch.get(KEY)["doc"]["microsoft"]["online_message_trace"]["Status"] == "Delivered"
    assert arch.history(KEY.upper()) == arch.history(KEY)
    assert arch.get("no|such@key") is None


def test_provisional_status_never_replaces_final(arch: Archive) -> None:
    arch.upsert([doc(status="Delivered", observed_at="2024-05-01T10:00:00Z")])
    # Even observed later, a provisional status is older news.
    res = arch.upsert([doc(status="Pending", observed_at="2024-05-02T10:00:00Z")])
    assert (res.updated, res.unchanged, res.stale) == (0, 1, 1)
    assert arch.snapshot() == {KEY: "Delivered"}
    assert len(arch.history(KEY)) == 1


def test_equal_rank_change_follows_observation_time(arch: Archive) -> None:
    arch.upsert([doc(status="Delivered", observed_at="2024-05-01T12:00:00Z")])
    older = arch.upsert([doc(status="FilteredAsSpam", observed_at="2024-05-01T11:00:00Z")])
    assert (older.updated, older.stale) == (0, 1)
    assert arch.snapshot()[KEY] == "Delivered"
    newer = arch.upsert([doc(status="filteredAsSpam", observed_at="2024-05-01T13:00:00+00:00")])
    assert newer.updated == 1
    assert arch.snapshot()[KEY] == "FilteredAsSpam"


def test_missing_observed_at_is_older_than_any_known_time(arch: Archive) -> None:
    arch.upsert([doc(status="Delivered", observed_at="2020-01-01T00:00:00Z")])
    res = arch.upsert([doc(status="Failed")])
    assert (res.updated, res.stale) == (0, 1)
    assert arch.snapshot()[KEY] == "Delivered"
    # A provisional status stays provisional news however it was observed.
    assert arch.upsert([doc("t9", status="Pending", observed_at="2030-01-01T00:00:00Z")]).new == 1
    assert arch.upsert([doc("t9", status="Delivered")]).updated == 1


def test_content_change_without_status_change_updates_without_history(arch: Archive) -> None:
    arch.upsert([doc(subject="Quarterly reprot", observed_at="2024-05-01T10:00:00Z")])
    seq_before = arch.last_seq()
    res = arch.upsert([doc(subject="Quarterly report (fixed)", observed_at="2024-05-01T11:00:00Z")])
    assert (res.updated, res.unchanged) == (1, 0)
    assert arch.get(KEY)["subject"] == "Quarterly report (fixed)"
    assert len(arch.history(KEY)) == 1
    assert arch.last_seq() > seq_before


def test_query_window_fields_are_not_content(arch: Archive) -> None:
    arch.upsert([doc(window=("2024-05-01T00:00:00Z", "2024-05-01T01:00:00Z", 3))])
    res = arch.upsert([doc(window=("2024-05-01T00:30:00Z", "2024-05-01T01:30:00Z", 0))])
    assert (res.updated, res.unchanged) == (0, 1)


def test_changes_within_one_batch_are_applied_in_order(arch: Archive) -> None:
    res = arch.upsert([
        doc(status="GettingStatus", observed_at="2024-05-01T10:00:00Z"),
        doc(status="Delivered", observed_at="2024-05-01T10:05:00Z"),
        doc(status="Pending", observed_at="2024-05-01T10:06:00Z"),
        doc(status="Delivered", observed_at="2024-05-01T10:05:00Z"),
    ])
    assert (res.new, res.updated, res.unchanged, res.stale) == (1, 1, 2, 1)
    assert arch.snapshot() == {KEY: "Delivered"}
    assert [(h["event"], h["new_status"]) for h in arch.history(KEY)] == [
        ("first_seen", "GettingStatus"), ("status_change", "Delivered")
    ]
    row = arch.get(KEY)
    assert row["first_seen"] == row["updated_at"]
    assert row["observed_at"] == "2024-05-01T10:05:00.000Z"


def test_keys_are_case_insensitive(arch: Archive) -> None:
    arch.upsert([doc("ABC-1", "Linus@Contoso.com")])
    res = arch.upsert([doc("abc-1", "Linus@Contoso.com")])
    # Same row (trace id compared case-insensitively); the id's spelling in the document changed.
    assert res.new == 0
    assert arch.count() == 1


def test_pipeline_errors_go_to_rejects(arch: Archive) -> None:
    bad = make_error_document("field [Received] not present", original='{"x": 1}', origin="in.json", line=7)
    res = arch.upsert([doc(), bad])
    assert (res.new, res.errors) == (1, 1)
    assert arch.count() == 1
    [reject] = arch.rejects()
    assert reject["origin"] == "in.json" and reject["line"] == 7
    assert reject["reason"] == "field [Received] not present"
    assert reject["raw"] == '{"x": 1}'
    again = arch.upsert([bad])
    assert again.errors == 1
    assert arch.reject_count() == 1


def test_seq_and_changes_since(arch: Archive) -> None:
    arch.upsert([doc("t1"), doc("t2"), doc("t3")])
    cursor = arch.last_seq()
    assert cursor == 3
    assert [d["email"]["local_id"] for _, d in arch.changes_since(0)] == ["t1", "t2", "t3"]
    assert arch.changes_since(cursor) == []
    arch.upsert([doc("t2", status="Failed", observed_at="2024-05-02T00:00:00Z"), doc("t4")])
    changes = arch.changes_since(cursor)
    assert [(s, d["email"]["local_id"]) for s, d in changes] == [(4, "t2"), (5, "t4")]
    assert changes[0][1]["microsoft"]["online_message_trace"]["Status"] == "Failed"
    assert [s for s, _ in arch.changes_since(0, limit=2)] == [1, 3]
    rows = arch.rows_since(cursor)
    assert [r["key"] for r in rows] == [row_key("t2", "linus@contoso.com"), row_key("t4", "linus@contoso.com")]
    assert rows[0]["fingerprint"] and rows[0]["status"] == "Failed"


def test_seq_continues_across_reopen(db_path) -> None:
    with Archive.open(db_path) as a:
        a.upsert([doc("t1")])
    with Archive.open(db_path) as a:
        a.upsert([doc("t2")])
        assert [s for s, _ in a.changes_since(0)] == [1, 2]


def test_large_batches_span_several_rounds(arch: Archive) -> None:
    docs = [doc(f"t{i}", f"u{i % 50}@contoso.com") for i in range(5000)]
    res = arch.upsert(iter(docs))
    assert res.new == 5000
    assert arch.count() == 5000
    again = arch.upsert(iter(docs))
    assert again.unchanged == 5000
    assert arch.last_seq() == 5000
    changed = [doc(f"t{i}", f"u{i % 50}@contoso.com", status="Failed", observed_at="2024-05-02T00:00:00Z")
               for i in range(5000)]
    quiet = arch.upsert(changed, keep_changed=False)
    assert quiet.updated == 5000 and quiet.changed == []


def test_upsert_restores_the_garbage_collector(arch: Archive) -> None:
    import gc

    import pytest

    assert gc.isenabled()
    arch.upsert([doc("t1")])
    assert gc.isenabled()

    def failing():
        yield doc("t2")
        raise RuntimeError("input broke")

    with pytest.raises(RuntimeError):
        arch.upsert(failing())
    assert gc.isenabled()
    assert arch.count() == 1
    gc.disable()
    try:
        arch.upsert([doc("t3")])
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_documents_are_json_text_readable_by_sqlite(arch: Archive) -> None:
    arch.upsert([doc(subject="Straße ünïcode ✓")])
    row = arch.conn.execute("SELECT typeof(doc), json_extract(doc, '$.email.subject') FROM documents").fetchone()
    assert row == ("text", "Straße ünïcode ✓")
    assert arch.get(KEY)["subject"] == "Straße ünïcode ✓"


# -- one total order: the same observations give the same state, whatever their order -------------------------


def _state(arch: Archive) -> tuple:
    rows = arch.conn.execute("SELECT key, status, content_hash, seq FROM messages ORDER BY key").fetchall()
    history = arch.conn.execute("SELECT count(*) FROM history").fetchone()[0]
    return rows, history


def test_same_observations_in_any_order_give_the_same_row() -> None:
    import itertools

    observations = [
        doc(status="GettingStatus", observed_at="2024-05-01T10:00:00Z"),
        doc(status="Quarantined", observed_at="2024-05-01T11:00:00Z"),
        doc(status="Delivered", observed_at="2024-05-01T11:00:00Z"),  # same time as Quarantined: a tie
        doc(status="Delivered", subject="Other subject", observed_at="2024-05-01T11:00:00Z"),
        doc(status="Pending", observed_at="2024-05-02T00:00:00Z"),  # provisional: never replaces a final status
        doc(status="Failed"),  # no observation time: older than every known one
    ]
    outcomes = set()
    for n, order in enumerate(itertools.permutations(observations)):
        if n % 7:  # 720 orders; every seventh is plenty and keeps the test quick
            continue
        with Archive.open(":memory:") as a:
            for item in order:
                a.upsert([item])
            row = a.get(KEY)
            outcomes.add((row["status"], row["subject"], row["observed_at"]))
            before = _state(a)
            again = a.upsert(list(order))  # everything applied once more: nothing changes
            assert (again.new, again.updated) == (0, 0)
            assert _state(a) == before
    assert len(outcomes) == 1
    status, _, observed = outcomes.pop()
    assert status in ("Quarantined", "Delivered") and observed == "2024-05-01T11:00:00.000Z"


def test_two_versions_in_one_batch_converge_and_repeat_as_unchanged(arch: Archive) -> None:
    # Elastic's test-log.log has such pairs: one key, two contents, the same query window.
    first = doc(sender="noreply@azure.microsoft.com", observed_at="2022-10-22T09:40:10Z")
    second = doc(sender="noreply@contoso.com", observed_at="2022-10-22T09:40:10Z")
    arch.upsert([first, second])
    kept = arch.get(KEY)["sender"]
    for batch in ([first, second], [second, first], [first], [second]):
        res = arch.upsert(batch)
        assert (res.new, res.updated) == (0, 0)
        assert arch.get(KEY)["sender"] == kept
    assert len(arch.history(KEY)) == 1


def test_same_observation_rendered_anew_replaces_the_row(arch: Archive) -> None:
    # Re-ingesting an export with other options (here: direction) updates the rows, then changes nothing.
    arch.upsert([doc(direction="inbound", observed_at="2024-05-01T10:00:00Z")])
    res = arch.upsert([doc(direction="internal", observed_at="2024-05-01T10:00:00Z")])
    assert res.updated == 1
    assert arch.get(KEY)["direction"] == "internal"
    assert arch.upsert([doc(direction="internal", observed_at="2024-05-01T10:00:00Z")]).unchanged == 1


# -- documents without a usable identity or JSON form -----------------------------------------------------------


def _keyless(recipient: str | None = "linus@contoso.com", **kwargs):
    d = doc(recipient=recipient or "x@y", **kwargs)
    d.key = ""
    d.doc["email"].pop("local_id")
    d.doc["microsoft"]["online_message_trace"].pop("MessageTraceId")
    if recipient is None:
        d.doc["email"].pop("to")
    return d


def test_rows_without_trace_id_get_a_stable_derived_key(arch: Archive) -> None:
    res = arch.upsert([_keyless(status="Pending"), _keyless("bob@contoso.com")])
    assert (res.new, res.derived, res.errors) == (2, 2, 0)
    (row,) = [r for r in arch.search(SearchQuery(recipient="linus@contoso.com"))]
    assert row["key"].startswith("derived-") and row["key"].endswith("|linus@contoso.com")
    assert row["trace_id"] == ""
    # The same row read again (a later download of the report) changes status in place.
    later = arch.upsert([_keyless(status="Delivered", observed_at="2024-05-02T00:00:00Z")])
    assert (later.new, later.updated) == (0, 1)
    assert arch.count() == 2
    assert [h["new_status"] for h in arch.history(row["key"])] == ["Pending", "Delivered"]
    # Without a Message-ID the key comes from sender, subject and received time; other mail gets other keys.
    other = arch.upsert([_keyless(message_id=None), _keyless(message_id=None, subject="Another")])
    assert other.new == 2 and arch.count() == 4


def test_row_without_recipient_is_refused_with_a_reason(arch: Archive) -> None:
    bad = _keyless(None, origin="summary.csv", line=4)
    res = arch.upsert([doc(), bad])
    assert (res.new, res.errors) == (1, 1)
    [(document, reject)] = res.refused
    assert document is bad
    assert (reject.origin, reject.line, reject.field) == ("summary.csv", 4, "RecipientAddress")
    assert "no RecipientAddress" in reject.reason
    [stored] = arch.rejects()
    assert stored["reason"] == reject.reason and stored["field"] == "RecipientAddress"
    assert '"SenderAddress"' in stored["raw"]  # the document itself when event.original is absent
    arch.upsert([bad])
    assert arch.reject_count() == 1


def test_document_json_cannot_represent_is_refused_not_fatal(arch: Archive) -> None:
    huge = doc("t-huge")
    huge.doc["microsoft"]["online_message_trace"]["Index"] = 2**64
    lone = doc("t-lone")
    lone.doc["email"]["subject"] = "x\ud800y"
    lone.doc["event"]["original"] = '{"Subject": "x\ud800y"}'
    res = arch.upsert([huge, doc("t-ok"), lone])
    assert (res.new, res.errors) == (1, 2)
    reasons = [reject.reason for _, reject in res.refused]
    assert "cannot store the document as JSON" in reasons[0] and "64-bit" in reasons[0]
    assert "surrogates" in reasons[1]
    assert arch.reject_count() == 2
    stored = {r["reason"]: r["raw"] for r in arch.rejects()}
    assert stored[reasons[1]] == '{"Subject": "x\\ud800y"}'  # kept, escaped


def test_pipeline_error_with_lone_surrogate_is_stored(arch: Archive) -> None:
    bad = make_error_document("Processor 'script' failed", original='{"Subject": "\ud800"}')
    assert arch.upsert([bad]).errors == 1
    assert arch.rejects()[0]["raw"] == '{"Subject": "\\ud800"}'


def test_sizes_beyond_64_bits_are_not_a_column(arch: Archive) -> None:
    arch.upsert([doc(size=2**63)])
    assert arch.get(KEY)["size"] is None
    assert arch.get(KEY)["doc"]["email"]["attachments"]["file"]["size"] == 2**63


def test_a_repeat_observed_later_moves_the_row_on_so_an_older_change_cannot_win() -> None:
    """Delivered at 11:00, Delivered again at 13:00, Failed at 12:00: Failed is older than the state the
    archive already knew at 13:00, in whatever order the three arrive (also each in its own upsert)."""
    import itertools

    observations = [doc(status="Delivered", observed_at="2024-05-01T11:00:00Z"),
                    doc(status="Delivered", observed_at="2024-05-01T13:00:00Z"),
                    doc(status="Failed", observed_at="2024-05-01T12:00:00Z")]
    for order in itertools.permutations(observations):
        for batched in (False, True):
            with Archive.open(":memory:") as a:
                if batched:
                    a.upsert(list(order))
                else:
                    for item in order:
                        a.upsert([item])
                row = a.get(KEY)
                assert (row["status"], row["observed_at"]) == ("Delivered", "2024-05-01T13:00:00.000Z"), order


def test_a_touch_then_an_update_in_one_batch_keeps_the_updates_time(arch: Archive) -> None:
    """Seen again unchanged (a touch), then changed, in the same batch: the row is observed at the change,
    so an observation between the two cannot replace it later."""
    arch.upsert([doc(status="Delivered", observed_at="2024-05-01T10:00:00Z")])
    arch.upsert([doc(status="Delivered", observed_at="2024-05-01T11:00:00Z"),
                 doc(status="Failed", observed_at="2024-05-01T13:00:00Z")])
    assert arch.get(KEY)["observed_at"] == "2024-05-01T13:00:00.000Z"
    res = arch.upsert([doc(status="Delivered", observed_at="2024-05-01T12:00:00Z")])
    assert (res.updated, res.stale) == (0, 1) and arch.snapshot() == {KEY: "Failed"}


def test_a_row_without_status_never_outranks_one_with_a_status(arch: Archive) -> None:
    arch.upsert([doc(status="Pending", observed_at="2024-05-01T12:00:00Z")])
    res = arch.upsert([doc(status="", observed_at="2024-05-01T09:00:00Z")])  # older, and says nothing
    assert res.updated == 0 and arch.snapshot() == {KEY: "Pending"}
    res = arch.upsert([doc(status="Delivered", observed_at="2024-05-01T13:00:00Z")])
    assert res.updated == 1 and arch.snapshot() == {KEY: "Delivered"}
