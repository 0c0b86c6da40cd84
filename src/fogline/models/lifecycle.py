"""Moving a model version through its lifecycle, and telling the platform that it moved.

The transition table is `domain.lifecycle`; the store applies a move atomically (and refuses
an illegal one); this publishes `model.transitioned` for every move that happened, so that
no caller can change a model's state without the other contexts hearing of it.
"""

from __future__ import annotations

import asyncio
import logging

from fogline.bus.events import EventPublisher, ModelTransitioned
from fogline.domain.lifecycle import ModelEvent
from fogline.domain.models import ModelRecord
from fogline.store.models import ModelStore

log = logging.getLogger(__name__)


class ModelLifecycle:
    def __init__(self, store: ModelStore, events: EventPublisher) -> None:
        self.store = store
        self.events = events

    async def submitted(self, model: ModelRecord) -> None:
        """A new version entered the lifecycle (in draft)."""
        await self._publish(model, "submit", None, reason="submitted")

    async def move(self, model: ModelRecord, event: ModelEvent, reason: str) -> ModelRecord:
        """Apply `event` to the model as stored now (raises Conflict when the table refuses)."""
        before = await asyncio.to_thread(
            self.store.get_model, model.tenant, model.name, model.version
        )
        moved = await asyncio.to_thread(
            self.store.transition, model.tenant, model.name, model.version, event, reason
        )
        log.info(
            "model.transition",
            extra={
                "fields": {
                    "model": f"{model.name}:{model.version}",
                    "event": event.value,
                    "to": moved.state.value,
                }
            },
        )
        await self._publish(moved, event.value, before.state.value, reason)
        return moved

    async def _publish(
        self, model: ModelRecord, event: str, from_state: str | None, reason: str | None
    ) -> None:
        await self.events.publish_event(
            ModelTransitioned(
                tenant=model.tenant,
                model=model.name,
                version=model.version,
                event=event,
                from_state=from_state,
                to_state=model.state.value,
                reason=reason,
            )
        )
