"""Health and the platform's own state."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from fogline import __version__
from fogline.api.deps import Caller, Services
from fogline.api.metrics import CONTENT_TYPE, render
from fogline.api.problems import KEYED, UNAVAILABLE, problem, problem_responses
from fogline.api.routing import FoglineRoute
from fogline.api.schemas.system import (
    HealthOut,
    PlatformOut,
    ReadyOut,
    TenantIngestOut,
    TenantSystemOut,
)
from fogline.domain.access import DEFAULT_TENANT, Role

router = APIRouter(tags=["system"], route_class=FoglineRoute)
FORBIDDEN = problem_responses(403)


@router.get("/health")
async def health() -> HealthOut:
    return HealthOut(status="ok", version=__version__)


@router.get("/ready", response_model=ReadyOut, responses={**UNAVAILABLE})
async def ready(svc: Services) -> ReadyOut | JSONResponse:
    """Whether the platform takes telemetry in and stores it, for load balancers and
    orchestrators: 200, or 503 as a problem listing why; either way each part (broker,
    database, historian, models...) in `checks`. No key needed, and no database: it answers
    in a few seconds whatever is away."""
    state = await svc.readiness()
    if not state["ready"]:
        return problem(
            503,
            "; ".join(state["problems"]),
            checks=state["checks"],
            warnings=state["warnings"],
        )
    return ReadyOut(status="ready", checks=state["checks"], warnings=state["warnings"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE: {"schema": {"type": "string"}}}},
        **KEYED,
        **FORBIDDEN,
        **UNAVAILABLE,
    },
)
async def metrics(key: Caller, svc: Services) -> Response:
    """The platform's state for a Prometheus scraper (an admin key, as a bearer token):
    readiness per part, the disk and its reserve, restarts, ingest and retention counters, per
    model: readings by outcome, queue, restarts, degraded; and the API's requests by route and
    status, with their latency."""
    key.require_admin()
    models = svc.deployments.model_figures()
    system = {**svc.system_info(), "security": await svc.security.summary()}
    body = render(await svc.readiness(), system, models, svc.requests)
    return Response(body, media_type=CONTENT_TYPE)


@router.get("/system", responses={**KEYED, **UNAVAILABLE})
async def system(key: Caller, svc: Services) -> PlatformOut | TenantSystemOut:
    """An admin key: the whole platform (processes, memory, every counter, the hot store).
    A tenant key: its own tenant's ingest counters, and nothing of the platform or of others."""
    if key.role is Role.ADMIN:
        return PlatformOut.model_validate(
            {
                **svc.system_info(),
                "hot_store": await svc.hot_store(),
                "security": await svc.security.summary(),
            }
        )
    tenant = key.tenant or DEFAULT_TENANT
    summary = await svc.queries.summary(tenant)
    return TenantSystemOut(
        version=__version__,
        tenant=tenant,
        mqtt=svc.system_info().get("mqtt"),
        ingest=TenantIngestOut.of(summary),
        security=await svc.security.summary(tenant),
    )
