"""Telemetry in (HTTP ingest) and out (latest, history, live), and dead letters."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse
from sse_starlette.sse import EventSourceResponse

from fogline.api.deps import (
    ApiServices,
    SlugPath,
    device_sender,
    key_still_valid,
    services,
    tenant_scope,
)
from fogline.api.limits import BodyKind, BodyTooLarge, body
from fogline.api.problems import (
    IN_TENANT,
    RAW_BODY,
    STATUS_OF_KIND,
    UNAVAILABLE,
    problem,
)
from fogline.api.routing import FoglineRoute
from fogline.api.schemas import dead_letter_json, device_stats_json
from fogline.domain.ids import MAX_ID_LENGTH, SLUG_PATTERN
from fogline.domain.timeseries import iso_from_ms, now_ms, parse_duration_ms, parse_query_time
from fogline.ingest.queries import MAX_RAW_POINTS

router = APIRouter(tags=["telemetry"], route_class=FoglineRoute, responses=IN_TENANT)

LIVE_QUEUE_LIMIT = 1000
LIVE_KEY_CHECK_S = 1.0  # how soon a revoked key's live streams end

_TIME_BOUND = "epoch ms, ISO 8601, `now`, or before now like `-15m`; 1970 to the year 9999"


def _keys(keys: str | None) -> list[str]:
    return [k.strip() for k in keys.split(",") if k.strip()] if keys else []


@router.post(
    "/tenants/{tenant}/devices/{device}/telemetry",
    status_code=202,
    response_model=None,
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
    sender: tuple[str, str] = Depends(device_sender),
    idempotency_key: str | None = Header(default=None, max_length=200),
    svc: ApiServices = Depends(services),
) -> dict[str, Any] | JSONResponse:
    """Telemetry for devices that cannot speak MQTT: the body is what an MQTT message would
    carry. It joins the same stream; what cannot be stored becomes a dead letter, and a body
    over the size limit is refused (413) as soon as it passes the limit, and dead-lettered."""
    tenant, device = sender
    try:
        payload = await request.body()
    except BodyTooLarge as exc:
        receipt = await svc.intake.refuse_too_large(tenant, device, exc.size, exc.limit)
    else:
        receipt = await svc.intake.publish(tenant, device, payload, idempotency_key)
    rejected = [
        {
            "item": d.item,
            "telemetry": d.telemetry,
            "reason_code": d.reason_code.value,
            "reason": d.reason,
        }
        for d in receipt.preview.dead_letters
    ]
    if receipt.stream_seq == 0:
        return problem(413, str(rejected[0]["reason"]), rejected=rejected)
    return {
        "stream_seq": receipt.stream_seq,
        "duplicate": receipt.duplicate,
        "accepted_values": receipt.preview.value_count,
        "rejected": rejected,
    }


@router.get("/tenants/{tenant}/assets/{asset}/telemetry/latest")
async def latest(
    asset: SlugPath,
    keys: str | None = Query(default=None, description="comma-separated telemetry names"),
    tenant: str = Depends(tenant_scope),
    svc: ApiServices = Depends(services),
) -> dict[str, Any]:
    points = await svc.queries.latest(tenant, asset, _keys(keys))
    return {
        "asset": asset,
        "values": {
            name: {"ts": p.ts, "time": iso_from_ms(p.ts), "value": p.value}
            for name, p in points.items()
        },
    }


@router.get("/tenants/{tenant}/assets/{asset}/telemetry/history")
async def history(
    asset: SlugPath,
    keys: str | None = Query(default=None, description="comma-separated telemetry names"),
    start: str = Query(default="-1h", alias="from", max_length=64, description=_TIME_BOUND),
    end: str = Query(default="now", alias="to", max_length=64, description=_TIME_BOUND),
    bucket: str | None = Query(
        default=None, max_length=20, description="downsample into buckets: 10s, 1m, 1h"
    ),
    limit: int = Query(
        default=10_000, ge=1, le=MAX_RAW_POINTS, description="raw points per telemetry at most"
    ),
    tenant: str = Depends(tenant_scope),
    svc: ApiServices = Depends(services),
) -> dict[str, Any]:
    now = now_ms()
    start_ms = parse_query_time(start, now, "from")
    end_ms = parse_query_time(end, now, "to")
    body: dict[str, Any] = {"asset": asset, "from": start_ms, "to": end_ms}
    if bucket is None:
        series = await svc.queries.history(tenant, asset, _keys(keys), start_ms, end_ms, limit)
        body["series"] = {
            s.name: {
                "unit": s.unit,
                "truncated": s.truncated,
                "points": [[p.ts, p.value] for p in s.points],
            }
            for s in series
        }
    else:
        bucket_ms = parse_duration_ms(bucket, "bucket")
        bucketed = await svc.queries.downsample(
            tenant, asset, _keys(keys), start_ms, end_ms, bucket_ms
        )
        body["bucket_ms"] = bucket_ms
        body["series"] = {
            s.name: {
                "unit": s.unit,
                "buckets": [
                    {"ts": b.start_ms, "avg": b.avg, "min": b.min, "max": b.max, "count": b.count}
                    for b in s.buckets
                ],
            }
            for s in bucketed
        }
    return body


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
    request: Request,
    asset: SlugPath,
    tenant: str = Depends(tenant_scope),
    svc: ApiServices = Depends(services),
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
            next_check = time.monotonic() + LIVE_KEY_CHECK_S
            while True:
                try:  # no timer per event while events keep coming
                    data = queue.get_nowait()
                except asyncio.QueueEmpty:
                    try:
                        data = await asyncio.wait_for(queue.get(), LIVE_KEY_CHECK_S)
                    except TimeoutError:
                        data = None
                if time.monotonic() >= next_check:
                    refused = await key_still_valid(request, tenant)
                    if refused is not None:
                        status = STATUS_OF_KIND[refused.kind]
                        detail = f"the stream ends: {refused.message}"
                        end = problem(status, detail).body
                        yield {"event": "error", "data": bytes(end).decode()}
                        return
                    next_check = time.monotonic() + LIVE_KEY_CHECK_S
                if data is not None:
                    yield {"event": "readings", "data": data.decode()}
        finally:
            await subscription.close()

    return EventSourceResponse(events(), ping=15)


@router.get("/tenants/{tenant}/dead-letters")
async def dead_letters(
    device: str | None = Query(
        default=None, min_length=1, max_length=MAX_ID_LENGTH, pattern=SLUG_PATTERN
    ),
    since: str | None = Query(default=None, max_length=64, description=_TIME_BOUND),
    limit: int = Query(default=100, ge=1, le=10_000),
    tenant: str = Depends(tenant_scope),
    svc: ApiServices = Depends(services),
) -> dict[str, Any]:
    since_ms = parse_query_time(since, now_ms(), "since") if since else None
    letters = await asyncio.to_thread(svc.telemetry.dead_letters, tenant, device, since_ms, limit)
    counts = await asyncio.to_thread(svc.telemetry.dead_letter_counts, tenant)
    return {
        "total": sum(counts.values()),
        "by_reason": counts,
        "items": [dead_letter_json(d) for d in letters],
    }


@router.get("/tenants/{tenant}/ingest/stats")
async def ingest_stats(
    tenant: str = Depends(tenant_scope), svc: ApiServices = Depends(services)
) -> dict[str, Any]:
    stats = await asyncio.to_thread(svc.telemetry.device_stats, tenant)
    counts = await asyncio.to_thread(svc.telemetry.dead_letter_counts, tenant)
    return {
        "messages": sum(s.messages_total for s in stats),
        "values": sum(s.values_total for s in stats),
        "dead_letters": sum(counts.values()),
        "dead_letters_by_reason": counts,
        "devices": [device_stats_json(s) for s in stats],
    }
