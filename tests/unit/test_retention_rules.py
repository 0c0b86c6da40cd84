"""The retention policy's rules: what a level may say, which level wins, the platform's
settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from fogline.app.settings import load_settings
from fogline.domain.errors import ConfigurationError, InvalidInput
from fogline.domain.retention import (
    FOREVER,
    NO_AGGREGATES,
    Retention,
    RetentionOverride,
    coherence_problems,
    parse_override,
    platform_default,
    resolve,
)

DAY = 86_400_000


def test_an_override_takes_durations_and_the_words() -> None:
    assert parse_override(" 30d ", None) == RetentionOverride("30d", None)
    assert parse_override("forever", "none") == RetentionOverride(FOREVER, NO_AGGREGATES)
    assert parse_override(None, "52w") == RetentionOverride(None, "52w")


@pytest.mark.parametrize(
    ("history", "aggregates", "fragments"),
    [
        ("banana", None, ["history", "not a duration"]),
        ("30m", None, ["history", "shorter than the shortest retention, 1h"]),
        ("none", None, ["history", "'forever'"]),  # no history at all is no retention
        (None, "0d", ["aggregates", "'none' for no aggregates"]),
        ("9999999999w", "x", ["too long", "aggregates"]),
    ],
)
def test_a_bad_override_says_every_problem(
    history: str | None, aggregates: str | None, fragments: list[str]
) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_override(history, aggregates)
    text = str(caught.value)
    for fragment in fragments:
        assert fragment in text


def test_the_most_specific_level_wins_part_by_part() -> None:
    platform = platform_default("90d", "off")
    assert platform == Retention("90d", NO_AGGREGATES)
    tenant = RetentionOverride(history="30d", aggregates="365d")
    asset_type = RetentionOverride(history="7d")
    policy = resolve(platform, tenant, asset_type)
    assert policy == Retention("7d", "365d", "asset-type", "tenant")
    assert (policy.history_ms, policy.aggregated, policy.aggregates_ms) == (
        7 * DAY,
        True,
        365 * DAY,
    )
    assert resolve(platform, None, None) == platform
    forever = resolve(platform, RetentionOverride(history=FOREVER, aggregates=FOREVER))
    assert (forever.history_ms, forever.aggregated, forever.aggregates_ms) == (None, True, None)


def test_aggregates_must_outlive_the_readings_they_summarise() -> None:
    assert coherence_problems(Retention("30d", "365d")) == []
    assert coherence_problems(Retention("30d", "none")) == []
    assert coherence_problems(Retention("forever", "1d")) == []
    (problem,) = coherence_problems(Retention("30d", "30d"))
    assert problem.field == "aggregates" and "expire before the readings" in problem.reason


def test_settings_default_to_a_bounded_history(tmp_path: Path) -> None:
    s = load_settings(data_dir=tmp_path)
    assert s.retention_defaults == Retention("90d", NO_AGGREGATES)
    off = load_settings(data_dir=tmp_path, history_retention="off", aggregate_retention="0")
    assert off.retention_defaults == Retention(FOREVER, NO_AGGREGATES)
    kept = load_settings(data_dir=tmp_path, history_retention="0", aggregate_retention="2w")
    assert kept.retention_defaults == Retention(FOREVER, "2w")


def test_bad_retention_settings_fail_the_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_settings(data_dir=tmp_path, history_retention="90", aggregate_retention="1s")
    text = str(caught.value)
    assert "history_retention" in text and "aggregate_retention" in text
