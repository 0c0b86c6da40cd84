"""Platform events of a tenant: what changed (models moved, assets and devices came and went,
mappings were replaced, deployment steps ran), read back from the durable events stream as a
page or followed live with Server-Sent Events. See docs/events.md for the contract."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query, Request
from sse_starlette.sse import EventSourceResponse

from fogline.api.deps import ScopedTenant, Services
from fogline.api.problems import IN_TENANT, UNAVAILABLE
from fogline.api.routing import FoglineRoute
from fogline.api.schemas.events import EventPage, StoredEventOut
from fogline.api.streams import while_key_valid
from fogline.bus.events import EventType, StoredEvent
from fogline.domain.errors import InvalidInput, Problem

router = APIRouter(tags=["events"], route_class=FoglineRoute, responses=IN_TENANT)

FOLLOW_QUEUE_LIMIT = 1000
READER_STOP_S = 1.0


# Stream sequences are unsigned 64-bit; a start past them is an error of the server's.
MAX_SEQ = 2**63 - 1
AfterSeq = Annotated[int, Query(ge=0, le=MAX_SEQ, description="only events after this sequence")]
EventTypes = Annotated[list[EventType] | None, Query(alias="type", description="only these")]


@router.get("/tenants/{tenant}/events", response_model=EventPage, responses=UNAVAILABLE)
async def list_events(
    tenant: ScopedTenant,
    svc: Services,
    after: AfterSeq = 0,
    event_types: EventTypes = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> EventPage:
    """The tenant's events after a sequence, oldest first."""
    stored = await svc.bus.read_events(after, tenant, event_types, limit)
    return EventPage(
        events=[StoredEventOut(seq=s.seq, event=s.event) for s in stored],
        last_seq=stored[-1].seq if stored else after,
    )


@router.get(
    "/tenants/{tenant}/events/stream",
    response_class=EventSourceResponse,
    responses={
        200: {
            "description": "Server-Sent Events: `following` first (data: where it starts), then "
            "each platform event as an SSE event whose `id` is its sequence (a client that "
            "reconnects with the `Last-Event-ID` header resumes after it), `event` its type and "
            "`data` the event as JSON; `error` (a problem) and the end when the key stops "
            "being valid",
            "content": {
                "text/event-stream": {
                    "itemSchema": {
                        "type": "object",
                        "required": ["event", "data"],
                        "properties": {
                            "id": {"type": "string"},
                            "event": {"type": "string"},
                            "data": {"type": "string", "contentMediaType": "application/json"},
                        },
                    }
                }
            },
        },
        **UNAVAILABLE,
    },
)
async def follow_events(
    request: Request,
    tenant: ScopedTenant,
    svc: Services,
    after: AfterSeq = 0,
    event_types: EventTypes = None,
) -> EventSourceResponse:
    """Stored events after `after` (or after the `Last-Event-ID` header, which an SSE client
    sends by itself when it reconnects), then new ones as they happen. The key is checked again
    every second: a revoked one ends the stream."""
    resumed = _last_event_id(request.headers.get("last-event-id"))
    start = resumed if resumed is not None else after
    queue: asyncio.Queue[StoredEvent] = asyncio.Queue(FOLLOW_QUEUE_LIMIT)

    async def pump() -> None:
        # Back-pressure, not loss: a slow reader slows the replay down.
        async for stored in svc.bus.follow_events(start, tenant, event_types):
            await queue.put(stored)

    async def stream() -> AsyncIterator[dict[str, str]]:
        reader = asyncio.create_task(pump(), name=f"events-{tenant}")

        def reader_broke() -> None:
            if reader.done():
                reader.result()  # a broken stream ends the response with its error

        try:
            yield {"event": "following", "data": json.dumps({"after": start})}
            async for event in while_key_valid(request, tenant, queue, _sse_of, reader_broke):
                yield event
        finally:
            # Not awaited to the end: a reader cut off in the middle of a NATS request could
            # hold the response open (seen once in many); its ephemeral consumer expires alone.
            reader.cancel()
            await asyncio.wait({reader}, timeout=READER_STOP_S)

    return EventSourceResponse(stream(), ping=15)


def _sse_of(stored: StoredEvent) -> dict[str, str]:
    return {
        "id": str(stored.seq),
        "event": stored.event.type,
        "data": stored.event.model_dump_json(),
    }


def _last_event_id(value: str | None) -> int | None:
    """The SSE protocol's own header, read here rather than declared: it is no parameter of
    the API but what an EventSource sends back (a sequence this stream gave it)."""
    if value is None:
        return None
    if not value.isdigit() or int(value) > MAX_SEQ:
        problem = Problem("Last-Event-ID", f"must be a sequence: 0 to {MAX_SEQ}")
        raise InvalidInput.of([problem], "request")
    return int(value)
