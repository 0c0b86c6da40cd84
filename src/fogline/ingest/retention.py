"""Retention of the SQL history: the policies callers see and set, and the job that deletes
expired readings (rolling them up into hourly aggregates first where a policy asks for it).

The job runs in the platform process, in short transactions of at most `batch_rows` readings
each with a pause between them, so the historian (another process, committing every batch it
pulls) never waits on it for long, on SQLite's single writer least of all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from fogline.domain.errors import InvalidInput, Problem
from fogline.domain.retention import (
    Retention,
    RetentionOverride,
    asset_type_problems,
    parse_override,
    resolve,
    tenant_problems,
)
from fogline.domain.timeseries import now_ms
from fogline.store.assets import AssetStore
from fogline.store.retention import RetainedSeries, RetentionStore, TenantOverrides

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AssetTypeRetention:
    asset_type: str
    override: RetentionOverride | None
    effective: Retention


@dataclass(frozen=True)
class TenantRetention:
    tenant: str
    platform: Retention
    override: RetentionOverride | None
    effective: Retention
    asset_types: list[AssetTypeRetention]


class RetentionPolicies:
    """What callers see and set: the platform default, a tenant's override, its asset types'."""

    def __init__(self, store: RetentionStore, assets: AssetStore, platform: Retention) -> None:
        self.store = store
        self.assets = assets
        self.platform = platform

    async def tenant(self, tenant: str) -> TenantRetention:
        override = await asyncio.to_thread(self.store.tenant_override, tenant)
        types = await asyncio.to_thread(self.assets.list_asset_types, tenant)
        overrides = await asyncio.to_thread(self.store.asset_type_overrides, tenant)
        return TenantRetention(
            tenant,
            self.platform,
            override,
            resolve(self.platform, override),
            [
                AssetTypeRetention(
                    t.id,
                    overrides.get(t.id),
                    resolve(self.platform, override, overrides.get(t.id)),
                )
                for t in types
            ],
        )

    async def set_tenant(
        self, tenant: str, history: str | None, aggregates: str | None
    ) -> TenantRetention:
        override = parse_override(history, aggregates)

        def check(now: TenantOverrides) -> None:
            # The tenant's policy and each asset type's, resolved: every one inherits from it.
            _refuse(tenant_problems(self.platform, now.tenant, now.asset_types))

        await asyncio.to_thread(self.store.set_tenant_override, tenant, override, check)
        log.info(
            "retention.policy_set",
            extra={"fields": {"tenant": tenant, "history": history, "aggregates": aggregates}},
        )
        return await self.tenant(tenant)

    async def asset_type(self, tenant: str, asset_type: str) -> AssetTypeRetention:
        await asyncio.to_thread(self.assets.get_asset_type, tenant, asset_type)  # or NotFound
        above = await asyncio.to_thread(self.store.tenant_override, tenant)
        overrides = await asyncio.to_thread(self.store.asset_type_overrides, tenant)
        own = overrides.get(asset_type)
        return AssetTypeRetention(asset_type, own, resolve(self.platform, above, own))

    async def set_asset_type(
        self, tenant: str, asset_type: str, history: str | None, aggregates: str | None
    ) -> AssetTypeRetention:
        override = parse_override(history, aggregates)
        await asyncio.to_thread(self.assets.get_asset_type, tenant, asset_type)  # or NotFound

        def check(now: TenantOverrides) -> None:
            own = now.asset_types.get(asset_type)
            _refuse(asset_type_problems(self.platform, now.tenant, asset_type, own))

        await asyncio.to_thread(
            self.store.set_asset_type_override, tenant, asset_type, override, check
        )
        log.info(
            "retention.policy_set",
            extra={
                "fields": {
                    "tenant": tenant,
                    "asset_type": asset_type,
                    "history": history,
                    "aggregates": aggregates,
                }
            },
        )
        return await self.asset_type(tenant, asset_type)


def _refuse(problems: list[Problem]) -> None:
    if problems:
        raise InvalidInput.of(problems, "retention policy")


@dataclass(frozen=True)
class RetentionJobSettings:
    interval_s: float = 3600.0
    batch_rows: int = 5000
    # Between two batches: the historian's commits get the database in the meantime.
    pause_s: float = 0.02


@dataclass
class RetentionStats:
    """What the job did since the platform started, for /api/v1/system."""

    runs: int = 0
    failures: int = 0
    readings_deleted: int = 0
    aggregates_written: int = 0
    aggregates_deleted: int = 0
    last_run_at_ms: int | None = None
    last_run_s: float | None = None
    last_run_readings_deleted: int = 0
    last_error: str | None = None
    oldest_reading_ms: int | None = None  # the oldest raw reading kept, after the last run


@dataclass
class _TenantTally:
    readings_deleted: int = 0
    aggregates_written: int = 0
    aggregates_deleted: int = 0


@dataclass
class RunReport:
    readings_deleted: int = 0
    aggregates_written: int = 0
    aggregates_deleted: int = 0
    series: int = 0
    oldest_reading_ms: int | None = None
    by_tenant: dict[str, _TenantTally] = field(default_factory=dict)


class RetentionJob:
    def __init__(
        self,
        store: RetentionStore,
        platform: Retention,
        settings: RetentionJobSettings,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.store = store
        self.platform = platform
        self.settings = settings
        self.clock = clock
        self.stats = RetentionStats()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception as exc:  # the next run tries again; the database may be back
                self.stats.failures += 1
                self.stats.last_error = f"{type(exc).__name__}: {exc}"[:500]
                log.warning(
                    "retention.run_failed", extra={"fields": {"error": self.stats.last_error}}
                )
            await asyncio.sleep(self.settings.interval_s)

    async def run_once(self) -> RunReport:
        """One pass over every series: expire what its policy no longer keeps."""
        async with self._lock:
            started = time.monotonic()
            now = self.clock()
            tenants, types = await asyncio.to_thread(self.store.all_overrides)
            report = RunReport()
            for series in await asyncio.to_thread(self.store.retained_series):
                own = types.get((series.tenant, series.asset_type)) if series.asset_type else None
                policy = resolve(self.platform, tenants.get(series.tenant), own)
                await self._expire(series, policy, now, report)
            self._record(report, now, time.monotonic() - started)
            return report

    async def _expire(
        self, series: RetainedSeries, policy: Retention, now: int, report: RunReport
    ) -> None:
        tally = report.by_tenant.setdefault(series.tenant, _TenantTally())
        history_ms = policy.history_ms
        if history_ms is not None:
            while True:
                batch = await asyncio.to_thread(
                    self.store.expire_readings,
                    series.series_id,
                    now - history_ms,
                    self.settings.batch_rows,
                    policy.aggregated,
                )
                tally.readings_deleted += batch.deleted
                tally.aggregates_written += batch.aggregated
                if batch.deleted < self.settings.batch_rows:
                    break
                await asyncio.sleep(self.settings.pause_s)
        # Aggregates left from a policy that made them follow the history once it makes none.
        aggregates_ms = policy.aggregates_ms if policy.aggregated else history_ms
        if aggregates_ms is not None:
            while True:
                deleted = await asyncio.to_thread(
                    self.store.expire_aggregates,
                    series.series_id,
                    now - aggregates_ms,
                    self.settings.batch_rows,
                )
                tally.aggregates_deleted += deleted
                if deleted < self.settings.batch_rows:
                    break
                await asyncio.sleep(self.settings.pause_s)
        oldest = await asyncio.to_thread(self.store.oldest_reading, series.series_id)
        if oldest is not None:
            known = report.oldest_reading_ms
            report.oldest_reading_ms = oldest if known is None else min(known, oldest)
        report.series += 1

    def _record(self, report: RunReport, now: int, took_s: float) -> None:
        for tenant, tally in report.by_tenant.items():
            report.readings_deleted += tally.readings_deleted
            report.aggregates_written += tally.aggregates_written
            report.aggregates_deleted += tally.aggregates_deleted
            if tally.readings_deleted or tally.aggregates_deleted:
                log.info(
                    "retention.expired",
                    extra={
                        "fields": {
                            "tenant": tenant,
                            "readings_deleted": tally.readings_deleted,
                            "aggregates_written": tally.aggregates_written,
                            "aggregates_deleted": tally.aggregates_deleted,
                        }
                    },
                )
        s = self.stats
        s.runs += 1
        s.readings_deleted += report.readings_deleted
        s.aggregates_written += report.aggregates_written
        s.aggregates_deleted += report.aggregates_deleted
        s.last_run_at_ms = now
        s.last_run_s = round(took_s, 3)
        s.last_run_readings_deleted = report.readings_deleted
        s.last_error = None
        s.oldest_reading_ms = report.oldest_reading_ms
        log.info(
            "retention.run",
            extra={
                "fields": {
                    "series": report.series,
                    "readings_deleted": report.readings_deleted,
                    "aggregates_written": report.aggregates_written,
                    "aggregates_deleted": report.aggregates_deleted,
                    "oldest_reading_ms": report.oldest_reading_ms,
                    "took_s": s.last_run_s,
                }
            },
        )
