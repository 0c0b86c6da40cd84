"""What every Server-Sent Events route shares: items from a queue for as long as the caller's
key may still act in the tenant, checked again every second; a key that stops being valid
(revoked, say) ends the stream with an `error` event carrying the problem."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

from fastapi import Request

from fogline.api.deps import key_still_valid
from fogline.api.problems import problem
from fogline.domain.errors import STATUS_OF_KIND

T = TypeVar("T")

KEY_CHECK_S = 1.0  # how soon a revoked key's streams end


async def while_key_valid(
    request: Request,
    tenant: str,
    queue: asyncio.Queue[T],
    render: Callable[[T], dict[str, str]],
    check: Callable[[], None] = lambda: None,
) -> AsyncIterator[dict[str, str]]:
    """Each queued item as an SSE event, until the key stops being valid. `check` runs at
    every turn and raises to end the stream (what feeds the queue broke)."""
    next_check = time.monotonic() + KEY_CHECK_S
    while True:
        try:  # no timer per item while items keep coming
            item: T | None = queue.get_nowait()
        except asyncio.QueueEmpty:
            try:
                item = await asyncio.wait_for(queue.get(), KEY_CHECK_S)
            except TimeoutError:
                item = None
        check()
        if time.monotonic() >= next_check:
            refused = await key_still_valid(request, tenant)
            if refused is not None:
                detail = f"the stream ends: {refused.message}"
                end = problem(STATUS_OF_KIND[refused.kind], detail).body
                yield {"event": "error", "data": bytes(end).decode()}
                return
            next_check = time.monotonic() + KEY_CHECK_S
        if item is not None:
            yield render(item)
