import pytest

from fogline.domain.errors import InvalidInput
from fogline.domain.timeseries import (
    EARLIEST_TS_MS,
    bucket_start,
    check_bucketing,
    iso_from_ms,
    parse_duration_ms,
    parse_query_time,
    reading_timestamp_problem,
)

NOW = 1_800_000_000_000


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("500ms", 500),
        ("10s", 10_000),
        ("5m", 300_000),
        ("1h", 3_600_000),
        ("1d", 86_400_000),
        ("2w", 1_209_600_000),
    ],
)
def test_durations(text: str, ms: int) -> None:
    assert parse_duration_ms(text) == ms


@pytest.mark.parametrize("text", ["", "10", "1y", "-5m", "0s", "1.5h", "m"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_duration_ms(text)


def test_query_times() -> None:
    assert parse_query_time("now", NOW, "to") == NOW
    assert parse_query_time("-15m", NOW, "from") == NOW - 900_000
    assert parse_query_time("1700000000000", NOW, "from") == 1_700_000_000_000
    assert parse_query_time("2023-11-14T22:13:20Z", NOW, "from") == 1_700_000_000_000
    # A bound without a zone is read as UTC, so a query means the same everywhere.
    assert parse_query_time("2023-11-14T22:13:20", NOW, "from") == 1_700_000_000_000
    with pytest.raises(InvalidInput):
        parse_query_time("yesterday", NOW, "from")


def test_query_times_relative_to_now_either_way() -> None:
    """Readings from a device clock ahead of ours are kept; '+24h' finds them."""
    assert parse_query_time("+24h", NOW, "to") == NOW + 86_400_000
    assert parse_query_time("+500ms", NOW, "to") == NOW + 500
    assert parse_query_time("-1h", NOW, "from") == NOW - 3_600_000
    # '+24h' written into a URL's query string arrives as ' 24h': read as meant.
    assert parse_query_time(" 24h", NOW, "to") == NOW + 86_400_000
    for bad in ("+banana", "+", "+-5m", "+0s", "24h", "+99999999999999w"):
        with pytest.raises(InvalidInput) as err:
            parse_query_time(bad, NOW, "to")
        assert err.value.problems[0].field == "to"


def test_buckets_are_aligned_to_the_epoch() -> None:
    assert bucket_start(1_700_000_012_345, 10_000) == 1_700_000_010_000
    assert bucket_start(1_700_000_010_000, 10_000) == 1_700_000_010_000
    assert bucket_start(1_700_000_019_999, 60_000) == 1_699_999_980_000


def test_too_many_buckets_refused() -> None:
    check_bucketing(0, 10_000 * 1000, 1000)
    with pytest.raises(InvalidInput) as err:
        check_bucketing(0, 10_001 * 1000, 1000)
    assert err.value.problems[0].field == "bucket"
    with pytest.raises(InvalidInput):
        check_bucketing(10, 10, 1000)


def test_reading_timestamps() -> None:
    assert reading_timestamp_problem(1_700_000_000_000, NOW) == (1_700_000_000_000, None)
    assert reading_timestamp_problem("2023-11-14T22:13:20.5Z", NOW)[0] == 1_700_000_000_500
    ts, why = reading_timestamp_problem(1_700_000_000, NOW)  # seconds, not milliseconds
    assert ts is None and "before 2000" in str(why)
    ts, why = reading_timestamp_problem(NOW + 2 * 86_400_000, NOW)
    assert ts is None and "future" in str(why)
    for bad in ("2023-11-14T22:13:20", "soon", True, None, float("nan"), [1]):
        assert reading_timestamp_problem(bad, NOW)[0] is None
    assert iso_from_ms(EARLIEST_TS_MS).startswith("2000-01-01T00:00:00.000")


@pytest.mark.parametrize(
    "text",
    [
        "-999999999999d",  # a relative bound before 1970
        "99999999999999999999",  # 20 digits: beyond any 64-bit column
        "-99999999999999999999w",
        "9" * 5000,  # past Python's int() digit limit
        "²³",  # digits to str.isdigit(), not to int()
        "0001-01-01T00:00:00+05:00",  # overflows datetime.timestamp()
        "9999-12-31T23:59:59-05:00",  # after the year 9999 in UTC
        "1969-12-31T23:59:59Z",
    ],
)
def test_query_times_out_of_range_are_invalid_not_errors(text: str) -> None:
    with pytest.raises(InvalidInput) as err:
        parse_query_time(text, NOW, "from")
    assert err.value.problems[0].field == "from"


def test_query_time_limits() -> None:
    assert parse_query_time("0", NOW, "from") == 0
    assert parse_query_time("253402300799999", NOW, "to") == 253_402_300_799_999
    with pytest.raises(InvalidInput):
        parse_query_time("253402300800000", NOW, "to")
    with pytest.raises(InvalidInput):
        parse_duration_ms("9999999999999999w")


def test_reading_timestamps_that_overflow_are_refused() -> None:
    ts, why = reading_timestamp_problem("0001-01-01T00:00:00+05:00", NOW)
    assert ts is None and why is not None


def test_a_bad_range_names_both_bounds_at_once() -> None:
    import pytest

    from fogline.domain.errors import InvalidInput
    from fogline.domain.timeseries import parse_query_range

    assert parse_query_range("-1h", "now", 10_000_000) == (10_000_000 - 3_600_000, 10_000_000)
    with pytest.raises(InvalidInput) as caught:
        parse_query_range("yesterday", "later", 10_000_000)
    assert [p.field for p in caught.value.problems] == ["from", "to"]
