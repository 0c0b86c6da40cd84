"""Telemetry in and out, dead letters and ingest counters."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from fogline.api.schemas.common import Out, Timestamp
from fogline.domain.telemetry import DeadLetter, DeviceStats, StoredDeadLetter
from fogline.domain.timeseries import Bucket, iso_from_ms
from fogline.ingest.intake import IntakeReceipt
from fogline.ingest.queries import BucketedSeries, DeadLetterPage, IngestSummary, Point, Series

# A value as its telemetry's dtype says: a number, a boolean or a string.
TelemetryValue = Any


class RejectedOut(Out):
    item: int | None = Field(description="the reading's index in the batch; null: the whole")
    telemetry: str | None = Field(description="the value refused; null: the whole reading")
    reason_code: str
    reason: str

    @classmethod
    def of(cls, d: DeadLetter) -> RejectedOut:
        return cls(
            item=d.item, telemetry=d.telemetry, reason_code=d.reason_code.value, reason=d.reason
        )


class IngestReceiptOut(Out):
    stream_seq: int = Field(description="where the message is in the telemetry stream")
    duplicate: bool = Field(description="the same `Idempotency-Key` was taken before")
    accepted_values: int = Field(
        description="values that will be stored: values of one asset, time and telemetry sent "
        "twice in the message (e.g. two readings without `ts`) count once"
    )
    merged_values: int = Field(
        0, description="values sent that land on the same asset, time and telemetry as another"
    )
    rejected: list[RejectedOut] = Field(description="what the historian will dead-letter")

    @classmethod
    def of(cls, receipt: IntakeReceipt) -> IngestReceiptOut:
        return cls(
            stream_seq=receipt.stream_seq,
            duplicate=receipt.duplicate,
            accepted_values=receipt.preview.value_count,
            merged_values=receipt.preview.merged,
            rejected=[RejectedOut.of(d) for d in receipt.preview.dead_letters],
        )


class LatestValueOut(Out):
    ts: int = Field(description="epoch ms")
    time: Timestamp
    value: TelemetryValue

    @classmethod
    def of(cls, p: Point) -> LatestValueOut:
        return cls(ts=p.ts, time=iso_from_ms(p.ts), value=p.value)


class LatestOut(Out):
    asset: str
    values: dict[str, LatestValueOut]

    @classmethod
    def of(cls, asset: str, points: dict[str, Point]) -> LatestOut:
        return cls(asset=asset, values={name: LatestValueOut.of(p) for name, p in points.items()})


class RawSeriesOut(Out):
    unit: str | None
    truncated: bool = Field(description="more points than `limit` were there")
    points: list[tuple[int, TelemetryValue]] = Field(description="[epoch ms, value] pairs")

    @classmethod
    def of(cls, s: Series) -> RawSeriesOut:
        return cls(unit=s.unit, truncated=s.truncated, points=[(p.ts, p.value) for p in s.points])


class BucketOut(Out):
    ts: int = Field(description="the bucket's start, epoch ms")
    avg: float | None = Field(description="null for string telemetry")
    min: float | None
    max: float | None
    count: int

    @classmethod
    def of(cls, b: Bucket) -> BucketOut:
        return cls(ts=b.start_ms, avg=b.avg, min=b.min, max=b.max, count=b.count)


class BucketedSeriesOut(Out):
    unit: str | None
    buckets: list[BucketOut]

    @classmethod
    def of(cls, s: BucketedSeries) -> BucketedSeriesOut:
        return cls(unit=s.unit, buckets=[BucketOut.of(b) for b in s.buckets])


class RawHistoryOut(Out):
    asset: str
    start: int = Field(serialization_alias="from", description="epoch ms")
    end: int = Field(serialization_alias="to", description="epoch ms")
    resolution: Literal["raw"] = Field(
        description="raw points only: readings past the history retention are gone (their "
        "hourly aggregates, where kept, answer a `bucket` of whole hours)"
    )
    series: dict[str, RawSeriesOut]


class BucketedHistoryOut(Out):
    asset: str
    start: int = Field(serialization_alias="from", description="epoch ms")
    end: int = Field(serialization_alias="to", description="epoch ms")
    bucket_ms: int
    resolution: Literal["raw", "hourly", "mixed"] = Field(
        description="where the buckets came from: raw readings, the hourly aggregates of "
        "readings past the history retention (buckets of whole hours only), or both"
    )
    series: dict[str, BucketedSeriesOut]


class DeviceStatsOut(Out):
    device: str
    messages: int
    values: int
    dead_letters: int
    last_seen: Timestamp

    @classmethod
    def of(cls, s: DeviceStats) -> DeviceStatsOut:
        return cls(
            device=s.device,
            messages=s.messages_total,
            values=s.values_total,
            dead_letters=s.dead_letters_total,
            last_seen=iso_from_ms(s.last_seen_ms),
        )


class DeadLetterOut(Out):
    id: int
    device: str
    received_at: Timestamp
    reason_code: str
    reason: str
    item: int | None
    asset: str | None
    telemetry: str | None
    stream_seq: int | None
    payload: str | None = Field(description="what was sent, as far as it could be kept")

    @classmethod
    def of(cls, stored: StoredDeadLetter) -> DeadLetterOut:
        d = stored.letter
        return cls(
            id=stored.id,
            device=d.device,
            received_at=iso_from_ms(d.received_at),
            reason_code=d.reason_code.value,
            reason=d.reason,
            item=d.item,
            asset=d.asset,
            telemetry=d.telemetry,
            stream_seq=d.stream_seq,
            payload=d.payload,
        )


class DeadLettersOut(Out):
    total: int = Field(description="every dead letter of the tenant, not only these")
    by_reason: dict[str, int]
    items: list[DeadLetterOut]

    @classmethod
    def of(cls, page: DeadLetterPage) -> DeadLettersOut:
        return cls(
            total=page.total,
            by_reason=page.by_reason,
            items=[DeadLetterOut.of(d) for d in page.letters],
        )


class IngestStatsOut(Out):
    messages: int
    values: int
    dead_letters: int
    dead_letters_by_reason: dict[str, int]
    devices: list[DeviceStatsOut]

    @classmethod
    def of(cls, summary: IngestSummary) -> IngestStatsOut:
        return cls(
            messages=summary.messages,
            values=summary.values,
            dead_letters=summary.dead_letters,
            dead_letters_by_reason=summary.dead_letters_by_reason,
            devices=[DeviceStatsOut.of(s) for s in summary.devices],
        )
