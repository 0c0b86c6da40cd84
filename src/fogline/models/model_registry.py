"""Submitting, reading and removing models: the registry side of model management."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from fogline.domain.lifecycle import ModelEvent
from fogline.domain.models import (
    Direction,
    ModelEventRecord,
    ModelRecord,
    RegistryCredentials,
    TemplateColumn,
)
from fogline.models.lifecycle import ModelLifecycle
from fogline.models.manifest import LimitCaps, Manifest, parse_manifest
from fogline.store.models import ModelStore
from fogline.store.secrets import SecretBox

log = logging.getLogger(__name__)


def templates_of(manifest: Manifest) -> list[TemplateColumn]:
    m = manifest.manifest
    return [
        TemplateColumn(Direction.INPUT, c.data_column_name, c.read_as_string) for c in m.inputs
    ] + [TemplateColumn(Direction.OUTPUT, c.data_column_name, c.read_as_string) for c in m.outputs]


Cleanup = Callable[[str, str, str], Awaitable[None]]


class ModelRegistry:
    def __init__(
        self,
        store: ModelStore,
        lifecycle: ModelLifecycle,
        secrets: SecretBox,
        caps: LimitCaps | None = None,
        on_removed: list[Cleanup] | None = None,
    ) -> None:
        self.store = store
        self.lifecycle = lifecycle
        self.secrets = secrets
        self.caps = caps or LimitCaps()
        self.on_removed = on_removed or []

    async def submit(self, tenant: str, document: str | bytes) -> ModelRecord:
        """Check the manifest in full, then store it as a draft: nothing is stored when any
        part is wrong. The registry password is encrypted before it reaches the database."""
        manifest = parse_manifest(document, self.caps)
        m = manifest.manifest
        registry = None
        container = m.model.container
        if container is not None and container.custom_registry is not None:
            r = container.custom_registry
            sealed = self.secrets.seal(r.password) if r.password is not None else None
            registry = RegistryCredentials(r.registry, r.username, sealed)
        record = await asyncio.to_thread(
            self.store.create_model,
            tenant,
            m.name,
            m.version,
            m.description,
            manifest.without_secrets(),
            templates_of(manifest),
            registry,
        )
        log.info(
            "model.submitted",
            extra={"fields": {"tenant": tenant, "model": m.name, "version": m.version}},
        )
        await self.lifecycle.submitted(record)
        return record

    async def get(self, tenant: str, name: str, version: str) -> ModelRecord:
        return await asyncio.to_thread(self.store.get_model, tenant, name, version)

    async def all(self, tenant: str) -> list[ModelRecord]:
        return await asyncio.to_thread(self.store.list_models, tenant)

    async def events(self, tenant: str, name: str, version: str) -> list[ModelEventRecord]:
        return await asyncio.to_thread(self.store.events, tenant, name, version)

    async def remove(self, tenant: str, name: str, version: str) -> ModelRecord:
        """Only a draft can be removed (the lifecycle table says so). Its package and working
        directory (disk image, log) go with it."""
        model = await self.get(tenant, name, version)
        record = await self.lifecycle.move(model, ModelEvent.REMOVE, "removed by a user")
        for cleanup in self.on_removed:
            await cleanup(tenant, name, version)
        return record
