"""Health and the platform's own state."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from fogline import __version__
from fogline.api.deps import ApiServices, api_key, services
from fogline.api.problems import problem
from fogline.domain.access import ApiKey

router = APIRouter(tags=["system"])


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok", "version": __version__}


@router.get("/ready", response_model=None)
async def ready(svc: ApiServices = Depends(services)) -> dict[str, Any] | JSONResponse:
    """Whether the platform takes telemetry in and stores it (NATS, the database, the
    historian), for load balancers and orchestrators: 200, or 503 as a problem listing why."""
    state = await svc.readiness()
    if not state["ready"]:
        return problem(503, "; ".join(state["problems"]), checks=state["checks"])
    return {"status": "ready", "checks": state["checks"]}


@router.get("/system")
async def system(
    _key: ApiKey = Depends(api_key), svc: ApiServices = Depends(services)
) -> dict[str, Any]:
    return {**svc.system_info(), "hot_store": await svc.hot_store()}
