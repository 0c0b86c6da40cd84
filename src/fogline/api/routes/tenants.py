"""Tenants and API keys."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from fogline.api.deps import Caller, ScopedTenant, Services
from fogline.api.problems import CONFLICT, IN_TENANT, KEYED, WITH_BODY, problem_responses
from fogline.api.routing import FoglineRoute
from fogline.api.schemas.access import (
    ApiKeyIn,
    ApiKeyOut,
    IssuedKeyOut,
    NewTenantOut,
    TenantIn,
    TenantOut,
)

router = APIRouter(tags=["tenants"], route_class=FoglineRoute)

# API key ids are 16 hex digits (store.tenants.create_api_key).
KeyIdPath = Annotated[str, Path(pattern=r"^[0-9a-f]{16}$")]


@router.post(
    "/tenants",
    status_code=201,
    responses={**KEYED, **problem_responses(403), **WITH_BODY, **CONFLICT},
)
async def create_tenant(body: TenantIn, key: Caller, svc: Services) -> NewTenantOut:
    """Create a tenant (admin only) and its first API key, shown this once."""
    return NewTenantOut.of(await svc.access.create_tenant(key, body.id, body.name))


@router.get("/tenants", responses=KEYED)
async def list_tenants(key: Caller, svc: Services) -> list[TenantOut]:
    """Every tenant for an admin key; its own for a tenant key."""
    return [TenantOut.of(t) for t in await svc.access.visible_tenants(key)]


@router.post("/tenants/{tenant}/api-keys", status_code=201, responses={**IN_TENANT, **WITH_BODY})
async def create_api_key(body: ApiKeyIn, tenant: ScopedTenant, svc: Services) -> IssuedKeyOut:
    """A new key of the tenant; its secret is in this answer and kept nowhere."""
    return IssuedKeyOut.of(await svc.access.create_api_key(tenant, body.name))


@router.get("/tenants/{tenant}/api-keys", responses=IN_TENANT)
async def list_api_keys(tenant: ScopedTenant, svc: Services) -> list[ApiKeyOut]:
    return [ApiKeyOut.of(k) for k in await svc.access.api_keys(tenant)]


@router.delete("/tenants/{tenant}/api-keys/{key_id}", status_code=204, responses=IN_TENANT)
async def revoke_api_key(key_id: KeyIdPath, tenant: ScopedTenant, svc: Services) -> None:
    await svc.access.revoke_api_key(tenant, key_id)
