"""Models: submitted by manifest (JSON or YAML), versioned, with a lifecycle."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Annotated

import orjson
from fastapi import APIRouter, Path, Query, Request, Response
from sse_starlette.sse import EventSourceResponse

from fogline.api.deps import KeyTenant, ScopedTenant, Services, SlugPath
from fogline.api.limits import BodyKind, body
from fogline.api.problems import (
    CONFLICT,
    IN_TENANT,
    RAW_BODY,
    WITH_BODY,
    problem_responses,
)
from fogline.api.routing import FoglineRoute
from fogline.api.schemas.models import (
    BackfillIn,
    BackfillOut,
    DeploymentOut,
    LibraryEntryOut,
    LibraryImportIn,
    MappingsIn,
    MappingsOut,
    ModelDeadLetterOut,
    ModelDeadLettersOut,
    ModelEventOut,
    ModelLogOut,
    ModelOut,
    PackageOut,
    UpdateBody,
)
from fogline.api.streams import while_key_valid
from fogline.domain.errors import InvalidInput, Problem
from fogline.domain.timeseries import now_ms, parse_query_range
from fogline.library.catalog import CATALOG, library_model
from fogline.models.manifest import (
    MAX_VERSION_LENGTH,
    SEMVER_PATTERN,
    with_parameter_values,
)
from fogline.models.model_log import MAX_TAIL_BYTES, follow_lines, size_of, tail_lines
from fogline.models.outputs import load_answer

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


@router.post(
    "/tenants/{tenant}/models",
    status_code=201,
    responses={**IN_TENANT, **RAW_BODY, **CONFLICT},
    openapi_extra=MANIFEST_BODY,
)
async def submit_model(request: Request, tenant: ScopedTenant, svc: Services) -> ModelOut:
    """Submit a manifest as JSON or YAML (`Content-Type: application/json` or
    `application/yaml`). Every problem is reported at once; nothing is stored unless all is
    well. The model starts as a draft."""
    return ModelOut.of(await svc.models.submit(tenant, await request.body()))


@router.post(
    "/models",
    status_code=201,
    responses={**IN_TENANT, **RAW_BODY, **CONFLICT},
    openapi_extra=MANIFEST_BODY,
)
async def submit_model_to_key_tenant(
    request: Request, tenant: KeyTenant, svc: Services
) -> ModelOut:
    """`POST /tenants/{tenant}/models` for the API key's own tenant (or `?tenant=`)."""
    return ModelOut.of(await svc.models.submit(tenant, await request.body()))


@router.get("/models", responses=IN_TENANT)
async def list_models_of_key_tenant(tenant: KeyTenant, svc: Services) -> list[ModelOut]:
    """`GET /tenants/{tenant}/models` for the API key's own tenant (or `?tenant=`)."""
    return [ModelOut.of(m) for m in await svc.models.all(tenant)]


@router.get("/tenants/{tenant}/models", responses=IN_TENANT)
async def list_models(tenant: ScopedTenant, svc: Services) -> list[ModelOut]:
    return [ModelOut.of(m) for m in await svc.models.all(tenant)]


@router.get("/tenants/{tenant}/models/{name}/{version:semver}", responses=IN_TENANT)
async def get_model(
    name: SlugPath, version: VersionPath, tenant: ScopedTenant, svc: Services
) -> ModelOut:
    return ModelOut.of(await svc.models.get(tenant, name, version))


@router.get("/tenants/{tenant}/models/{name}/{version:semver}/events", responses=IN_TENANT)
async def model_events(
    name: SlugPath, version: VersionPath, tenant: ScopedTenant, svc: Services
) -> list[ModelEventOut]:
    return [ModelEventOut.of(e) for e in await svc.models.events(tenant, name, version)]


@router.delete(
    "/tenants/{tenant}/models/{name}/{version:semver}", responses={**IN_TENANT, **CONFLICT}
)
async def remove_model(
    name: SlugPath, version: VersionPath, tenant: ScopedTenant, svc: Services
) -> ModelOut:
    """Remove a draft model (refused, with the reason, in any other state)."""
    return ModelOut.of(await svc.models.remove(tenant, name, version))


@router.put(
    "/tenants/{tenant}/models/{name}/{version:semver}/mappings",
    responses={**IN_TENANT, **WITH_BODY, **CONFLICT},
)
async def replace_mappings(
    name: SlugPath,
    version: VersionPath,
    body: MappingsIn,
    tenant: ScopedTenant,
    svc: Services,
) -> MappingsOut:
    """Bind inputs and outputs to telemetry of assets and asset types (replaces all)."""
    mappings = await svc.mappings.replace(
        tenant, name, version, body.to_domain(), found=body.unknown_keys()
    )
    return MappingsOut.of(mappings, await svc.mappings.resolve(tenant, name, version))


