"""What every route needs: the services, and who is calling."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, Path, Query, Request

from fogline.bus.connection import Bus
from fogline.domain.access import DEFAULT_TENANT, ApiKey
from fogline.domain.errors import NotFound, Unauthenticated
from fogline.domain.registry import device_username
from fogline.fleet.devices import DeviceRegistry
from fogline.ingest.intake import HttpIntake
from fogline.ingest.queries import TelemetryQueries
from fogline.ingest.registry import AssetRegistry
from fogline.models.deployment import DeploymentManager
from fogline.models.mappings import ModelMappingService
from fogline.models.packages import PackageStore
from fogline.models.registry import ModelRegistry
from fogline.store.registry import RegistryStore
from fogline.store.telemetry import TelemetryStore


@dataclass
class ApiServices:
    registry: RegistryStore
    assets: AssetRegistry
    devices: DeviceRegistry
    queries: TelemetryQueries
    telemetry: TelemetryStore
    intake: HttpIntake
    models: ModelRegistry
    mappings: ModelMappingService
    deployments: DeploymentManager
    packages: PackageStore
    bus: Bus
    system_info: Callable[[], dict[str, Any]]
    hot_store: Callable[[], Awaitable[dict[str, Any]]]
    readiness: Callable[[], Awaitable[dict[str, Any]]]


def services(request: Request) -> ApiServices:
    svc: ApiServices = request.app.state.services
    return svc


def _presented_key(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.headers.get("x-api-key")


async def api_key(request: Request, svc: ApiServices = Depends(services)) -> ApiKey:
    presented = _presented_key(request)
    if not presented:
        raise Unauthenticated("an API key is required: send 'Authorization: Bearer <key>'")
    return await asyncio.to_thread(svc.registry.authenticate, presented)


async def tenant_scope(
    tenant: str = Path(description="tenant id"),
    key: ApiKey = Depends(api_key),
    svc: ApiServices = Depends(services),
) -> str:
    """The tenant of the path, once the key is allowed in it: a tenant key never sees another
    tenant's data, not even whether that tenant exists."""
    key.require_tenant(tenant)
    if not await asyncio.to_thread(svc.registry.tenant_exists, tenant):
        raise NotFound(f"tenant {tenant!r} does not exist")
    return tenant


async def key_tenant(
    tenant: str | None = Query(default=None, description="tenant id; default: the key's own"),
    key: ApiKey = Depends(api_key),
    svc: ApiServices = Depends(services),
) -> str:
    """For the short paths (`/api/v1/models`): the key's own tenant, or the one named, under the
    same rules as `/tenants/{tenant}/...`."""
    return await tenant_scope(tenant or key.tenant or DEFAULT_TENANT, key, svc)


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, _, password = base64.b64decode(value.strip()).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        raise Unauthenticated("malformed Basic credentials") from None
    return user, password


async def device_sender(
    request: Request,
    tenant: str = Path(),
    device: str = Path(),
    svc: ApiServices = Depends(services),
) -> tuple[str, str]:
    """Telemetry over HTTP comes from the device itself (Basic auth with its MQTT credentials)
    or from a tenant's API key on the device's behalf."""
    basic = _basic_credentials(request)
    if basic is not None:
        user, password = basic
        if user != device_username(tenant, device):
            raise Unauthenticated(f"these credentials are not those of device {device!r}")
        await svc.devices.verify_password(tenant, device, password)
        return tenant, device
    key = await api_key(request, svc)
    await tenant_scope(tenant, key, svc)
    await svc.devices.get(tenant, device)
    return tenant, device
