"""--since/--until values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from exotrace.timeparse import format_ts, normalize_ts, parse_time

NOW = datetime(2024, 5, 10, 15, 30, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "delta"),
    [("30m", timedelta(minutes=30)), ("2h", timedelta(hours=2)), ("7d", timedelta(days=7)),
     ("2w", timedelta(weeks=2)), ("45s", timedelta(seconds=45)), ("1.5h", timedelta(minutes=90)),
     (" 3D ", timedelta(days=3))],
)
def test_relative(text: str, delta: timedelta) -> None:
    assert parse_time(text, now=NOW) == NOW - delta


def test_words() -> None:
    assert parse_time("now", now=NOW) == NOW
    assert parse_time("today", now=NOW) == datetime(2024, 5, 10, tzinfo=UTC)
    assert parse_time("yesterday", now=NOW) == datetime(2024, 5, 9, tzinfo=UTC)
    assert parse_time("today", now=NOW, end=True) == datetime(2024, 5, 11, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01", datetime(2024, 5, 1, tzinfo=UTC)),
        ("2024-05-01T12:00", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("2024-05-01 12:00:00Z", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("2024-05-01T12:00:00.1234567Z", datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)),
        ("2024-05-01T14:00:00+02:00", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("2024-05-01t12:00:00z", datetime(2024, 5, 1, 12, tzinfo=UTC)),
    ],
)
def test_iso(text: str, expected: datetime) -> None:
    assert parse_time(text) == expected


def test_bare_date_as_end_bound_covers_the_day() -> None:
    assert parse_time("2024-05-01", end=True) == datetime(2024, 5, 2, tzinfo=UTC)
    assert parse_time("2024-05-01T00:00", end=True) == datetime(2024, 5, 1, tzinfo=UTC)


@pytest.mark.parametrize("text", ["", "3x", "yesterday-ish", "2024-13-01", "2024-05-01T25:00", "m5"])
def test_invalid(text: str) -> None:
    with pytest.raises(ValueError):
        parse_time(text, now=NOW)


def test_formats() -> None:
    offset = datetime(2024, 5, 1, 14, 0, 0, 987654, tzinfo=timezone(timedelta(hours=2)))
    assert format_ts(offset) == "2024-05-01T12:00:00.987Z"
    assert normalize_ts("2024-05-01T12:00:00.000Z") == "2024-05-01T12:00:00.000Z"
    assert normalize_ts("2024-05-01T12:00:00Z") == "2024-05-01T12:00:00.000Z"
    assert normalize_ts("2022-09-05T18:10:13.4907658") == "2022-09-05T18:10:13.490Z"
    assert normalize_ts("garbage") is None and normalize_ts(None) is None


@pytest.mark.parametrize("text", ["99999999d", "9999999999w", "1e3d", "0001-01-01T00:00:00+01:00",
                                  "9999-12-31T23:59:59-01:00"])
def test_out_of_range_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        parse_time(text, now=NOW)
    assert normalize_ts(text) is None


def test_last_day_of_the_calendar_as_end_bound() -> None:
    assert parse_time("9999-12-31", end=True) == datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
