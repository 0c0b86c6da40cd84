"""Models: submitted by manifest (JSON or YAML), versioned, with a lifecycle."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Depends, Request

from fogline.api.deps import ApiServices, services, tenant_scope
from fogline.domain.timeseries import iso_from_ms
from fogline.models.manifest import REDACTED
from fogline.store.models import Mapping, ModelEventRecord, ModelMappings, ModelRecord

router = APIRouter(tags=["models"])


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


@router.post("/tenants/{tenant}/models", status_code=201)
async def submit_model(
    request: Request, tenant: str = Depends(tenant_scope), svc: ApiServices = Depends(services)
) -> dict[str, Any]:
    """Submit a manifest as JSON or YAML (`Content-Type: application/json` or
    `application/yaml`). Every problem is reported at once; nothing is stored unless all is
    well. The model starts as a draft."""
    return model_json(await svc.models.submit(tenant, await request.body()))


@router.get("/tenants/{tenant}/models")
async def list_models(
    tenant: str = Depends(tenant_scope), svc: ApiServices = Depends(services)
) -> list[dict[str, Any]]:
    return [model_json(m) for m in await svc.models.all(tenant)]


@router.get("/tenants/{tenant}/models/{name}/{version}")
async def get_model(
    name: str,
    version: str,
    tenant: str = Depends(tenant_scope),
    svc: ApiServices = Depends(services),
) -> dict[str, Any]:
    return model_json(await svc.models.get(tenant, name, version))


@router.get("/tenants/{tenant}/models/{name}/{version}/events")
async def model_events(
    name: str,
    version: str,
    tenant: str = Depends(tenant_scope),
    svc: ApiServices = Depends(services),
) -> list[dict[str, Any]]:
    return [event_json(e) for e in await svc.models.events(tenant, name, version)]


@router.delete("/tenants/{tenant}/models/{name}/{version}")
async def remove_model(
    name: str,
    version: str,
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


@router.put("/tenants/{tenant}/models/{name}/{version}/mappings")
async def replace_mappings(
    name: str,
    version: str,
    body: dict[str, Any],
    tenant: str = Depends(tenant_scope),
    svc: ApiServices = Depends(services),
) -> dict[str, Any]:
    """Bind inputs and outputs to telemetry of assets and asset types (replaces all)."""
    mappings = await svc.mappings.replace(tenant, name, version, body)
    resolved = await svc.mappings.resolve(tenant, name, version)
    return {**mappings_json(mappings), "resolved": [asdict(r) for r in resolved]}


@router.get("/tenants/{tenant}/models/{name}/{version}/mappings")
async def get_mappings(
    name: str,
    version: str,
    tenant: str = Depends(tenant_scope),
    svc: ApiServices = Depends(services),
) -> dict[str, Any]:
    """The declared mappings, and `resolved`: every asset fed now, type mappings expanded."""
    mappings = await svc.mappings.get(tenant, name, version)
    resolved = await svc.mappings.resolve(tenant, name, version)
    return {**mappings_json(mappings), "resolved": [asdict(r) for r in resolved]}
