"""Retention of the SQL history: a tenant's policy, and its asset types' overrides."""

from __future__ import annotations

from fastapi import APIRouter

from fogline.api.deps import ScopedTenant, Services, SlugPath
from fogline.api.problems import IN_TENANT, WITH_BODY
from fogline.api.routing import FoglineRoute
from fogline.api.schemas.retention import AssetTypeRetentionOut, RetentionIn, TenantRetentionOut

router = APIRouter(tags=["retention"], route_class=FoglineRoute, responses=IN_TENANT)


@router.get("/tenants/{tenant}/retention")
async def get_retention(tenant: ScopedTenant, svc: Services) -> TenantRetentionOut:
    """The platform's default, the tenant's override, and what is in force for each of its
    asset types."""
    return TenantRetentionOut.of(await svc.retention.tenant(tenant))


@router.put("/tenants/{tenant}/retention", responses=WITH_BODY)
async def put_retention(
    body: RetentionIn, tenant: ScopedTenant, svc: Services
) -> TenantRetentionOut:
    """Set the tenant's override (both parts: one left null is inherited from the platform)."""
    return TenantRetentionOut.of(
        await svc.retention.set_tenant(tenant, body.history, body.aggregates)
    )


@router.get("/tenants/{tenant}/asset-types/{type_id}/retention")
async def get_asset_type_retention(
    type_id: SlugPath, tenant: ScopedTenant, svc: Services
) -> AssetTypeRetentionOut:
    return AssetTypeRetentionOut.of(await svc.retention.asset_type(tenant, type_id))


@router.put("/tenants/{tenant}/asset-types/{type_id}/retention", responses=WITH_BODY)
async def put_asset_type_retention(
    type_id: SlugPath, body: RetentionIn, tenant: ScopedTenant, svc: Services
) -> AssetTypeRetentionOut:
    """Set the asset type's override (both parts: one left null is inherited from the
    tenant, then the platform)."""
    return AssetTypeRetentionOut.of(
        await svc.retention.set_asset_type(tenant, type_id, body.history, body.aggregates)
    )
