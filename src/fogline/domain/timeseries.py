"""Time rules for telemetry: timestamps, durations and downsampling buckets."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from fogline.domain.errors import InvalidInput, Problem

# Timestamps are integer epoch milliseconds everywhere inside Fogline.
EARLIEST_TS_MS = 946_684_800_000  # 2000-01-01T00:00:00Z: anything older is a unit mistake
MAX_FUTURE_SKEW_MS = 24 * 3600 * 1000
MAX_BUCKETS = 10_000
# Query bounds are calendar dates the store's 64-bit integers can hold: 1970 to the year 9999.
LATEST_QUERY_TS_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
MAX_DURATION_MS = LATEST_QUERY_TS_MS

_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
# ASCII digits only, and few enough that int() never meets Python's digit limit.
_DURATION = re.compile(r"^([0-9]{1,16})(ms|s|m|h|d|w)$")
_EPOCH_MS = re.compile(r"^[0-9]{1,16}$")


@dataclass(frozen=True)
class Bucket:
    start_ms: int
    avg: float | None
    min: float | None
    max: float | None
    count: int


def now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


def parse_duration_ms(text: str, field: str = "duration") -> int:
    """'500ms', '10s', '5m', '1h', '1d', '1w' to milliseconds."""
    match = _DURATION.match(text.strip())
    if match is None or int(match.group(1)) == 0:
        raise InvalidInput.of(
            [Problem(field, f"{text[:40]!r} is not a duration like 500ms, 10s, 5m, 1h, 1d or 1w")]
        )
    duration = int(match.group(1)) * _UNITS_MS[match.group(2)]
    if duration > MAX_DURATION_MS:
        raise InvalidInput.of(
            [Problem(field, f"{text!r} is too long: at most {MAX_DURATION_MS // 86_400_000}d")]
        )
    return duration


def iso_from_ms(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, UTC).isoformat(timespec="milliseconds")


def reading_timestamp_problem(value: object, now: int) -> tuple[int | None, str | None]:
    """A device's timestamp as epoch ms, or the reason it cannot be one.

    Devices send epoch milliseconds (a number) or an ISO 8601 string with a zone.
    """
    ts: int
    if isinstance(value, bool):
        return None, "timestamp must be epoch milliseconds or an ISO 8601 string"
    if isinstance(value, int | float):
        if not math.isfinite(value):
            return None, "timestamp is not a finite number"
        ts = int(value)
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            if parsed.tzinfo is None:
                return None, f"timestamp {value!r} has no time zone"
            ts = int(parsed.timestamp() * 1000)
        except (ValueError, OverflowError):  # year 1 with a positive offset overflows
            return None, f"timestamp {value!r} is not ISO 8601"
    else:
        return None, "timestamp must be epoch milliseconds or an ISO 8601 string"
    if ts < EARLIEST_TS_MS:
        return None, f"timestamp {ts} is before 2000-01-01 (epoch milliseconds are expected)"
    if ts > now + MAX_FUTURE_SKEW_MS:
        return None, f"timestamp {ts} is more than a day in the future"
    return ts, None


def parse_query_time(text: str, now: int, field: str) -> int:
    """A query bound: epoch ms, ISO 8601, 'now', or relative to now like '-15m' or '+24h'
    (readings from a device clock ahead of ours are kept, and found this way); always between
    1970 and the year 9999, so it fits every store's integers."""
    if text.startswith(" ") and _DURATION.match(text.strip()):
        # '+24h' typed into a URL arrives as ' 24h' ('+' is a space in a query string).
        text = "+" + text.strip()
    text = text.strip()
    if text == "now":
        ts = now
    elif text[:1] in ("-", "+"):
        sign = -1 if text[0] == "-" else 1
        ts = now + sign * parse_duration_ms(text[1:], field)
    elif _EPOCH_MS.match(text):
        ts = int(text)
    else:
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            ts = int(parsed.timestamp() * 1000)
        except (ValueError, OverflowError):
            raise InvalidInput.of(
                [
                    Problem(
                        field,
                        f"{text[:40]!r} is not epoch ms, ISO 8601, 'now', or like '-15m' or '+24h'",
                    )
                ]
            ) from None
    if not 0 <= ts <= LATEST_QUERY_TS_MS:
        raise InvalidInput.of(
            [Problem(field, f"{text[:40]!r} is outside 1970-01-01 to 9999-12-31")]
        )
    return ts


def parse_query_range(start: str, end: str, now: int) -> tuple[int, int]:
    """A query's `from` and `to` bounds, both checked: a bad pair is one answer with both
    problems."""
    bounds: list[int] = []
    problems: list[Problem] = []
    for text, field in ((start, "from"), (end, "to")):
        try:
            bounds.append(parse_query_time(text, now, field))
        except InvalidInput as exc:
            problems += exc.problems
    if problems:
        raise InvalidInput.of(problems)
    return bounds[0], bounds[1]


def check_bucketing(start_ms: int, end_ms: int, bucket_ms: int) -> None:
    if end_ms <= start_ms:
        raise InvalidInput.of([Problem("to", "must be after 'from'")])
    buckets = math.ceil((end_ms - start_ms) / bucket_ms)
    if buckets > MAX_BUCKETS:
        raise InvalidInput.of(
            [Problem("bucket", f"{buckets} buckets asked for; at most {MAX_BUCKETS}: widen them")]
        )


def bucket_start(ts_ms: int, bucket_ms: int) -> int:
    """Buckets are aligned to the epoch, so the same bucket size always gives the same edges."""
    return ts_ms - ts_ms % bucket_ms
