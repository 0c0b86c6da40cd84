"""Models: submitted by manifest (JSON or YAML), versioned, with a lifecycle."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Path, Request, Response
from pydantic import Field

from fogline.api.deps import ApiServices, SlugPath, key_tenant, services, tenant_scope
from fogline.api.limits import BodyKind, body
from fogline.api.problems import (
    CONFLICT,
    IN_TENANT,
    RAW_BODY,
    WITH_BODY,
    problem_responses,
)
from fogline.api.routing import FoglineRoute
from fogline.api.schemas import Strict
from fogline.domain.errors import InvalidInput, Problem
from fogline.domain.models import Mapping, ModelEventRecord, ModelMappings, ModelRecord
from fogline.domain.timeseries import iso_from_ms
from fogline.library.catalog import CATALOG, library_model
from fogline.models.manifest import MAX_VERSION_LENGTH, REDACTED, SEMVER_PATTERN

router = APIRouter(tags=["models"], route_class=FoglineRoute)

VersionPath = Annotated[
    str, Path(max_length=MAX_VERSION_LENGTH, pattern=SEMVER_PATTERN, description="like 1.0.0")
]
# A manifest, in JSON or YAML: what `models.manifest` reads, checked in full there.
MANIFEST_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "application/yaml": {"schema": {"type": "string"}},
        },
    }
}


def model_json(m: ModelRecord) -> dict[str, Any]:
    manifest = m.manifest
    if m.has_registry_password:
        # Show that a password is set, never what it is.
        manifest["manifest"]["model"]["container"]["customRegistry"]["password"] = REDACTED
    return {
        "name": m.name,
        "version": m.version,
        "description": m.description,
        "state": m.state.value,
        "state_reason": m.state_reason,
        "inputs": [t.name for t in m.templates if t.direction == "input"],
        "outputs": [t.name for t in m.templates if t.direction == "output"],
        "manifest": manifest,
        "created_at": iso_from_ms(m.created_at),
        "updated_at": iso_from_ms(m.updated_at),
    }


def event_json(e: ModelEventRecord) -> dict[str, Any]:
    return {
        "id": e.id,
        "event": e.event,
        "from": e.from_state,
        "to": e.to_state,
        "reason": e.reason,
        "at": iso_from_ms(e.at),
    }


@router.post(
    "/tenants/{tenant}/models",
    status_code=201,
    responses={**IN_TENANT, **RAW_BODY, **CONFLICT},
    openapi_extra=MANIFEST_BODY,
)
async def submit_model(
    request: Request, tenant: str = Depends(tenant_scope), svc: ApiServices = Depends(services)
) -> dict[str, Any]:
    """Submit a manifest as JSON or YAML (`Content-Type: application/json` or
    `application/yaml`). Every problem is reported at once; nothing is stored unless all is
    well. The model starts as a draft."""
    return model_json(await svc.models.submit(tenant, await request.body()))


@router.post(
    "/models",
    status_code=201,
    responses={**IN_TENANT, **RAW_BODY, **CONFLICT},
    openapi_extra=MANIFEST_BODY,
)
async def submit_model_to_key_tenant(
    request: Request, tenant: str = Depends(key_tenant), svc: ApiServices = Depends(services)
) -> dict[str, Any]:
    """`POST /tenants/{tenant}/models` for the API key's own tenant (or `?tenant=`)."""
    return model_json(await svc.models.submit(tenant, await request.body()))


@router.get("/models", responses=IN_TENANT)
async def list_models_of_key_tenant(
    tenant: str = Depends(key_tenant), svc: ApiServices = Depends(services)
) -> list[dict[str, Any]]:
    """`GET /tenants/{tenant}/models` for the API key's own tenant (or `?tenant=`)."""
    return [model_json(m) for m in await svc.models.all(tenant)]


@router.get("/tenants/{tenant}/models", responses=IN_TENANT)
async def list_models(
    tenant: str = Depends(tenant_scope), svc: ApiServices = Depends(services)
) -> list[dict[str, Any]]:
    return [model_json(m) for m in await svc.models.all(tenant)]


