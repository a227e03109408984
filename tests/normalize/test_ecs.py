"""Normalizer behaviour beyond Elastic's eight cases: direction, suffixes, errors, fingerprint."""

from __future__ import annotations

import base64
import hashlib

import pytest

from exotrace.model import RawRecord, row_key
from exotrace.normalize import NormalizeOptions, Normalizer
from exotrace.normalize.domains import domain_parts
from exotrace.normalize.fingerprint import fingerprint

BASE = {
    "MessageTraceId": "cf7a249a-5edd-4350-130a-08da8f69e0f6",
    "Received": "2024-05-01T10:00:00Z",
    "SenderAddress": "alice@contoso.com",
    "RecipientAddress": "bob@fabrikam.co.uk",
    "Subject": "hello",
    "Status": "Delivered",
    "Size": 1234,
    "FromIP": "89.160.20.112",
    "ToIP": "",
}


def norm(geoip_dir=None, **opts):
    return Normalizer(NormalizeOptions(local_domains=("contoso.com", "contoso.onmicrosoft.com"),
                                       geoip_dir=geoip_dir, geoip=geoip_dir is not None, **opts))


def record(**changes):
    fields = {**BASE, **changes}
    return RawRecord(fields=fields, original=str(fields), origin="t.json", line=3)


@pytest.mark.parametrize(
    ("sender", "recipient", "direction"),
    [
        ("a@contoso.com", "b@fabrikam.com", "outbound"),
        ("a@fabrikam.com", "b@CONTOSO.com", "inbound"),
        ("a@Contoso.Com", "b@contoso.onmicrosoft.com", "internal"),
        ("a@fabrikam.com", "b@example.org", "external"),
        ("a@mail.contoso.com", "b@example.org", "external"),  # subdomains are not local
        ("<>", "b@contoso.com", "inbound"),
    ],
)
def test_direction(sender, recipient, direction):
    doc = norm().normalize(record(SenderAddress=sender, RecipientAddress=recipient)).doc
    assert doc["email"]["direction"] == direction


def test_no_local_domains_no_direction():
    doc = Normalizer(NormalizeOptions(geoip=False)).normalize(record()).doc
    assert "direction" not in doc["email"] and "user" not in doc


def test_multi_label_suffix_and_tenant_domains():
    assert domain_parts("mail.fabrikam.co.uk") == {
        "registered_domain": "fabrikam.co.uk", "subdomain": "mail", "top_level_domain": "co.uk"}
    assert domain_parts("X.onmicrosoft.com")["registered_domain"] == "onmicrosoft.com"
    assert domain_parts("X.onmicrosoft.com")["subdomain"] == "X"
    assert domain_parts("localhost") == {}


def test_geo_and_asn(geoip_dir):
    doc = norm(geoip_dir).normalize(record()).doc
    assert doc["source"]["geo"]["city_name"] == "Linköping"
    assert doc["source"]["as"] == {"number": 29518, "organization": {"name": "Bredband2 AB"}}
    assert "ip" not in doc.get("destination", {})


def test_missing_geoip_warns_once_and_still_works(tmp_path, caplog):
    n = Normalizer(NormalizeOptions(geoip_dir=tmp_path))
    assert n.geo is None
    assert sum("GeoIP" in r.message for r in caplog.records) == 1
    assert n.normalize(record()).doc["source"]["ip"] == "89.160.20.112"


def test_graph_status_and_extras():
    d = norm().normalize(record(Status=None, status="filteredAsSpam")).doc
    assert d["event"]["outcome"] == "failure"
    assert d["event"]["action"] == "filtered-as-spam"
    assert d["related"]["ip"] == ["89.160.20.112"]


def test_powershell_51_dates_rewritten_as_iso():
    d = norm().normalize(record(Received="/Date(1659020996164)/", EndDate="/Date(1659024100604)/"))
    assert d.doc["@timestamp"] == "2022-07-28T15:09:56.164Z"
    assert d.doc["email"]["delivery_timestamp"] == "2022-07-28T15:09:56.164Z"
    assert d.doc["microsoft"]["online_message_trace"]["EndDate"] == "2022-07-28T16:01:40.604Z"
    assert d.observed_at == "2022-07-28T16:01:40.604Z"


