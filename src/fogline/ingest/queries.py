"""Reading telemetry back (latest values, raw history, downsampled buckets), and what ingest
made of it (dead letters, counters per device)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Literal

from fogline.domain.assets import AssetType, DType
from fogline.domain.errors import InvalidInput, Problem
from fogline.domain.telemetry import DeviceStats, StoredDeadLetter
from fogline.domain.timeseries import Bucket, check_bucketing, now_ms
from fogline.ingest.export import HistoryExporter
from fogline.ingest.validation import decode_value
from fogline.store.assets import AssetStore
from fogline.store.telemetry import TelemetryStore, ValueKind

MAX_RAW_POINTS = 100_000

_KIND_OF_DTYPE = {
    DType.FLOAT: ValueKind.NUMBER,
    DType.INT: ValueKind.NUMBER,
    DType.BOOL: ValueKind.BOOL,
    DType.STRING: ValueKind.TEXT,
}


@dataclass(frozen=True)
class Point:
    ts: int
    value: Any


@dataclass(frozen=True)
class Series:
    name: str
    unit: str | None
    points: list[Point]
    truncated: bool


@dataclass(frozen=True)
class BucketedSeries:
    name: str
    unit: str | None
    buckets: list[Bucket]


# Where bucketed history came from: raw readings, the hourly aggregates of expired ones, or both.
Resolution = Literal["raw", "hourly", "mixed"]


@dataclass(frozen=True)
class BucketedHistory:
    series: list[BucketedSeries]
    resolution: Resolution


def _resolution(from_raw: bool, from_aggregates: bool) -> Resolution:
    if from_aggregates:
        return "mixed" if from_raw else "hourly"
    return "raw"


@dataclass(frozen=True)
class DeadLetterPage:
    letters: list[StoredDeadLetter]
    by_reason: dict[str, int]  # every dead letter of the tenant, not only this page's

    @property
    def total(self) -> int:
        return sum(self.by_reason.values())


@dataclass(frozen=True)
class IngestSummary:
    """A tenant's ingest counters: per device, and summed."""

    devices: list[DeviceStats]
    dead_letters_by_reason: dict[str, int]

    @property
    def messages(self) -> int:
        return sum(s.messages_total for s in self.devices)

    @property
    def values(self) -> int:
        return sum(s.values_total for s in self.devices)

    @property
    def dead_letters(self) -> int:
        return sum(self.dead_letters_by_reason.values())


class TelemetryQueries:
    def __init__(self, assets: AssetStore, store: TelemetryStore) -> None:
        self.assets = assets
        self.store = store
        # History as CSV, read from the store a page at a time.
        self.exporter = HistoryExporter(assets, store)

    async def _asset_type(self, tenant: str, asset_id: str, keys: list[str]) -> AssetType:
        asset = await asyncio.to_thread(self.assets.get_asset, tenant, asset_id)
        asset_type = await asyncio.to_thread(self.assets.get_asset_type, tenant, asset.asset_type)
        unknown = [k for k in keys if asset_type.definition(k) is None]
        if unknown:
            raise InvalidInput.of(
                [Problem("keys", f"asset type {asset_type.id!r} defines no {k!r}") for k in unknown]
            )
        return asset_type

    async def latest(self, tenant: str, asset_id: str, keys: list[str]) -> dict[str, Point]:
        asset_type = await self._asset_type(tenant, asset_id, keys)
        # Not after the server's now: a reading stamped ahead by a device's clock waits its turn.
        stored = await asyncio.to_thread(self.store.latest, tenant, asset_id, keys, now_ms())
        result: dict[str, Point] = {}
        for name, v in sorted(stored.items()):
            definition = asset_type.definition(name)
            if definition is not None:
                result[name] = Point(v.ts, decode_value(definition.dtype, v.value))
        return result

    async def history(
        self, tenant: str, asset_id: str, keys: list[str], start: int, end: int, limit: int
    ) -> list[Series]:
        if end <= start:
            raise InvalidInput.of([Problem("to", "must be after 'from'")])
        if not 1 <= limit <= MAX_RAW_POINTS:
            raise InvalidInput.of([Problem("limit", f"must be between 1 and {MAX_RAW_POINTS}")])
        asset_type = await self._asset_type(tenant, asset_id, keys)
        stored = await asyncio.to_thread(
            self.store.history, tenant, asset_id, keys, start, end, limit
        )
        result = []
        for name, values in stored.items():
            definition = asset_type.definition(name)
            if definition is None:
                continue
            points = [Point(v.ts, decode_value(definition.dtype, v.value)) for v in values]
            result.append(Series(name, definition.unit, points, len(points) >= limit))
        return result

    async def downsample(
        self, tenant: str, asset_id: str, keys: list[str], start: int, end: int, bucket_ms: int
    ) -> BucketedHistory:
        """Buckets from the raw readings, and, for buckets of whole hours, from the hourly
        aggregates that expired readings left behind."""
        check_bucketing(start, end, bucket_ms)
        asset_type = await self._asset_type(tenant, asset_id, keys)
        kinds = {
            d.name: _KIND_OF_DTYPE[d.dtype]
            for d in asset_type.telemetry
            if not keys or d.name in keys
        }
        stored = await asyncio.to_thread(
            self.store.downsample_with_aggregates, tenant, asset_id, kinds, start, end, bucket_ms
        )
        result = []
        for name, buckets in stored.series.items():
            definition = asset_type.definition(name)
            if definition is not None:
                result.append(BucketedSeries(name, definition.unit, buckets))
        return BucketedHistory(result, _resolution(stored.from_raw, stored.from_aggregates))

    async def device_stats(self, tenant: str) -> dict[str, DeviceStats]:
        """The ingest counters of each device that has sent anything, by device id."""
        stats = await asyncio.to_thread(self.store.device_stats, tenant)
        return {s.device: s for s in stats}

    async def dead_letters(
        self, tenant: str, device: str | None, since_ms: int | None, limit: int
    ) -> DeadLetterPage:
        letters = await asyncio.to_thread(self.store.dead_letters, tenant, device, since_ms, limit)
        counts = await asyncio.to_thread(self.store.dead_letter_counts, tenant)
        return DeadLetterPage(letters, counts)

    async def summary(self, tenant: str) -> IngestSummary:
        # Dead letters first: the historian commits them with the device counters in one
        # transaction, so counters read after them include at least what they counted.
        counts = await asyncio.to_thread(self.store.dead_letter_counts, tenant)
        stats = await asyncio.to_thread(self.store.device_stats, tenant)
        return IngestSummary(stats, counts)
