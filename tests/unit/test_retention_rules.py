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
    asset_type_problems,
    coherence_problems,
    parse_override,
    platform_default,
    resolve,
    tenant_problems,
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
    assert coherence_problems(Retention("forever", "forever")) == []
    assert coherence_problems(Retention("forever", "none")) == []
    (problem,) = coherence_problems(Retention("30d", "30d"))
    assert problem.field == "aggregates" and "expire before the readings" in problem.reason
    # Nothing expires under a history kept forever: finite aggregates would mean nothing.
    (problem,) = coherence_problems(Retention("forever", "1d"))
    assert "nothing expires to aggregate" in problem.reason


def test_a_tenant_change_is_checked_for_every_asset_type_inheriting_from_it() -> None:
    platform = platform_default("90d", "off")
    motor = RetentionOverride(aggregates="1d")  # coherent only while motor's history is forever
    assert asset_type_problems(platform, None, "motor", RetentionOverride(FOREVER, FOREVER)) == []
    problems = tenant_problems(
        platform, RetentionOverride(history="30d"), {"motor": motor, "pump": None}
    )
    (problem,) = problems
    assert problem.field == "asset_types.motor.aggregates"
    assert "asset type 'motor': aggregates kept 1d (from asset-type)" in problem.reason
    assert "history 30d, from tenant" in problem.reason
    (own,) = tenant_problems(platform, RetentionOverride(aggregates="2d"), {})
    assert own.reason.startswith("tenant: ")
    assert len(tenant_problems(platform, RetentionOverride(aggregates="2d"), {"p": None})) == 2


def test_settings_default_to_a_bounded_history(tmp_path: Path) -> None:
    s = load_settings(data_dir=tmp_path)
    assert s.retention_defaults == Retention("90d", NO_AGGREGATES)
    off = load_settings(data_dir=tmp_path, history_retention="off", aggregate_retention="0")
    assert off.retention_defaults == Retention(FOREVER, NO_AGGREGATES)
    kept = load_settings(data_dir=tmp_path, history_retention="0", aggregate_retention="forever")
    assert kept.retention_defaults == Retention(FOREVER, FOREVER)
    aggregated = load_settings(data_dir=tmp_path, aggregate_retention="104w")
    assert aggregated.retention_defaults == Retention("90d", "104w")


def test_bad_retention_settings_fail_the_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_settings(data_dir=tmp_path, history_retention="90", aggregate_retention="1s")
    text = str(caught.value)
    assert "history_retention" in text and "aggregate_retention" in text


@pytest.mark.parametrize(
    ("history", "aggregates", "fragment"),
    [
        ("90d", "1h", "expire before the readings"),  # against the default history
        ("30d", "30d", "expire before the readings"),
        ("off", "2w", "nothing expires to aggregate"),
    ],
)
def test_incoherent_retention_settings_fail_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, history: str, aggregates: str, fragment: str
) -> None:
    monkeypatch.setenv("FOGLINE_HISTORY_RETENTION", history)
    monkeypatch.setenv("FOGLINE_AGGREGATE_RETENTION", aggregates)
    with pytest.raises(ConfigurationError) as caught:
        load_settings(data_dir=tmp_path)
    assert "aggregate_retention" in str(caught.value) and fragment in str(caught.value)
