"""Asset types, assets and devices."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from fogline.api.deps import ScopedTenant, Services, SlugPath
from fogline.api.problems import CONFLICT, IN_TENANT, UNAVAILABLE, WITH_BODY
from fogline.api.routing import FoglineRoute
from fogline.api.schemas.registry import (
    AssetIn,
    AssetOut,
    AssetPatch,
    AssetTypeBody,
    AssetTypeIn,
    AssetTypeOut,
    ConnectionOut,
    CredentialsOut,
    DeviceIn,
    DeviceOut,
    DevicePatch,
    DevicesImportedOut,
    DevicesImportIn,
    ImportedDeviceOut,
    NewDeviceOut,
    SecurityCountOut,
)
from fogline.domain.ids import MAX_ID_LENGTH, SLUG_PATTERN

router = APIRouter(tags=["registry"], route_class=FoglineRoute, responses=IN_TENANT)

AssetTypeQuery = Annotated[
    str | None,
    Query(
        alias="type",
        min_length=1,
        max_length=MAX_ID_LENGTH,
        pattern=SLUG_PATTERN,
        description="only assets of this type",
    ),
]

# -- asset types ------------------------------------------------------------------------------


@router.post("/tenants/{tenant}/asset-types", status_code=201, responses={**WITH_BODY, **CONFLICT})
async def create_asset_type(body: AssetTypeIn, tenant: ScopedTenant, svc: Services) -> AssetTypeOut:
    asset_type = body.to_domain(tenant, body.id)
    await svc.assets.create_asset_type(asset_type)
    return AssetTypeOut.of(asset_type)


@router.put(
    "/tenants/{tenant}/asset-types/{type_id}",
    responses={
        200: {"description": "Replaced"},
        201: {"description": "Created", "model": AssetTypeOut},
        **WITH_BODY,
    },
)
async def put_asset_type(
    type_id: SlugPath,
    body: AssetTypeBody,
    response: Response,
    tenant: ScopedTenant,
    svc: Services,
) -> AssetTypeOut:
    """Create the asset type or replace its definitions."""
    asset_type = body.to_domain(tenant, type_id)
    created = await svc.assets.put_asset_type(asset_type)
    response.status_code = 201 if created else 200
    return AssetTypeOut.of(asset_type)


@router.get("/tenants/{tenant}/asset-types")
async def list_asset_types(tenant: ScopedTenant, svc: Services) -> list[AssetTypeOut]:
    return [AssetTypeOut.of(t) for t in await svc.assets.list_asset_types(tenant)]


@router.get("/tenants/{tenant}/asset-types/{type_id}")
async def get_asset_type(type_id: SlugPath, tenant: ScopedTenant, svc: Services) -> AssetTypeOut:
    return AssetTypeOut.of(await svc.assets.get_asset_type(tenant, type_id))


@router.delete("/tenants/{tenant}/asset-types/{type_id}", status_code=204, responses=CONFLICT)
async def delete_asset_type(type_id: SlugPath, tenant: ScopedTenant, svc: Services) -> None:
    await svc.assets.delete_asset_type(tenant, type_id)


# -- assets -----------------------------------------------------------------------------------


@router.post("/tenants/{tenant}/assets", status_code=201, responses={**WITH_BODY, **CONFLICT})
async def create_asset(body: AssetIn, tenant: ScopedTenant, svc: Services) -> AssetOut:
    return AssetOut.of(await svc.assets.create_asset(body.to_domain(tenant)))


@router.get("/tenants/{tenant}/assets")
async def list_assets(
    tenant: ScopedTenant, svc: Services, asset_type: AssetTypeQuery = None
) -> list[AssetOut]:
    return [AssetOut.of(a) for a in await svc.assets.list_assets(tenant, asset_type)]


@router.get("/tenants/{tenant}/assets/{asset_id}")
async def get_asset(asset_id: SlugPath, tenant: ScopedTenant, svc: Services) -> AssetOut:
    return AssetOut.of(await svc.assets.get_asset(tenant, asset_id))


@router.patch("/tenants/{tenant}/assets/{asset_id}", responses=WITH_BODY)
async def update_asset(
    asset_id: SlugPath, body: AssetPatch, tenant: ScopedTenant, svc: Services
) -> AssetOut:
    return AssetOut.of(await svc.assets.update_asset(tenant, asset_id, **body.changes()))


@router.delete("/tenants/{tenant}/assets/{asset_id}", status_code=204)
async def delete_asset(asset_id: SlugPath, tenant: ScopedTenant, svc: Services) -> None:
    await svc.assets.delete_asset(tenant, asset_id)


# -- devices ----------------------------------------------------------------------------------


@router.post(
    "/tenants/{tenant}/devices",
    status_code=201,
    responses={**WITH_BODY, **CONFLICT, **UNAVAILABLE},
)
async def create_device(body: DeviceIn, tenant: ScopedTenant, svc: Services) -> NewDeviceOut:
    """Register a device; its MQTT password is in this response and nowhere else."""
    device = body.to_domain(tenant)
    creds = await svc.devices.create(device, body.password)
    subjects = svc.bus.subjects
    connection = ConnectionOut(
        username=creds.username,
        password=creds.password,
        mqtt=svc.system_info().get("mqtt"),
        topic=subjects.mqtt_topic(subjects.telemetry(tenant, device.id)),
        enforced_by_broker=svc.devices.enforced_by_broker,
    )
    return NewDeviceOut.created(device, connection)


@router.post(
    "/tenants/{tenant}/device-imports",
    responses={**WITH_BODY, **CONFLICT, **UNAVAILABLE},
)
async def import_devices(
    body: DevicesImportIn, tenant: ScopedTenant, svc: Services
) -> DevicesImportedOut:
    """Register many devices at once, all or none: every problem of every row in one answer
    (422; 409 when the only problems are ids that exist). The generated MQTT passwords are in
    this response and nowhere else."""
    created = await svc.devices.import_devices(tenant, body.batch(tenant), body.dry_run)
    return DevicesImportedOut(
        dry_run=body.dry_run,
        created=len(created),
        mqtt=svc.system_info().get("mqtt"),
        devices=[
            ImportedDeviceOut(id=device_id, username=c.username, password=c.password)
            for device_id, c in created
        ],
    )


@router.get("/tenants/{tenant}/devices")
async def list_devices(tenant: ScopedTenant, svc: Services) -> list[DeviceOut]:
    devices = await svc.devices.all(tenant)
    stats = await svc.queries.device_stats(tenant)
    return [DeviceOut.of(d, stats.get(d.id)) for d in devices]


@router.get("/tenants/{tenant}/devices/{device_id}")
async def get_device(device_id: SlugPath, tenant: ScopedTenant, svc: Services) -> DeviceOut:
    device = await svc.devices.get(tenant, device_id)
    stats = await svc.queries.device_stats(tenant)
    security = await svc.security.device_counts(tenant, device_id)
    return DeviceOut.of(device, stats.get(device_id), security)


@router.get("/tenants/{tenant}/devices/{device_id}/security-events")
async def device_security_events(
    device_id: SlugPath, tenant: ScopedTenant, svc: Services
) -> list[SecurityCountOut]:
    """What nats-server refused the device, per kind: failed logins (a wrong password),
    publishes and subscriptions outside its own topics; counts, first and last time."""
    await svc.devices.get(tenant, device_id)  # an unknown device is a 404, not an empty list
    return [SecurityCountOut.of(c) for c in await svc.security.device_counts(tenant, device_id)]


@router.patch("/tenants/{tenant}/devices/{device_id}", responses=WITH_BODY)
async def update_device(
    device_id: SlugPath, body: DevicePatch, tenant: ScopedTenant, svc: Services
) -> DeviceOut:
    return DeviceOut.of(await svc.devices.update(tenant, device_id, **body.changes()))


@router.post("/tenants/{tenant}/devices/{device_id}/credentials", responses=UNAVAILABLE)
async def rotate_device_credentials(
    device_id: SlugPath, tenant: ScopedTenant, svc: Services
) -> CredentialsOut:
    """A new MQTT password; the old one stops working at once."""
    return CredentialsOut.of(await svc.devices.rotate_password(tenant, device_id))


@router.delete("/tenants/{tenant}/devices/{device_id}", status_code=204, responses=UNAVAILABLE)
async def delete_device(device_id: SlugPath, tenant: ScopedTenant, svc: Services) -> None:
    await svc.devices.delete(tenant, device_id)
