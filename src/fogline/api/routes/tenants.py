"""Tenants and API keys."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path

from fogline.api.deps import ApiServices, api_key, services, tenant_scope
from fogline.api.problems import CONFLICT, IN_TENANT, KEYED, WITH_BODY, problem_responses
from fogline.api.routing import FoglineRoute
from fogline.api.schemas import ApiKeyIn, TenantIn, api_key_json
from fogline.domain.access import ApiKey, Role
from fogline.domain.ids import require_slug

router = APIRouter(tags=["tenants"], route_class=FoglineRoute)

# API key ids are 16 hex digits (store.tenants.create_api_key).
KeyIdPath = Annotated[str, Path(pattern=r"^[0-9a-f]{16}$")]


@router.post(
    "/tenants",
    status_code=201,
    responses={**KEYED, **problem_responses(403), **WITH_BODY, **CONFLICT},
)
async def create_tenant(
    body: TenantIn, key: ApiKey = Depends(api_key), svc: ApiServices = Depends(services)
) -> dict[str, Any]:
    """Create a tenant (admin only) and its first API key, shown this once."""
    key.require_admin()
    tenant = require_slug(body.id, "id")
    await asyncio.to_thread(svc.tenants.create_tenant, tenant, body.name or tenant)
    new_key, secret = await asyncio.to_thread(
        svc.tenants.create_api_key, tenant, f"{tenant} first key", Role.TENANT
    )
    return {
        "id": tenant,
        "name": body.name or tenant,
        "api_key": secret,
        "key": api_key_json(new_key),
    }


@router.get("/tenants", responses=KEYED)
async def list_tenants(
    key: ApiKey = Depends(api_key), svc: ApiServices = Depends(services)
) -> list[dict[str, str]]:
    tenants = await asyncio.to_thread(svc.tenants.list_tenants)
    return [
        {"id": tid, "name": name}
        for tid, name in tenants
        if key.role is Role.ADMIN or key.tenant == tid
    ]


@router.post("/tenants/{tenant}/api-keys", status_code=201, responses={**IN_TENANT, **WITH_BODY})
async def create_api_key(
    body: ApiKeyIn, tenant: str = Depends(tenant_scope), svc: ApiServices = Depends(services)
) -> dict[str, Any]:
    key, secret = await asyncio.to_thread(
        svc.tenants.create_api_key, tenant, body.name, Role.TENANT
    )
    return {"api_key": secret, "key": api_key_json(key)}


@router.get("/tenants/{tenant}/api-keys", responses=IN_TENANT)
async def list_api_keys(
    tenant: str = Depends(tenant_scope), svc: ApiServices = Depends(services)
) -> list[dict[str, Any]]:
    return [api_key_json(k) for k in await asyncio.to_thread(svc.tenants.list_api_keys, tenant)]


@router.delete("/tenants/{tenant}/api-keys/{key_id}", status_code=204, responses=IN_TENANT)
async def revoke_api_key(
    key_id: KeyIdPath, tenant: str = Depends(tenant_scope), svc: ApiServices = Depends(services)
) -> None:
    await asyncio.to_thread(svc.tenants.revoke_api_key, key_id, tenant)
