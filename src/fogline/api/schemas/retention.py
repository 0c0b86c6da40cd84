"""Retention of the SQL history: the policy of a tenant and of its asset types."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fogline.api.schemas.common import Out, Strict
from fogline.domain.retention import Retention, RetentionOverride
from fogline.ingest.retention import AssetTypeRetention, TenantRetention

Level = Literal["platform", "tenant", "asset-type"]

_HISTORY = "how long raw readings are kept: a duration (1h at least: 12h, 90d, 52w) or `forever`"
_AGGREGATES = (
    "how long the hourly aggregates (min, max, mean, count) of expired readings are kept: a "
    "duration longer than the history in force, `forever`, or `none` for no aggregates (with "
    "the history kept `forever`: `forever` or `none` only); checked for the tenant and every "
    "asset type inheriting from it"
)


class RetentionIn(Strict):
    """A level's override; a part left out or null is inherited from the level above."""

    history: str | None = Field(default=None, max_length=32, description=_HISTORY)
    aggregates: str | None = Field(default=None, max_length=32, description=_AGGREGATES)


class RetentionOverrideOut(Out):
    history: str | None = Field(description="null: inherited")
    aggregates: str | None = Field(description="null: inherited")

    @classmethod
    def of(cls, override: RetentionOverride | None) -> RetentionOverrideOut:
        if override is None:
            return cls(history=None, aggregates=None)
        return cls(history=override.history, aggregates=override.aggregates)


class EffectiveRetentionOut(Out):
    history: str = Field(description=_HISTORY)
    aggregates: str = Field(description=_AGGREGATES)
    history_from: Level = Field(description="the level that set it")
    aggregates_from: Level

    @classmethod
    def of(cls, policy: Retention) -> EffectiveRetentionOut:
        return cls(
            history=policy.history,
            aggregates=policy.aggregates,
            history_from=_level(policy.history_from),
            aggregates_from=_level(policy.aggregates_from),
        )


def _level(level: str) -> Level:
    if level == "tenant":
        return "tenant"
    if level == "asset-type":
        return "asset-type"
    return "platform"


class AssetTypeRetentionOut(Out):
    asset_type: str
    override: RetentionOverrideOut = Field(description="what the asset type sets")
    effective: EffectiveRetentionOut = Field(description="what is in force for its assets")

    @classmethod
    def of(cls, r: AssetTypeRetention) -> AssetTypeRetentionOut:
        return cls(
            asset_type=r.asset_type,
            override=RetentionOverrideOut.of(r.override),
            effective=EffectiveRetentionOut.of(r.effective),
        )


class TenantRetentionOut(Out):
    tenant: str
    platform: EffectiveRetentionOut = Field(description="the platform's default")
    override: RetentionOverrideOut = Field(description="what the tenant sets")
    effective: EffectiveRetentionOut = Field(
        description="in force for the tenant's asset types that set nothing of their own"
    )
    asset_types: list[AssetTypeRetentionOut]

    @classmethod
    def of(cls, r: TenantRetention) -> TenantRetentionOut:
        return cls(
            tenant=r.tenant,
            platform=EffectiveRetentionOut.of(r.platform),
            override=RetentionOverrideOut.of(r.override),
            effective=EffectiveRetentionOut.of(r.effective),
            asset_types=[AssetTypeRetentionOut.of(t) for t in r.asset_types],
        )


class RetentionJobOut(Out):
    """What the retention job did since the platform started."""

    runs: int
    failures: int
    readings_deleted: int
    aggregates_written: int = Field(description="hourly roll-ups written or added to")
    aggregates_deleted: int
    last_run_at_ms: int | None = Field(description="when the last run started, epoch ms")
    last_run_s: float | None = Field(description="how long it took")
    last_run_readings_deleted: int
    last_error: str | None = Field(description="why the last run failed; null once one passes")
    oldest_reading_ms: int | None = Field(description="the oldest raw reading kept, epoch ms")
