"""Asset types, assets and devices."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Query, Response

from fogline.api.deps import ApiServices, SlugPath, services, tenant_scope
from fogline.api.problems import CONFLICT, IN_TENANT, UNAVAILABLE, WITH_BODY
from fogline.api.routing import FoglineRoute
from fogline.api.schemas import (
    AssetIn,
    AssetPatch,
    AssetTypeBody,
    AssetTypeIn,
    DeviceIn,
    DevicePatch,
    asset_json,
    asset_type_json,
    device_json,
)
from fogline.domain.errors import AlreadyExists, NotFound
from fogline.domain.ids import MAX_ID_LENGTH, SLUG_PATTERN

router = APIRouter(tags=["registry"], route_class=FoglineRoute, responses=IN_TENANT)

# -- asset types ------------------------------------------------------------------------------


@router.post("/tenants/{tenant}/asset-types", status_code=201, responses={**WITH_BODY, **CONFLICT})
async def create_asset_type(
    body: AssetTypeIn, tenant: str = Depends(tenant_scope), svc: ApiServices = Depends(services)
) -> dict[str, Any]:
    try:
        await svc.assets.get_asset_type(tenant, body.id)
    except NotFound:
        pass
    else:
        raise AlreadyExists(f"asset type {body.id!r} already exists; PUT replaces it")
    asset_type = body.to_domain(tenant, body.id)
    await svc.assets.put_asset_type(asset_type)
    return asset_type_json(asset_type)


@router.put(
    "/tenants/{tenant}/asset-types/{type_id}",
    responses={
        200: {"description": "Replaced"},
        201: {
            "description": "Created",
            "content": {"application/json": {"schema": {"type": "object"}}},
        },
        **WITH_BODY,
    },
)
async def put_asset_type(
    type_id: SlugPath,
    body: AssetTypeBody,
    response: Response,
    tenant: str = Depends(tenant_scope),
    svc: ApiServices = Depends(services),
) -> dict[str, Any]:
    """Create the asset type or replace its definitions."""
    asset_type = body.to_domain(tenant, type_id)
    created = await svc.assets.put_asset_type(asset_type)
    response.status_code = 201 if created else 200
    return asset_type_json(asset_type)


@router.get("/tenants/{tenant}/asset-types")
async def list_asset_types(
    tenant: str = Depends(tenant_scope), svc: ApiServices = Depends(services)
) -> list[dict[str, Any]]:
    return [asset_type_json(t) for t in await svc.assets.list_asset_types(tenant)]


@router.get("/tenants/{tenant}/asset-types/{type_id}")
async def get_asset_type(
    type_id: SlugPath, tenant: str = Depends(tenant_scope), svc: ApiServices = Depends(services)
) -> dict[str, Any]:
    return asset_type_json(await svc.assets.get_asset_type(tenant, type_id))


@router.delete("/tenants/{tenant}/asset-types/{type_id}", status_code=204, responses=CONFLICT)
async def delete_asset_type(
    type_id: SlugPath, tenant: str = Depends(tenant_scope), svc: ApiServices = Depends(services)
) -> None:
    await svc.assets.delete_asset_type(tenant, type_id)


# -- assets -----------------------------------------------------------------------------------


@router.post("/tenants/{tenant}/assets", status_code=201, responses={**WITH_BODY, **CONFLICT})
async def create_asset(
    body: AssetIn, tenant: str = Depends(tenant_scope), svc: ApiServices = Depends(services)
) -> dict[str, Any]:
    return asset_json(await svc.assets.create_asset(body.to_domain(tenant)))


@router.get("/tenants/{tenant}/assets")
async def list_assets(
    asset_type: str | None = Query(
        default=None,
        alias="type",
        min_length=1,
        max_length=MAX_ID_LENGTH,
        pattern=SLUG_PATTERN,
        description="only assets of this type",
    ),
    tenant: str = Depends(tenant_scope),
    svc: ApiServices = Depends(services),
) -> list[dict[str, Any]]:
    return [asset_json(a) for a in await svc.assets.list_assets(tenant, asset_type)]


@router.get("/tenants/{tenant}/assets/{asset_id}")
async def get_asset(
    asset_id: SlugPath, tenant: str = Depends(tenant_scope), svc: ApiServices = Depends(services)
) -> dict[str, Any]:
    return asset_json(await svc.assets.get_asset(tenant, asset_id))


@router.patch("/tenants/{tenant}/assets/{asset_id}", responses=WITH_BODY)
async def update_asset(
    asset_id: SlugPath,
    body: AssetPatch,
    tenant: str = Depends(tenant_scope),
    svc: ApiServices = Depends(services),
) -> dict[str, Any]:
    given = body.model_fields_set
    changes: dict[str, Any] = {
        "name": body.name,
        "attributes": body.attributes,
        "labels": body.labels,
    }
    if "site" in given:
        changes["site"] = body.site
    if "location" in given:
        changes["location"] = body.location.to_domain() if body.location else None
    return asset_json(await svc.assets.update_asset(tenant, asset_id, **changes))


@router.delete("/tenants/{tenant}/assets/{asset_id}", status_code=204)
async def delete_asset(
    asset_id: SlugPath, tenant: str = Depends(tenant_scope), svc: ApiServices = Depends(services)
) -> None:
    await svc.assets.delete_asset(tenant, asset_id)


# -- devices ----------------------------------------------------------------------------------


@router.post(
    "/tenants/{tenant}/devices",
    status_code=201,
    responses={**WITH_BODY, **CONFLICT, **UNAVAILABLE},
)
async def create_device(
    body: DeviceIn, tenant: str = Depends(tenant_scope), svc: ApiServices = Depends(services)
) -> dict[str, Any]:
    """Register a device; its MQTT password is in this response and nowhere else."""
    device = body.to_domain(tenant)
    creds = await svc.devices.create(device, body.password)
    info = svc.system_info()
    return {
        **device_json(device),
        "credentials": {
            "username": creds.username,
            "password": creds.password,
            "mqtt": info.get("mqtt"),
            "topic": svc.bus.subjects.mqtt_topic(svc.bus.subjects.telemetry(tenant, device.id)),
            "enforced_by_broker": svc.devices.broker.enforced,
        },
    }


@router.get("/tenants/{tenant}/devices")
async def list_devices(
    tenant: str = Depends(tenant_scope), svc: ApiServices = Depends(services)
) -> list[dict[str, Any]]:
    devices = await svc.devices.all(tenant)
    stats = {s.device: s for s in await asyncio.to_thread(svc.telemetry.device_stats, tenant)}
    return [device_json(d, stats.get(d.id)) for d in devices]


@router.get("/tenants/{tenant}/devices/{device_id}")
async def get_device(
    device_id: SlugPath, tenant: str = Depends(tenant_scope), svc: ApiServices = Depends(services)
) -> dict[str, Any]:
    device = await svc.devices.get(tenant, device_id)
    stats = {s.device: s for s in await asyncio.to_thread(svc.telemetry.device_stats, tenant)}
    return device_json(device, stats.get(device_id))


@router.patch("/tenants/{tenant}/devices/{device_id}", responses=WITH_BODY)
async def update_device(
    device_id: SlugPath,
    body: DevicePatch,
    tenant: str = Depends(tenant_scope),
    svc: ApiServices = Depends(services),
) -> dict[str, Any]:
    hardware = body.hardware.model_dump(exclude_unset=True) if body.hardware else None
    device = await svc.devices.update(
        tenant,
        device_id,
        name=body.name,
        firmware=body.firmware,
        labels=body.labels,
        hardware=hardware,
    )
    return device_json(device)


@router.post("/tenants/{tenant}/devices/{device_id}/credentials", responses=UNAVAILABLE)
async def rotate_device_credentials(
    device_id: SlugPath, tenant: str = Depends(tenant_scope), svc: ApiServices = Depends(services)
) -> dict[str, Any]:
    """A new MQTT password; the old one stops working at once."""
    creds = await svc.devices.rotate_password(tenant, device_id)
    return {"username": creds.username, "password": creds.password}


@router.delete("/tenants/{tenant}/devices/{device_id}", status_code=204, responses=UNAVAILABLE)
async def delete_device(
    device_id: SlugPath, tenant: str = Depends(tenant_scope), svc: ApiServices = Depends(services)
) -> None:
    await svc.devices.delete(tenant, device_id)
