"""Health and the platform's own state."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from fogline import __version__
from fogline.api.deps import ApiServices, api_key, services
from fogline.api.problems import KEYED, UNAVAILABLE, problem
from fogline.api.routing import FoglineRoute
from fogline.domain.access import DEFAULT_TENANT, ApiKey, Role

router = APIRouter(tags=["system"], route_class=FoglineRoute)


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok", "version": __version__}


@router.get("/ready", response_model=None, responses={**UNAVAILABLE})
async def ready(svc: ApiServices = Depends(services)) -> dict[str, Any] | JSONResponse:
    """Whether the platform takes telemetry in and stores it (NATS, the database, the
    historian), for load balancers and orchestrators: 200, or 503 as a problem listing why."""
    state = await svc.readiness()
    if not state["ready"]:
        return problem(503, "; ".join(state["problems"]), checks=state["checks"])
    return {"status": "ready", "checks": state["checks"]}


@router.get("/system", responses={**KEYED, **UNAVAILABLE})
async def system(
    key: ApiKey = Depends(api_key), svc: ApiServices = Depends(services)
) -> dict[str, Any]:
    """An admin key: the whole platform (processes, memory, every counter, the hot store).
    A tenant key: its own tenant's ingest counters, and nothing of the platform or of others."""
    if key.role is Role.ADMIN:
        return {**svc.system_info(), "hot_store": await svc.hot_store()}
    tenant = key.tenant or DEFAULT_TENANT
    stats = await asyncio.to_thread(svc.telemetry.device_stats, tenant)
    dead_letters = await asyncio.to_thread(svc.telemetry.dead_letter_counts, tenant)
    return {
        "version": __version__,
        "tenant": tenant,
        "mqtt": svc.system_info().get("mqtt"),
        "ingest": {
            "devices": len(stats),
            "messages": sum(s.messages_total for s in stats),
            "values": sum(s.values_total for s in stats),
            "dead_letters": sum(dead_letters.values()),
        },
    }
