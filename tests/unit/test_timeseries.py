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
