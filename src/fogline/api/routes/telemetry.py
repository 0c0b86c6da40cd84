"""Telemetry in (HTTP ingest) and out (latest, history, live), and dead letters."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from sse_starlette.sse import EventSourceResponse

from fogline.api.deps import ScopedTenant, Sender, Services, SlugPath
from fogline.api.limits import BodyKind, BodyTooLarge, body
from fogline.api.problems import (
    IN_TENANT,
    RAW_BODY,
    UNAVAILABLE,
    problem,
)
from fogline.api.routing import FoglineRoute
from fogline.api.schemas.telemetry import (
    BucketedHistoryOut,
    BucketedSeriesOut,
    DeadLettersOut,
    IngestReceiptOut,
    IngestStatsOut,
    LatestOut,
    RawHistoryOut,
    RawSeriesOut,
)
from fogline.api.streams import while_key_valid
from fogline.domain.ids import SLUG_PATTERN
from fogline.domain.timeseries import (
    now_ms,
    parse_duration_ms,
    parse_query_range,
    parse_query_time,
)
from fogline.ingest.export import CSV_MEDIA_TYPE, PARQUET_MEDIA_TYPE
from fogline.ingest.intake import TelemetryFateUnknown, TelemetryNotStored
from fogline.ingest.queries import MAX_RAW_POINTS
from fogline.models.manifest import SEMVER_PATTERN

router = APIRouter(tags=["telemetry"], route_class=FoglineRoute, responses=IN_TENANT)

LIVE_QUEUE_LIMIT = 1000

_TIME_BOUND = (
    "epoch ms, ISO 8601, `now`, or relative to now like `-15m` or `+24h` (`%2B24h` in a URL); "
    "1970 to the year 9999"
)

TelemetryKeys = Annotated[str | None, Query(description="comma-separated telemetry names")]


def _keys(keys: str | None) -> list[str]:
    return [k.strip() for k in keys.split(",") if k.strip()] if keys else []


@router.post(
    "/tenants/{tenant}/devices/{device}/telemetry",
    status_code=202,
    response_model=IngestReceiptOut,
    responses={**RAW_BODY, **UNAVAILABLE},
    openapi_extra={
        "requestBody": {
            # Any body is taken, as over MQTT: what cannot be read becomes a dead letter.
            "required": False,
            "description": "what an MQTT message would carry: a reading, a list of readings "
            "or {'readings': [...]}; at most `max_message_bytes`",
            "content": {"application/json": {"schema": {}}},
        }
    },
)
@body(BodyKind.TELEMETRY)
async def ingest(
    request: Request,
    sender: Sender,
    svc: Services,
    idempotency_key: Annotated[
        str | None,
        Header(
            max_length=200,
            description="makes a retry safe: requests of this device with the same key "
            "within 10 minutes are stored once, readings without `ts` at the time of the "
            "first receipt; send one whenever a request may be retried",
        ),
    ] = None,
) -> IngestReceiptOut | JSONResponse:
    """Telemetry for devices that cannot speak MQTT: the body is what an MQTT message would
    carry. It joins the same stream; what cannot be stored becomes a dead letter, and a body
    over the size limit is refused (413) as soon as it passes the limit, and dead-lettered.

    202 means the hot store keeps it. 503 (with `Retry-After`) means it was not stored
    (`stored: false`), or, when the hot store did not answer in time, that this could not be
    learned (`stored: null`): retry with the same `Idempotency-Key` and it is stored once."""
    tenant, device = sender
    try:
        payload = await request.body()
    except BodyTooLarge as exc:
        receipt = await svc.intake.refuse_too_large(tenant, device, exc.size, exc.limit)
    else:
        try:
            receipt = await svc.intake.publish(tenant, device, payload, idempotency_key)
        except (TelemetryNotStored, TelemetryFateUnknown) as exc:
            # `stored`: false, or null when it could not be learned (the detail says what to do).
            wait = {"Retry-After": str(exc.retry_after_s)}
            return problem(503, exc.message, headers=wait, stored=exc.stored)
    answer = IngestReceiptOut.of(receipt)
    if receipt.refused:
        rejected = [r.model_dump(mode="json") for r in answer.rejected]
        return problem(413, answer.rejected[0].reason, rejected=rejected)
    return answer


@router.get("/tenants/{tenant}/assets/{asset}/telemetry/latest")
async def latest(
    asset: SlugPath, tenant: ScopedTenant, svc: Services, keys: TelemetryKeys = None
) -> LatestOut:
    return LatestOut.of(asset, await svc.queries.latest(tenant, asset, _keys(keys)))


# A range's bounds, as history and export take them.
TimeFrom = Annotated[str, Query(alias="from", max_length=64, description=_TIME_BOUND)]
TimeTo = Annotated[str, Query(alias="to", max_length=64, description=_TIME_BOUND)]


@router.get("/tenants/{tenant}/assets/{asset}/telemetry/history")
async def history(
    asset: SlugPath,
    tenant: ScopedTenant,
    svc: Services,
    keys: TelemetryKeys = None,
    start: TimeFrom = "-1h",
    end: TimeTo = "now",
    bucket: Annotated[
        str | None, Query(max_length=20, description="downsample into buckets: 10s, 1m, 1h")
    ] = None,
    limit: Annotated[
        int, Query(ge=1, le=MAX_RAW_POINTS, description="raw points per telemetry at most")
    ] = 10_000,
) -> RawHistoryOut | BucketedHistoryOut:
    start_ms, end_ms = parse_query_range(start, end, now_ms())
    if bucket is None:
        series = await svc.queries.history(tenant, asset, _keys(keys), start_ms, end_ms, limit)
        return RawHistoryOut(
            asset=asset,
            start=start_ms,
            end=end_ms,
            resolution="raw",
            series={s.name: RawSeriesOut.of(s) for s in series},
        )
    bucket_ms = parse_duration_ms(bucket, "bucket")
    bucketed = await svc.queries.downsample(tenant, asset, _keys(keys), start_ms, end_ms, bucket_ms)
    return BucketedHistoryOut(
        asset=asset,
        start=start_ms,
        end=end_ms,
        bucket_ms=bucket_ms,
        resolution=bucketed.resolution,
        series={s.name: BucketedSeriesOut.of(s) for s in bucketed.series},
    )


@router.get(
    "/tenants/{tenant}/assets/{asset}/telemetry/export",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "CSV: `ts` (epoch ms), `time` (ISO 8601, UTC), then one column per "
            "telemetry; one line per reading, oldest first; strings quoted, a value the "
            "reading does not hold empty. Parquet (`format=parquet`): `ts` (timestamp, ms, UTC), "
            "`asset`, then one typed column per telemetry (float64, int64, bool, string; null "
            "where the reading does not hold it), a row group per page",
            "content": {
                CSV_MEDIA_TYPE.split(";")[0]: {"schema": {"type": "string"}},
                PARQUET_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}},
            },
        }
    },
)
async def export(
    asset: SlugPath,
    tenant: ScopedTenant,
    svc: Services,
    keys: TelemetryKeys = None,
    start: TimeFrom = "-1h",
    end: TimeTo = "now",
    file_format: Annotated[
        Literal["csv", "parquet"], Query(alias="format", description="csv or parquet")
    ] = "csv",
) -> StreamingResponse:
    """An asset's raw history as a file, streamed: the whole range, however long, read from
    the store a page at a time. The request is checked before the first byte is sent."""
    exporter = svc.queries.exporter
    plan = await exporter.plan(tenant, asset, _keys(keys), *parse_query_range(start, end, now_ms()))
    filename = f"{asset}-{plan.start}-{plan.end}.{file_format}"
    parquet = file_format == "parquet"
    return StreamingResponse(
        exporter.parquet(plan) if parquet else exporter.csv(plan),
        media_type=PARQUET_MEDIA_TYPE if parquet else CSV_MEDIA_TYPE,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@router.get(
    "/tenants/{tenant}/assets/{asset}/telemetry/live",
    response_class=EventSourceResponse,
    responses={
        200: {
            "description": "Server-Sent Events: `subscribed`, then `readings` per committed "
            "batch; `error` (a problem) and the end when the key stops being valid",
            "content": {
                "text/event-stream": {
                    "itemSchema": {
                        "type": "object",
                        "required": ["event", "data"],
                        "properties": {
                            "event": {"enum": ["subscribed", "readings", "error"]},
                            "data": {"type": "string", "contentMediaType": "application/json"},
                        },
                    }
                }
            },
        },
        **UNAVAILABLE,
    },
)
async def live(
    request: Request, asset: SlugPath, tenant: ScopedTenant, svc: Services
) -> EventSourceResponse:
    """Server-Sent Events: one `readings` event per committed message of this asset. The key
    is checked again every second: a revoked one ends the stream with an `error` event."""
    await svc.assets.get_asset(tenant, asset)
    queue: asyncio.Queue[bytes] = asyncio.Queue(LIVE_QUEUE_LIMIT)
    dropped = 0

    async def on_message(data: bytes) -> None:
        nonlocal dropped
        try:
            queue.put_nowait(data)
        except asyncio.QueueFull:  # a slow reader loses live events, never the history
            dropped += 1

    subscription = await svc.bus.subscribe_live(tenant, asset, on_message)

    async def events() -> AsyncIterator[dict[str, str]]:
        try:
            yield {"event": "subscribed", "data": f'{{"asset": "{asset}"}}'}
            async for event in while_key_valid(request, tenant, queue, _readings_event):
                yield event
        finally:
            await subscription.close()

    return EventSourceResponse(events(), ping=15)


def _readings_event(data: bytes) -> dict[str, str]:
    return {"event": "readings", "data": data.decode()}


# What a dead letter names as its source: a device, or a model version (model:<name>@<version>).
_SLUG = SLUG_PATTERN.strip("^$")
_VERSION = SEMVER_PATTERN.strip("^$")
SOURCE_PATTERN = rf"^(?:{_SLUG}|model:{_SLUG}@{_VERSION})$"


@router.get("/tenants/{tenant}/dead-letters")
async def dead_letters(
    tenant: ScopedTenant,
    svc: Services,
    device: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=200,
            pattern=SOURCE_PATTERN,
            description="a device id, or a model version's outputs: model:<name>@<version>",
        ),
    ] = None,
    since: Annotated[str | None, Query(max_length=64, description=_TIME_BOUND)] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> DeadLettersOut:
    since_ms = parse_query_time(since, now_ms(), "since") if since else None
    return DeadLettersOut.of(await svc.queries.dead_letters(tenant, device, since_ms, limit))


@router.get("/tenants/{tenant}/ingest/stats")
async def ingest_stats(tenant: ScopedTenant, svc: Services) -> IngestStatsOut:
    return IngestStatsOut.of(await svc.queries.summary(tenant))