@router.get("/tenants/{tenant}/models/{name}/{version:semver}/mappings", responses=IN_TENANT)
async def get_mappings(
    name: SlugPath, version: VersionPath, tenant: ScopedTenant, svc: Services
) -> MappingsOut:
    """The declared mappings, and `resolved`: every asset fed now, type mappings expanded."""
    mappings = await svc.mappings.get(tenant, name, version)
    return MappingsOut.of(mappings, await svc.mappings.resolve(tenant, name, version))


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
    tenant: ScopedTenant,
    svc: Services,
) -> PackageOut:
    """The model's directory as a tar.gz (`application/gzip`): what the local runtime runs.
    Only a draft's package can be replaced; a bad archive leaves the previous one as it was."""
    files = await svc.packages.put(tenant, name, version, await request.body())
    return PackageOut(files=files)


@router.post(
    "/tenants/{tenant}/models/{name}/{version:semver}/deploy",
    status_code=202,
    responses={**IN_TENANT, **CONFLICT},
)
async def deploy_model(
    name: SlugPath, version: VersionPath, tenant: ScopedTenant, svc: Services
) -> ModelOut:
    """Start the deployment saga; the model is `deploying` until it is `active`, or back in
    `draft` with the reason. Follow it with GET .../deployment or .../events. One version of a
    model runs at a time: while another version is deploying, active, updating or stopping,
    409 names it (replace it with POST .../models/{name}/update, or stop it first)."""
    return ModelOut.of(await svc.deployments.deploy(tenant, name, version))


@router.post(
    "/tenants/{tenant}/models/{name}/{version:semver}/stop",
    status_code=202,
    responses={**IN_TENANT, **CONFLICT},
)
async def stop_model(
    name: SlugPath, version: VersionPath, tenant: ScopedTenant, svc: Services
) -> ModelOut:
    return ModelOut.of(await svc.deployments.stop(tenant, name, version))


@router.post(
    "/tenants/{tenant}/models/{name}/{version:semver}/retire", responses={**IN_TENANT, **CONFLICT}
)
async def retire_model(
    name: SlugPath, version: VersionPath, tenant: ScopedTenant, svc: Services
) -> ModelOut:
    """A stopped model back to draft."""
    return ModelOut.of(await svc.deployments.retire(tenant, name, version))


@router.post(
    "/tenants/{tenant}/models/{name}/update",
    status_code=202,
    responses={**IN_TENANT, **WITH_BODY, **CONFLICT},
)
async def update_model(
    name: SlugPath,
    body: UpdateBody,
    tenant: ScopedTenant,
    svc: Services,
) -> ModelOut:
    """Replace the active version of a model by another: deployed beside it, then it takes
    over; the old one keeps running if the new one fails. 409 when no version is active, or
    another update is under way; a refused update changes nothing (not even the mappings the
    new version would have taken over)."""
    return ModelOut.of(await svc.deployments.update(tenant, name, body.to_version))


@router.get("/tenants/{tenant}/models/{name}/{version:semver}/deployment", responses=IN_TENANT)
async def deployment_status(
    name: SlugPath, version: VersionPath, tenant: ScopedTenant, svc: Services
) -> DeploymentOut:
    """The saga and its steps, the runtime, health, the companion's counters, stale requests."""
    return DeploymentOut.model_validate(await svc.deployments.describe(tenant, name, version))


LogLines = Annotated[int, Query(ge=0, le=10_000, description="how many of the last lines")]
LOG_FOLLOW_QUEUE = 1000


@router.get("/tenants/{tenant}/models/{name}/{version:semver}/logs", responses=IN_TENANT)
async def model_logs(
    name: SlugPath, version: VersionPath, tenant: ScopedTenant, svc: Services, lines: LogLines = 100
) -> ModelLogOut:
    """The last lines the model's process wrote (stdout and stderr), read from the end of its
    log (at most 1 MiB). 404 for a model never started on this platform."""
    path = await svc.deployments.log_file(tenant, name, version)
    return ModelLogOut(lines=await asyncio.to_thread(tail_lines, path, lines))


@router.get(
    "/tenants/{tenant}/models/{name}/{version:semver}/logs/stream",
    response_class=EventSourceResponse,
    responses={
        200: {
            "description": "Server-Sent Events: each line of the log as a `line` event (the "
            "last `lines` first, then each new one as it is written); `error` (a problem) and "
            "the end when the key stops being valid",
            "content": {
                "text/event-stream": {
                    "itemSchema": {
                        "type": "object",
                        "required": ["event", "data"],
                        "properties": {"event": {"type": "string"}, "data": {"type": "string"}},
                    }
                }
            },
        },
        **IN_TENANT,
    },
)
async def follow_model_logs(
    request: Request,
    name: SlugPath,
    version: VersionPath,
    tenant: ScopedTenant,
    svc: Services,
    lines: LogLines = 10,
) -> EventSourceResponse:
    """The model's log followed: its last lines, then each new one, as `fogline model logs
    --follow` shows them. The key is checked again every second."""
    path = await svc.deployments.log_file(tenant, name, version)
    queue: asyncio.Queue[str] = asyncio.Queue(LOG_FOLLOW_QUEUE)

    async def pump() -> None:
        # The tail ends where following starts: no line is lost or shown twice between them.
        start = await asyncio.to_thread(size_of, path)
        for line in await asyncio.to_thread(tail_lines, path, lines, MAX_TAIL_BYTES, start):
            await queue.put(line)
        async for line in follow_lines(path, start):
            await queue.put(line)

    async def stream() -> AsyncIterator[dict[str, str]]:
        reader = asyncio.create_task(pump(), name=f"model-log-{tenant}-{name}")

        def reader_broke() -> None:
            if reader.done():
                reader.result()

        try:
            async for event in while_key_valid(request, tenant, queue, _log_event, reader_broke):
                yield event
        finally:
            reader.cancel()
            await asyncio.wait({reader}, timeout=1.0)

    return EventSourceResponse(stream(), ping=15)


