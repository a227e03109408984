from datetime import UTC, datetime

import pytest

from exotrace.normalize.dates import format_iso, format_millis, is_iso, parse_timestamp


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2022-09-05T18:10:13.4907658", datetime(2022, 9, 5, 18, 10, 13, 490765, UTC)),
        ("2022-10-21T17:25:30.6006882Z", datetime(2022, 10, 21, 17, 25, 30, 600688, UTC)),
        ("2022-10-21T09:40:10Z", datetime(2022, 10, 21, 9, 40, 10, tzinfo=UTC)),
        ("2022-10-21T09:40:10", datetime(2022, 10, 21, 9, 40, 10, tzinfo=UTC)),
        ("2022-10-21T09:40:10.1+02:00", datetime(2022, 10, 21, 7, 40, 10, 100000, UTC)),
        ("2020-02-24T14:07:34.7419315-05:00", datetime(2020, 2, 24, 19, 7, 34, 741931, UTC)),
        ("/Date(1659020996164)/", datetime(2022, 7, 28, 15, 9, 56, 164000, UTC)),
        ("\\/Date(1659020996164)\\/", datetime(2022, 7, 28, 15, 9, 56, 164000, UTC)),
        ("/Date(1659020996164+0200)/", datetime(2022, 7, 28, 15, 9, 56, 164000, UTC)),
        ("11/20/2025 3:04:05 PM", datetime(2025, 11, 20, 15, 4, 5, tzinfo=UTC)),
        ("20/11/2025 15:04:05", datetime(2025, 11, 20, 15, 4, 5, tzinfo=UTC)),
    ],
)
def test_parse_timestamp(text, expected):
    assert parse_timestamp(text) == expected


def test_displayhint_object():
    assert parse_timestamp({"value": "/Date(0)/", "DisplayHint": 2}) == datetime(1970, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("bad", ["", "yesterday", None, 12, "2022-13-45T00:00:00Z"])
def test_bad_timestamps_raise(bad):
    with pytest.raises(ValueError):
        parse_timestamp(bad)


def test_formats():
    dt = datetime(2022, 9, 5, 18, 10, 13, 490765, UTC)
    assert format_millis(dt) == "2022-09-05T18:10:13.490Z"
    assert format_iso(dt) == "2022-09-05T18:10:13.490765Z"
    assert format_iso(datetime(2022, 1, 1, tzinfo=UTC)) == "2022-01-01T00:00:00Z"
    assert is_iso("2022-01-01T00:00:00Z") and not is_iso("/Date(1)/")
