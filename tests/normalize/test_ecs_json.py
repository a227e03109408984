"""The normalizer writes JSON directly: it must be the JSON of the document, with consistent identity.

Run over the benchmark's varied generator (legacy and Graph rows, IPv4/IPv6, many suffixes, every
status, null senders, unicode and empty subjects) and over values that cannot be used as they are.
"""

from __future__ import annotations

import sys
from pathlib import Path

import orjson
import pytest

from exotrace.archive.columns import extract
from exotrace.model import RawRecord, row_key
from exotrace.normalize import NormalizeOptions, Normalizer
from exotrace.normalize.fingerprint import fingerprint

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from gen_rows import generate  # noqa: E402

LOCAL = ("contoso.com", "contoso.onmicrosoft.com")


def records(n: int = 3000) -> list[RawRecord]:
    return [RawRecord(orjson.loads(line), line.decode(), "gen.ndjson", i + 1) for i, line in enumerate(generate(n))]


@pytest.mark.parametrize("options", [
    {"local_domains": LOCAL},
    {"local_domains": LOCAL, "preserve_original": True, "tenant": 'con"toso'},
    {"extras": False, "tags": ("forwarded",)},
])
def test_json_is_the_document_and_identity_agrees(geoip_dir, options):
    normalizer = Normalizer(NormalizeOptions(geoip_dir=geoip_dir, **options))
    for rec in records():
        document = normalizer.normalize(rec)
        assert not document.is_error, document.doc
        doc = orjson.loads(document.json)
        # compact, in orjson's own spelling: re-encoding the decoded document gives the same bytes
        assert orjson.dumps(doc) == document.json
        assert document.doc == doc
        # identity derived lazily from the values equals identity computed from the document
        assert document.fingerprint == fingerprint(doc)
        email = doc["email"]
        assert document.key == row_key(email["local_id"], email["to"]["address"][0])
        # the archive's columns from the summary equal those read from the decoded document
        from_dict = type(document)(doc=doc, key=document.key, fingerprint=document.fingerprint,
                                   status=document.status)
        assert extract(document) == extract(from_dict)


def test_address_and_ip_caches_do_not_leak_between_rows(geoip_dir):
    """Cache hits must give the same document as a fresh normalizer."""
    recs = records(400) * 2
    warm = Normalizer(NormalizeOptions(local_domains=LOCAL, geoip_dir=geoip_dir, address_cache_size=7))
    for rec in recs:
        cold = Normalizer(NormalizeOptions(local_domains=LOCAL, geoip_dir=geoip_dir))
        assert warm.normalize(rec).json == cold.normalize(rec).json


def record(**fields):
    base = {"MessageTraceId": "cf7a249a-5edd-4350-130a-08da8f69e0f6", "Received": "2024-05-01T10:00:00Z",
            "SenderAddress": "alice@contoso.com", "RecipientAddress": "bob@fabrikam.com", "Status": "Delivered"}
    base.update(fields)
    return RawRecord(fields=base, original=str(base), origin="t.json", line=7)


@pytest.mark.parametrize(("fields", "fragment"), [
    ({"FromIP": "999.1.1.1"}, "'999.1.1.1' is not an IP string literal."),  # also without GeoIP databases
    ({"ToIP": "not-an-ip"}, "is not an IP string literal"),
    ({"Size": 2**63}, "out of range"),
    ({"Size": "-9223372036854775809"}, "out of range"),
    ({"Received": "/Date(99999999999999999)/"}, "unable to parse date"),
    ({"Index": 2**70}, "Integer exceeds 64-bit range"),
    ({"Subject": "bad \ud800 surrogate"}, "not valid UTF-8"),
    ({"SenderAddress": "x\udcff@contoso.com"}, "not valid UTF-8"),
])
def test_unusable_values_become_storable_pipeline_errors(fields, fragment):
    document = Normalizer(NormalizeOptions(geoip=False)).normalize(record(**fields))
    assert document.is_error and document.key == "" and document.fingerprint == ""
    message = document.doc["error"]["message"][0]
    assert fragment in message, message
    # the error document itself can always be written (archive, rejects file, sinks)
    assert orjson.loads(document.json) == document.doc


def test_out_of_range_window_bound_is_kept_as_given():
    document = Normalizer(NormalizeOptions(geoip=False)).normalize(record(EndDate="/Date(99999999999999999)/"))
    assert not document.is_error
    assert document.doc["microsoft"]["online_message_trace"]["EndDate"] == "/Date(99999999999999999)/"
    assert document.observed_at is None


def test_size_at_the_long_bounds_is_accepted():
    document = Normalizer(NormalizeOptions(geoip=False)).normalize(record(Size=2**63 - 1))
    assert document.doc["email"]["attachments"]["file"]["size"] == 2**63 - 1


@pytest.mark.parametrize("options", [
    {"local_domains": LOCAL},
    {"local_domains": LOCAL, "preserve_original": True, "tenant": 'con"toso', "tags": ("a",)},
])
def test_stable_json_is_the_document_without_its_volatile_fields(geoip_dir, options):
    """The archive's content digest covers the JSON without the query window and event.original; the
    normalizer makes it without decoding: it must be exactly that JSON."""
    from exotrace.archive.columns import _without_volatile

    normalizer = Normalizer(NormalizeOptions(geoip_dir=geoip_dir, **options))
    for rec in records(2000):
        rec.fields.update({"StartDate": "2024-05-01T00:00:00Z", "EndDate": "/Date(1714608000000)/", "Index": 3})
        document = normalizer.normalize(rec)
        assert document.summary.volatile and document.stable_json is not None
        assert document.stable_json() == orjson.dumps(_without_volatile(orjson.loads(document.json)))
    rec = records(1)[0]
    for name in ("StartDate", "EndDate", "Index"):
        rec.fields.pop(name, None)
    plain = normalizer.normalize(rec)
    assert plain.summary.volatile is bool(options.get("preserve_original"))
    if not plain.summary.volatile:
        assert plain.stable_json is None
    else:
        assert plain.stable_json() == orjson.dumps(_without_volatile(plain.doc))


def test_derived_key_from_the_summary_equals_the_one_from_the_document(geoip_dir):
    """Rows without MessageTraceId (admin-center reports) are keyed from the normalizer's values without
    decoding the document: the same key as from the decoded document."""
    from exotrace.archive.columns import derived_key
    from exotrace.model import Document

    normalizer = Normalizer(NormalizeOptions(geoip_dir=geoip_dir, local_domains=LOCAL))
    keys = set()
    for i, rec in enumerate(records(500)):
        for name in ("MessageTraceId", "id"):
            rec.fields.pop(name, None)
        if i % 2:  # half without Message-ID: keyed by sender, subject and time
            rec.fields.pop("MessageId", None)
            rec.fields.pop("messageId", None)
        document = normalizer.normalize(rec)
        key = derived_key(document)
        assert key and key == derived_key(Document(doc=document.doc))
        keys.add(key)
    assert len(keys) > 450