def _log_event(line: str) -> dict[str, str]:
    return {"event": "line", "data": line}


@router.post(
    "/tenants/{tenant}/models/{name}/{version:semver}/backfills",
    responses={**IN_TENANT, **WITH_BODY, **CONFLICT},
)
async def backfill_model(
    name: SlugPath, version: VersionPath, body: BackfillIn, tenant: ScopedTenant, svc: Services
) -> BackfillOut:
    """Run the deployed model over the stored history of one mapped asset in [from, to), as
    it would have run live (event-time windows, or the readings in order), writing its
    outputs as telemetry at the readings' own times; answers when done, with the counts. At
    most a day per request. 409 when the model is not running, or is stateful without
    `stateful_ok`; 422 for a bad range (empty, inverted, over a day, or starting in the
    future) or an asset not mapped to it."""
    start, end = parse_query_range(body.from_, body.to, now_ms())
    report = await svc.deployments.backfill(
        tenant, name, version, body.asset, start, end, body.stateful_ok
    )
    return BackfillOut.model_validate(asdict(report))


@router.get("/tenants/{tenant}/models/{name}/{version:semver}/dead-letters", responses=IN_TENANT)
async def model_dead_letters(
    name: SlugPath,
    version: VersionPath,
    tenant: ScopedTenant,
    svc: Services,
    before: Annotated[int | None, Query(ge=1, le=2**62, description="an id: older only")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> ModelDeadLettersOut:
    """What the model lost, newest first: readings its companion accepted but could not score
    (one record per call or per batch of drops) and output values that could not be written,
    each with the reason and the original values."""
    page = await svc.deployments.dead_letters(tenant, name, version, limit, before)
    return ModelDeadLettersOut(
        items=[ModelDeadLetterOut.of(d) for d in page],
        next_before=page[-1].id if len(page) == limit else None,
    )


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
@body(BodyKind.MODEL_ANSWER)
async def model_callback(
    token: Annotated[str, Path(max_length=200)],
    request_id: Annotated[str, Path(max_length=200)],
    request: Request,
    svc: Services,
) -> Response:
    """Where an asynchronous model sends its answer. The unguessable token in the URL the
    companion gave it is the credential, checked before the body is read (an answer may be as
    large as a direct one: 32 MiB)."""
    svc.deployments.check_callback(token)
    try:
        answer = load_answer(await request.body())
    except ValueError:
        raise InvalidInput.of([Problem("body", "not JSON")], "answer") from None
    if not isinstance(answer, dict):
        raise InvalidInput.of([Problem("body", "an answer is an object with 'outputs'")], "answer")
    await svc.deployments.on_callback(token, request_id, answer)
    return Response(status_code=204)


@router.get("/library")
async def list_library() -> list[LibraryEntryOut]:
    """The ready-made models this platform ships."""
    return [LibraryEntryOut.of(m) for m in CATALOG.values()]


@router.get("/library/{name}", responses=problem_responses(404, 422))
async def show_library_model(name: SlugPath) -> LibraryEntryOut:
    """One library model: what it reads and writes, and the parameters it takes."""
    return LibraryEntryOut.of(library_model(name))


@router.post(
    "/tenants/{tenant}/library/{name}/import",
    status_code=201,
    responses={**IN_TENANT, **CONFLICT, **WITH_BODY},
)
async def import_library_model(
    name: SlugPath, tenant: ScopedTenant, svc: Services, body: LibraryImportIn | None = None
) -> ModelOut:
    """Submit a library model into the tenant as a draft, ready to map and deploy; with
    `parameters`, the draft runs with those values (checked against the model's types and
    bounds, every problem at once)."""
    entry = library_model(name)
    document = entry.manifest
    if body is not None and body.parameters:
        # Every problem at once, under `parameters.<name>`: unknown names, types and bounds,
        # and what the values that passed say together (built as the model builds them).
        document = with_parameter_values(document, body.parameters, entry.parameter_problems)
    if body is not None and body.version is not None:
        document = {"manifest": {**document["manifest"], "version": body.version}}
    return ModelOut.of(await svc.models.submit(tenant, orjson.dumps(document)))
