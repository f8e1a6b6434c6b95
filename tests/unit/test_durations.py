from datetime import UTC, datetime

import pytest

from patgate.durations import (
    format_duration,
    format_time,
    parse_duration,
    parse_expiry_time,
)
from patgate.errors import UsageError

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("15m", 900),
        ("1h", 3600),
        ("20d", 1_728_000),
        ("2w", 1_209_600),
        # Plain seconds, as the file-server CLI's -a takes them.
        ("3600", 3600),
        ("10", 10),
    ],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize("text", ["", "0", "h", "1y", "-1d", "0s", "1.5h", "1 hour"])
def test_bad_durations_say_what_is_expected(text):
    with pytest.raises(
        UsageError, match=r"expected seconds or a number and a unit|zero"
    ):
        parse_duration(text)


def test_expiry_from_duration_and_dates():
    assert parse_expiry_time("20d", NOW) == NOW + 20 * 86400
    end_of_day = datetime(2027, 1, 31, 23, 59, 59, tzinfo=UTC).timestamp()
    assert parse_expiry_time("2027-01-31", NOW) == end_of_day
    assert parse_expiry_time("2027-01-31T12:00:00Z", NOW) == (
        datetime(2027, 1, 31, 12, tzinfo=UTC).timestamp()
    )


@pytest.mark.parametrize("text", ["2020-01-01", "yesterday", "2027-13-01"])
def test_bad_or_past_expiry(text):
    with pytest.raises(UsageError):
        parse_expiry_time(text, NOW)


def test_format_time_is_iso_utc():
    assert format_time(NOW) == "2026-11-30T12:00:00Z"
    assert format_time(None) is None
