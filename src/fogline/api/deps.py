"""What every route needs: the services, and who is calling, as `Annotated` types a route's
parameters name (`svc: Services`, `tenant: ScopedTenant`...)."""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Path, Query, Request, Security
from fastapi.security import (
    APIKeyHeader,
    HTTPAuthorizationCredentials,
    HTTPBasic,
    HTTPBasicCredentials,
    HTTPBearer,
)

from fogline.access.tenants import AccessService
from fogline.api.limits import RequestLimits
from fogline.api.metrics import RequestFigures
from fogline.bus.connection import Bus
from fogline.domain.access import DEFAULT_TENANT, ApiKey
from fogline.domain.devices import device_username
from fogline.domain.errors import FoglineError, Unauthenticated
from fogline.domain.ids import MAX_ID_LENGTH, SLUG_PATTERN
from fogline.fleet.assets import AssetRegistry
from fogline.fleet.devices import DeviceRegistry
from fogline.fleet.security import SecurityLedger
from fogline.ingest.intake import HttpIntake
from fogline.ingest.queries import TelemetryQueries
from fogline.ingest.retention import RetentionPolicies
from fogline.models.deployment import DeploymentManager
from fogline.models.mappings import ModelMappingService
from fogline.models.model_registry import ModelRegistry
from fogline.models.packages import PackageStore


@dataclass
class ApiServices:
    access: AccessService
    assets: AssetRegistry
    devices: DeviceRegistry
    security: SecurityLedger
    queries: TelemetryQueries
    retention: RetentionPolicies
    intake: HttpIntake
    models: ModelRegistry
    mappings: ModelMappingService
    deployments: DeploymentManager
    packages: PackageStore
    bus: Bus
    system_info: Callable[[], dict[str, Any]]
    hot_store: Callable[[], Awaitable[dict[str, Any]]]
    readiness: Callable[[], Awaitable[dict[str, Any]]]
    limits: RequestLimits = field(default_factory=RequestLimits)
    requests: RequestFigures = field(default_factory=RequestFigures)


def services(request: Request) -> ApiServices:
    svc: ApiServices = request.app.state.services
    return svc


Services = Annotated[ApiServices, Depends(services)]

# Ids in paths and queries, with the rule of `domain.ids` in the schema.
SlugPath = Annotated[str, Path(min_length=1, max_length=MAX_ID_LENGTH, pattern=SLUG_PATTERN)]

# How callers prove who they are, as the OpenAPI schema tells it. The checks themselves are
# `authenticate_key` and `authenticate_sender`, which routes run before reading the body.
bearer_auth = HTTPBearer(
    auto_error=False, scheme_name="ApiKey", description="`Authorization: Bearer fgl_...`"
)
header_auth = APIKeyHeader(
    name="X-API-Key", auto_error=False, scheme_name="ApiKeyHeader", description="the API key"
)
device_auth = HTTPBasic(
    auto_error=False,
    scheme_name="DeviceBasic",
    description="the device's MQTT user name `<tenant>.<device>` and its password",
)
BearerShown = Annotated[HTTPAuthorizationCredentials | None, Security(bearer_auth)]
HeaderShown = Annotated[str | None, Security(header_auth)]
BasicShown = Annotated[HTTPBasicCredentials | None, Security(device_auth)]


def _presented_key(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.headers.get("x-api-key")


async def authenticate_key(request: Request) -> ApiKey:
    """The caller's API key, checked once per request (and kept for the dependencies)."""
    known = getattr(request.state, "api_key", None)
    if isinstance(known, ApiKey):
        return known
    presented = _presented_key(request)
    if not presented:
        raise Unauthenticated("an API key is required: send 'Authorization: Bearer <key>'")
    key = await services(request).access.authenticate(presented)
    request.state.api_key = key
    return key


async def key_still_valid(request: Request, tenant: str) -> FoglineError | None:
    """Why the request's key may no longer act in `tenant` (revoked, say), or None: for
    requests that outlive a moment, such as live streams."""
    presented = _presented_key(request)
    if not presented:
        return Unauthenticated("an API key is required")
    return await services(request).access.refusal(presented, tenant)


async def api_key(request: Request, _bearer: BearerShown, _header: HeaderShown) -> ApiKey:
    return await authenticate_key(request)


Caller = Annotated[ApiKey, Depends(api_key)]


async def tenant_scope(tenant: SlugPath, key: Caller, svc: Services) -> str:
    """The tenant of the path, once the key is allowed in it."""
    return await svc.access.enter_tenant(key, tenant)


ScopedTenant = Annotated[str, Depends(tenant_scope)]


async def key_tenant(
    key: Caller,
    svc: Services,
    tenant: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=MAX_ID_LENGTH,
            pattern=SLUG_PATTERN,
            description="tenant id; default: the key's own",
        ),
    ] = None,
) -> str:
    """For the short paths (`/api/v1/models`): the key's own tenant, or the one named, under the
    same rules as `/tenants/{tenant}/...`."""
    return await svc.access.enter_tenant(key, tenant or key.tenant or DEFAULT_TENANT)


KeyTenant = Annotated[str, Depends(key_tenant)]


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, _, password = base64.b64decode(value.strip()).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        raise Unauthenticated("malformed Basic credentials") from None
    return user, password


async def authenticate_sender(request: Request) -> tuple[str, str]:
    """Telemetry over HTTP comes from the device itself (Basic auth with its MQTT credentials)
    or from a tenant's API key on the device's behalf. Checked once per request."""
    known = getattr(request.state, "sender", None)
    if isinstance(known, tuple):
        return known
    svc = services(request)
    tenant, device = str(request.path_params["tenant"]), str(request.path_params["device"])
    basic = _basic_credentials(request)
    if basic is not None:
        user, password = basic
        if user != device_username(tenant, device):
            raise Unauthenticated(f"these credentials are not those of device {device!r}")
        await svc.devices.verify_password(tenant, device, password)
    else:
        key = await authenticate_key(request)
        await svc.access.enter_tenant(key, tenant)
        await svc.devices.get(tenant, device)
    request.state.sender = (tenant, device)
    return tenant, device


async def device_sender(
    request: Request,
    tenant: SlugPath,
    device: SlugPath,
    _basic: BasicShown,
    _bearer: BearerShown,
    _header: HeaderShown,
) -> tuple[str, str]:
    return await authenticate_sender(request)


# The (tenant, device) a device's own message comes from, once the sender is known to be it.
Sender = Annotated[tuple[str, str], Depends(device_sender)]
