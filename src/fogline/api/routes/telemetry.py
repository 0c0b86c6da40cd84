"""Telemetry in (HTTP ingest) and out (latest, history, live), and dead letters."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse
from sse_starlette.sse import EventSourceResponse

from fogline.api.deps import ApiServices, device_sender, services, tenant_scope
from fogline.api.problems import problem
from fogline.api.schemas import dead_letter_json, device_stats_json
from fogline.domain.timeseries import iso_from_ms, now_ms, parse_duration_ms, parse_query_time

router = APIRouter(tags=["telemetry"])

LIVE_QUEUE_LIMIT = 1000


def _keys(keys: str | None) -> list[str]:
    return [k.strip() for k in keys.split(",") if k.strip()] if keys else []


@router.post("/tenants/{tenant}/devices/{device}/telemetry", status_code=202, response_model=None)
async def ingest(
    request: Request,
    sender: tuple[str, str] = Depends(device_sender),
    idempotency_key: str | None = Header(default=None),
    svc: ApiServices = Depends(services),
) -> dict[str, Any] | JSONResponse:
    """Telemetry for devices that cannot speak MQTT: the body is what an MQTT message would
    carry. It joins the same stream; what cannot be stored becomes a dead letter."""
    tenant, device = sender
    body = await request.body()
    receipt = await svc.intake.publish(tenant, device, body, idempotency_key)
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
    asset: str,
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
    asset: str,
    keys: str | None = Query(default=None, description="comma-separated telemetry names"),
    start: str = Query(default="-1h", alias="from", description="epoch ms, ISO 8601 or -15m"),
    end: str = Query(default="now", alias="to"),
    bucket: str | None = Query(default=None, description="downsample into buckets: 10s, 1m, 1h"),
    limit: int = Query(default=10_000, description="raw points per telemetry at most"),
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


@router.get("/tenants/{tenant}/assets/{asset}/telemetry/live")
async def live(
    request: Request,
    asset: str,
    tenant: str = Depends(tenant_scope),
    svc: ApiServices = Depends(services),
) -> EventSourceResponse:
    """Server-Sent Events: one `readings` event per committed message of this asset."""
    await svc.assets.get_asset(tenant, asset)
    queue: asyncio.Queue[bytes] = asyncio.Queue(LIVE_QUEUE_LIMIT)
    dropped = 0

    async def on_message(msg: Any) -> None:
        nonlocal dropped
        try:
            queue.put_nowait(msg.data)
        except asyncio.QueueFull:  # a slow reader loses live events, never the history
            dropped += 1

    subscription = await svc.bus.nc.subscribe(svc.bus.subjects.live(tenant, asset), cb=on_message)

    async def events() -> AsyncIterator[dict[str, str]]:
        try:
            yield {"event": "subscribed", "data": f'{{"asset": "{asset}"}}'}
            while True:
                data = await queue.get()
                yield {"event": "readings", "data": data.decode()}
        finally:
            await subscription.unsubscribe()

    return EventSourceResponse(events(), ping=15)


@router.get("/tenants/{tenant}/dead-letters")
async def dead_letters(
    device: str | None = None,
    since: str | None = Query(default=None, description="epoch ms, ISO 8601 or -15m"),
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