@router.get("/tenants/{tenant}/models/{name}/{version:semver}", responses=IN_TENANT)
async def get_model(
    name: SlugPath,
    version: VersionPath,
    tenant: str = Depends(tenant_scope),
    svc: ApiServices = Depends(services),
) -> dict[str, Any]:
    return model_json(await svc.models.get(tenant, name, version))


@router.get("/tenants/{tenant}/models/{name}/{version:semver}/events", responses=IN_TENANT)
async def model_events(
    name: SlugPath,
    version: VersionPath,
    tenant: str = Depends(tenant_scope),
    svc: ApiServices = Depends(services),
) -> list[dict[str, Any]]:
    return [event_json(e) for e in await svc.models.events(tenant, name, version)]


@router.delete(
    "/tenants/{tenant}/models/{name}/{version:semver}", responses={**IN_TENANT, **CONFLICT}
)
async def remove_model(
    name: SlugPath,
    version: VersionPath,
    tenant: str = Depends(tenant_scope),
    svc: ApiServices = Depends(services),
) -> dict[str, Any]:
    """Remove a draft model (refused, with the reason, in any other state)."""
    return model_json(await svc.models.remove(tenant, name, version))


def mappings_json(m: ModelMappings) -> dict[str, Any]:
    def group(items: tuple[Mapping, ...]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for item in items:
            side = "inputs" if item.direction == "input" else "outputs"
            result.setdefault(item.target, {"inputs": {}, "outputs": {}})[side][item.column] = (
                item.telemetry
            )
        return result

    return {"assets": group(m.assets), "asset_types": group(m.asset_types)}


@router.put(
    "/tenants/{tenant}/models/{name}/{version:semver}/mappings",
    responses={**IN_TENANT, **WITH_BODY, **CONFLICT},
)
async def replace_mappings(
    name: SlugPath,
    version: VersionPath,
    body: dict[str, Any],
    tenant: str = Depends(tenant_scope),
    svc: ApiServices = Depends(services),
) -> dict[str, Any]:
    """Bind inputs and outputs to telemetry of assets and asset types (replaces all)."""
    mappings = await svc.mappings.replace(tenant, name, version, body)
    resolved = await svc.mappings.resolve(tenant, name, version)
    return {**mappings_json(mappings), "resolved": [asdict(r) for r in resolved]}


@router.get("/tenants/{tenant}/models/{name}/{version:semver}/mappings", responses=IN_TENANT)
async def get_mappings(
    name: SlugPath,
    version: VersionPath,
    tenant: str = Depends(tenant_scope),
    svc: ApiServices = Depends(services),
) -> dict[str, Any]:
    """The declared mappings, and `resolved`: every asset fed now, type mappings expanded."""
    mappings = await svc.mappings.get(tenant, name, version)
    resolved = await svc.mappings.resolve(tenant, name, version)
    return {**mappings_json(mappings), "resolved": [asdict(r) for r in resolved]}


@router.put(
    "/tenants/{tenant}/models/{name}/{version:semver}/package",
    responses={**IN_TENANT, **RAW_BODY},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/gzip": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
@body(BodyKind.PACKAGE)
async def upload_package(
    name: SlugPath,
    version: VersionPath,
    request: Request,
    tenant: str = Depends(tenant_scope),
    svc: ApiServices = Depends(services),
) -> dict[str, Any]:
    """The model's directory as a tar.gz (`application/gzip`): what the local runtime runs.
    Only a draft's package can be replaced; a bad archive leaves the previous one as it was."""
    files = await svc.packages.put(tenant, name, version, await request.body())
    return {"files": files}


@router.post(
    "/tenants/{tenant}/models/{name}/{version:semver}/deploy",
    status_code=202,
    responses={**IN_TENANT, **CONFLICT},
)
async def deploy_model(
    name: SlugPath,
    version: VersionPath,
    tenant: str = Depends(tenant_scope),
    svc: ApiServices = Depends(services),
) -> dict[str, Any]:
    """Start the deployment saga; the model is `deploying` until it is `active`, or back in
    `draft` with the reason. Follow it with GET .../deployment or .../events."""
    return model_json(await svc.deployments.deploy(tenant, name, version))


@router.post(
    "/tenants/{tenant}/models/{name}/{version:semver}/stop",
    status_code=202,
    responses={**IN_TENANT, **CONFLICT},
)
async def stop_model(
    name: SlugPath,
    version: VersionPath,
    tenant: str = Depends(tenant_scope),
    svc: ApiServices = Depends(services),
) -> dict[str, Any]:
    return model_json(await svc.deployments.stop(tenant, name, version))


@router.post(
    "/tenants/{tenant}/models/{name}/{version:semver}/retire", responses={**IN_TENANT, **CONFLICT}
)
async def retire_model(
    name: SlugPath,
    version: VersionPath,
    tenant: str = Depends(tenant_scope),
    svc: ApiServices = Depends(services),
) -> dict[str, Any]:
    """A stopped model back to draft."""
    return model_json(await svc.deployments.retire(tenant, name, version))


class UpdateBody(Strict):
    to_version: str = Field(max_length=MAX_VERSION_LENGTH, pattern=SEMVER_PATTERN)


@router.post(
    "/tenants/{tenant}/models/{name}/update",
    status_code=202,
    responses={**IN_TENANT, **WITH_BODY, **CONFLICT},
)
async def update_model(
    name: SlugPath,
    body: UpdateBody,
    tenant: str = Depends(tenant_scope),
    svc: ApiServices = Depends(services),
) -> dict[str, Any]:
    """Replace the active version of a model by another: deployed beside it, then it takes
    over; the old one keeps running if the new one fails."""
    return model_json(await svc.deployments.update(tenant, name, body.to_version))


@router.get("/tenants/{tenant}/models/{name}/{version:semver}/deployment", responses=IN_TENANT)
async def deployment_status(
    name: SlugPath,
    version: VersionPath,
    tenant: str = Depends(tenant_scope),
    svc: ApiServices = Depends(services),
) -> dict[str, Any]:
    """The saga and its steps, the runtime, health, the companion's counters, stale requests."""
    return await svc.deployments.describe(tenant, name, version)


@router.post(
    "/model-callbacks/{token}/{request_id}",
    status_code=204,
    responses={**problem_responses(404, 409), **RAW_BODY},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    },
)
async def model_callback(
    token: Annotated[str, Path(max_length=200)],
    request_id: Annotated[str, Path(max_length=200)],
    request: Request,
    svc: ApiServices = Depends(services),
) -> Response:
    """Where an asynchronous model sends its answer. The unguessable token in the URL the
    companion gave it is the credential."""
    try:
        answer = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise InvalidInput.of([Problem("body", "not JSON")], "answer") from None
    if not isinstance(answer, dict):
        raise InvalidInput.of([Problem("body", "an answer is an object with 'outputs'")], "answer")
    await svc.deployments.on_callback(token, request_id, answer)
    return Response(status_code=204)


@router.get("/library")
async def list_library() -> list[dict[str, Any]]:
    """The ready-made models this platform ships."""
    return [
        {
            "name": m.name,
            "version": m.manifest["manifest"]["version"],
            "summary": m.summary,
            "trigger": m.manifest["manifest"]["trigger"]["type"],
            "inputs": [c["dataColumnName"] for c in m.manifest["manifest"]["inputs"]],
            "outputs": [c["dataColumnName"] for c in m.manifest["manifest"]["outputs"]],
        }
        for m in CATALOG.values()
    ]


@router.post(
    "/tenants/{tenant}/library/{name}/import", status_code=201, responses={**IN_TENANT, **CONFLICT}
)
async def import_library_model(
    name: SlugPath, tenant: str = Depends(tenant_scope), svc: ApiServices = Depends(services)
) -> dict[str, Any]:
    """Submit a library model into the tenant as a draft, ready to map and deploy."""
    entry = library_model(name)
    return model_json(await svc.models.submit(tenant, orjson.dumps(entry.manifest)))