def test_identity():
    d = norm().normalize(record(RecipientAddress="Bob@Fabrikam.co.uk"))
    assert d.key == row_key(BASE["MessageTraceId"], "bob@fabrikam.co.uk")
    assert d.status == "Delivered"


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"Received": None}, "date"),
        ({"Received": "not a date"}, "unable to parse date"),
        ({"SenderAddress": "no-at-sign"}, "Grok"),
        ({"FromIP": "999.1.1.1"}, "not an IP"),
        ({"Size": "big"}, "Size"),
        ({"Size": float(2**70)}, "field [Size] is out of range for a long"),  # how orjson reads 2**70
        ({"RecipientAddress": ["a@contoso.com", "b@contoso.com"]}, "field [RecipientAddress] is not a single"),
        ({"Subject": {"nested": [1, 2]}}, "field [Subject] is not a single value"),
    ],
)
def test_pipeline_errors_keep_original(geoip_dir, changes, fragment):
    rec = record(**changes)
    d = norm(geoip_dir).normalize(rec)
    assert d.is_error and d.key == ""
    assert d.doc["event"]["kind"] == "pipeline_error"
    assert d.doc["event"]["original"] == rec.original
    assert fragment in d.doc["error"]["message"][0]
    assert "preserve_original_event" in d.doc["tags"]


def test_fingerprint_matches_elasticsearch_algorithm():
    doc = norm().normalize(record()).doc
    # Hand-built byte stream: fields in sorted name order, each value prefixed by a NUL byte,
    # strings as UTF-8 and Size as a little-endian int32.
    stream = b"".join(
        b"\x00" + v
        for v in (
            (1234).to_bytes(4, "little"),       # email.attachments.file.size
            b"alice@contoso.com",               # email.from.address
            BASE["MessageTraceId"].encode(),    # email.local_id
            b"hello",                           # email.subject
            b"bob@fabrikam.co.uk",              # email.to.address
            b"Delivered",                       # microsoft.online_message_trace.Status
        )
    )
    assert fingerprint(doc) == base64.b64encode(hashlib.sha1(stream).digest()).decode()
    other = norm().normalize(record(Status="GettingStatus")).fingerprint
    assert other != fingerprint(doc)


def test_region_is_the_most_specific_subdivision(geoip_dir):
    """Elasticsearch's geoip processor takes the most specific subdivision (England, then West Berkshire)."""
    geo = norm(geoip_dir).normalize(record(FromIP="2.125.160.216")).doc["source"]["geo"]
    assert (geo["region_iso_code"], geo["region_name"]) == ("GB-WBK", "West Berkshire")


@pytest.mark.parametrize(
    ("sender", "recipient", "user"),
    [
        ("bob@contoso.com", "bob@contoso.com", {"email": "bob@contoso.com", "id": "bob@contoso.com", "name": "bob"}),
        ("bob@contoso.com", "bob@CONTOSO.com", {"email": ["bob@CONTOSO.com", "bob@contoso.com"],
                                                "id": ["bob@CONTOSO.com", "bob@contoso.com"], "name": "bob"}),
        ("bob@contoso.com", "ann@contoso.com", {"email": ["ann@contoso.com", "bob@contoso.com"],
                                                "id": ["ann@contoso.com", "bob@contoso.com"], "name": ["ann", "bob"]}),
    ],
)
def test_internal_user_fields_drop_repeats_as_elastic_appends_do(sender, recipient, user):
    """``allow_duplicates: false``, then a one-element list becomes its value (mail to oneself: scalars)."""
    assert norm().normalize(record(SenderAddress=sender, RecipientAddress=recipient)).doc["user"] == user


@pytest.mark.parametrize(
    ("domain", "parts"),
    [
        ("contoso.local", {}),  # no known suffix: Elasticsearch sets nothing
        ("foo.invalidtld", {}),
        ("contoso.com>", {}),  # from "John <john@contoso.com>"
        ("x.contoso.com.", {}),
        ("Mail.Contoso.Com", {"registered_domain": "contoso.com", "top_level_domain": "com"}),  # no subdomain
        ("SubDomain.contoso.com", {"registered_domain": "contoso.com", "top_level_domain": "com",
                                   "subdomain": "SubDomain"}),
        ("CO.UK", {"top_level_domain": "CO.UK"}),  # a suffix itself: only the suffix, as written
        ("1.www.global.ssl.fastly.net", {"registered_domain": "www.global.ssl.fastly.net",  # a private rule
                                         "top_level_domain": "global.ssl.fastly.net", "subdomain": "1"}),
        ("www.ck", {"registered_domain": "www.ck", "top_level_domain": "ck"}),  # an exception rule
        ("foo.ck", {"top_level_domain": "foo.ck"}),  # a wildcard rule
    ],
)
def test_domain_parts_follow_elasticsearch_registered_domain(domain, parts):
    assert domain_parts(domain) == parts


def test_years_before_1000_keep_four_digits():
    doc = norm().normalize(record(Received="0001-01-01T05:00:00+05:00")).doc
    assert doc["@timestamp"] == "0001-01-01T00:00:00.000Z"
