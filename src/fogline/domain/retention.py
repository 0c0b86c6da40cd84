"""How long the SQL telemetry history is kept, and whether expiring readings leave hourly
aggregates behind.

A policy has two parts, each set at three levels: the platform default (settings), a tenant's
override, and an asset type's override; the most specific level that sets a part wins.

- history: how long raw readings are kept (a duration, or `forever`).
- aggregates: how long the hourly aggregates of expired readings are kept (a duration,
  `forever`, or `none`: no aggregates). Both count from the reading's own time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from fogline.domain.errors import InvalidInput, Problem
from fogline.domain.timeseries import parse_duration_ms

HOUR_MS = 3_600_000
# Expired readings are rolled up into buckets of this size (epoch-aligned).
AGGREGATE_BUCKET_MS = HOUR_MS
# Shorter than this is a unit mistake more often than a wish ("90m" for "90d").
MIN_RETENTION_MS = HOUR_MS

FOREVER = "forever"
NO_AGGREGATES = "none"
# The words a platform setting may use to turn a part off (keep forever, make no aggregates).
_OFF_WORDS = frozenset({"0", "off"})

PLATFORM, TENANT, ASSET_TYPE = "platform", "tenant", "asset-type"


@dataclass(frozen=True)
class RetentionOverride:
    """What one level sets: a part left None is inherited from the level above."""

    history: str | None = None
    aggregates: str | None = None


@dataclass(frozen=True)
class Retention:
    """The policy in force, and the level each part comes from."""

    history: str
    aggregates: str
    history_from: str = PLATFORM
    aggregates_from: str = PLATFORM

    @property
    def history_ms(self) -> int | None:
        """None: kept forever."""
        return None if self.history == FOREVER else parse_duration_ms(self.history)

    @property
    def aggregated(self) -> bool:
        return self.aggregates != NO_AGGREGATES

    @property
    def aggregates_ms(self) -> int | None:
        """How long aggregates are kept; None: forever (or none are made: see `aggregated`)."""
        if self.aggregates in (FOREVER, NO_AGGREGATES):
            return None
        return parse_duration_ms(self.aggregates)


def _duration_problem(text: str, field: str) -> str | None:
    try:
        ms = parse_duration_ms(text, field)
    except InvalidInput as exc:
        return exc.problems[0].reason
    if ms < MIN_RETENTION_MS:
        return f"{text!r} is shorter than the shortest retention, 1h"
    return None


def history_problem(text: str, field: str = "history") -> Problem | None:
    if text == FOREVER:
        return None
    reason = _duration_problem(text, field)
    if reason is None:
        return None
    return Problem(field, f"{reason}; or {FOREVER!r}")


def aggregates_problem(text: str, field: str = "aggregates") -> Problem | None:
    if text in (FOREVER, NO_AGGREGATES):
        return None
    reason = _duration_problem(text, field)
    if reason is None:
        return None
    return Problem(field, f"{reason}; or {FOREVER!r}, or {NO_AGGREGATES!r} for no aggregates")


def parse_override(history: str | None, aggregates: str | None) -> RetentionOverride:
    """An override as a caller gives it; every problem at once."""
    history = None if history is None else history.strip()
    aggregates = None if aggregates is None else aggregates.strip()
    problems = [
        p
        for p in (
            None if history is None else history_problem(history),
            None if aggregates is None else aggregates_problem(aggregates),
        )
        if p is not None
    ]
    if problems:
        raise InvalidInput.of(problems, "retention policy")
    return RetentionOverride(history, aggregates)


def platform_default(history: str, aggregates: str) -> Retention:
    """The platform's settings, where '0' and 'off' turn a part off: history kept forever,
    no aggregates. Off must be said: the default keeps history for a bounded time."""
    history, aggregates = history.strip(), aggregates.strip()
    history = FOREVER if history in _OFF_WORDS else history
    aggregates = NO_AGGREGATES if aggregates in _OFF_WORDS else aggregates
    problems = [
        p
        for p in (
            history_problem(history, "history_retention"),
            aggregates_problem(aggregates, "aggregate_retention"),
        )
        if p is not None
    ]
    if problems:
        raise InvalidInput.of(problems, "retention settings")
    policy = Retention(history, aggregates)
    problems = coherence_problems(policy, field="aggregate_retention")
    if problems:
        raise InvalidInput.of(problems, "retention settings")
    return policy


def resolve(
    platform: Retention,
    tenant: RetentionOverride | None,
    asset_type: RetentionOverride | None = None,
) -> Retention:
    """The policy in force for one asset type of one tenant: the most specific level wins."""
    result = platform
    for level, override in ((TENANT, tenant), (ASSET_TYPE, asset_type)):
        if override is None:
            continue
        if override.history is not None:
            result = Retention(override.history, result.aggregates, level, result.aggregates_from)
        if override.aggregates is not None:
            result = Retention(result.history, override.aggregates, result.history_from, level)
    return result


def coherence_problems(
    policy: Retention, field: str = "aggregates", whose: str = ""
) -> list[Problem]:
    """Aggregates must outlive the readings they summarise: aggregates that die first would be
    made and deleted at once. A history kept forever leaves nothing to aggregate, so it takes
    aggregates `forever` or `none`, not a duration that would mean nothing."""
    history_ms, aggregates_ms = policy.history_ms, policy.aggregates_ms
    if not policy.aggregated or aggregates_ms is None:
        return []
    where = f"{whose}: " if whose else ""
    if history_ms is None:
        return [
            Problem(
                field,
                f"{where}aggregates kept {policy.aggregates} (from {policy.aggregates_from}) "
                f"with history {FOREVER} (from {policy.history_from}): nothing expires to "
                f"aggregate; make the aggregates {FOREVER!r} or {NO_AGGREGATES!r}, or the "
                "history a duration",
            )
        ]
    if aggregates_ms > history_ms:
        return []
    return [
        Problem(
            field,
            f"{where}aggregates kept {policy.aggregates} (from {policy.aggregates_from}) "
            f"would expire before the readings they summarise (history {policy.history}, "
            f"from {policy.history_from}): make them longer, or {NO_AGGREGATES!r}",
        )
    ]


def tenant_problems(
    platform: Retention,
    tenant: RetentionOverride | None,
    asset_types: Mapping[str, RetentionOverride | None],
) -> list[Problem]:
    """A tenant's policy and every asset type's that inherits from it, resolved: what a change
    at the tenant's level must leave coherent. Each problem names the asset type it is in."""
    problems = coherence_problems(resolve(platform, tenant), whose="tenant")
    for type_id in sorted(asset_types):
        problems += asset_type_problems(platform, tenant, type_id, asset_types[type_id])
    return problems


def asset_type_problems(
    platform: Retention,
    tenant: RetentionOverride | None,
    type_id: str,
    own: RetentionOverride | None,
) -> list[Problem]:
    return coherence_problems(
        resolve(platform, tenant, own),
        field=f"asset_types.{type_id}.aggregates",
        whose=f"asset type {type_id!r}",
    )
