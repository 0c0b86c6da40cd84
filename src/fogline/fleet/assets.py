"""Asset types and assets: the telemetry definitions every reading is checked against."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any, Literal

from fogline.bus.events import Change, EventPublisher, RegistryChanged
from fogline.domain.assets import (
    Asset,
    AssetType,
    Location,
    check_attribute_definitions,
    check_telemetry_definitions,
    resolve_attributes,
)
from fogline.domain.errors import AlreadyExists, InvalidInput, NotFound, Problem
from fogline.domain.ids import slug_problem
from fogline.store.assets import AssetStore

_UNSET: Any = object()


class AssetRegistry:
    """Checks and stores asset types and assets, and publishes `registry.changed` for each
    change (validation caches drop what they knew, data companions follow their assets)."""

    def __init__(self, store: AssetStore, events: EventPublisher) -> None:
        self.store = store
        self.events = events

    async def create_asset_type(self, asset_type: AssetType) -> None:
        """A new asset type; one that exists already is left as it is (`put_asset_type`
        replaces)."""
        try:
            await self.get_asset_type(asset_type.tenant, asset_type.id)
        except NotFound:
            pass
        else:
            raise AlreadyExists(f"asset type {asset_type.id!r} already exists; PUT replaces it")
        await self.put_asset_type(asset_type)

    async def put_asset_type(self, asset_type: AssetType) -> bool:
        problems = []
        if (p := slug_problem(asset_type.id, "id")) is not None:
            problems.append(p)
        problems += check_telemetry_definitions(list(asset_type.telemetry), "telemetry")
        problems += check_attribute_definitions(list(asset_type.attributes), "attributes")
        if problems:
            raise InvalidInput.of(problems, "asset type")
        created = await asyncio.to_thread(self.store.put_asset_type, asset_type)
        change = Change.CREATED if created else Change.UPDATED
        await self._changed(asset_type.tenant, "asset_type", asset_type.id, change)
        return created

    async def get_asset_type(self, tenant: str, type_id: str) -> AssetType:
        return await asyncio.to_thread(self.store.get_asset_type, tenant, type_id)

    async def list_asset_types(self, tenant: str) -> list[AssetType]:
        return await asyncio.to_thread(self.store.list_asset_types, tenant)

    async def delete_asset_type(self, tenant: str, type_id: str) -> None:
        await asyncio.to_thread(self.store.delete_asset_type, tenant, type_id)
        await self._changed(tenant, "asset_type", type_id, Change.DELETED)

    async def create_asset(self, asset: Asset) -> Asset:
        problems = []
        if (p := slug_problem(asset.id, "id")) is not None:
            problems.append(p)
        asset_type = await self._type_for(asset.tenant, asset.asset_type, problems)
        if problems or asset_type is None:
            raise InvalidInput.of(problems, "asset")
        asset = replace(asset, attributes=resolve_attributes(asset_type, asset.attributes))
        await asyncio.to_thread(self.store.create_asset, asset)
        await self._changed(asset.tenant, "asset", asset.id, Change.CREATED)
        return asset

    async def _type_for(
        self, tenant: str, type_id: str, problems: list[Problem]
    ) -> AssetType | None:
        try:
            return await asyncio.to_thread(self.store.get_asset_type, tenant, type_id)
        except NotFound:
            problems.append(Problem("asset_type", f"asset type {type_id!r} does not exist"))
            return None

    async def update_asset(
        self,
        tenant: str,
        asset_id: str,
        *,
        name: str | None = None,
        attributes: dict[str, Any] | None = None,
        labels: dict[str, str] | None = None,
        site: str | None = _UNSET,
        location: Location | None = _UNSET,
    ) -> Asset:
        """Change what is given; attributes and labels are merged, a None value removes a key."""
        asset = await asyncio.to_thread(self.store.get_asset, tenant, asset_id)
        changes: dict[str, Any] = {}
        if name is not None:
            changes["name"] = name
        if attributes is not None:
            merged = {k: v for k, v in {**asset.attributes, **attributes}.items() if v is not None}
            asset_type = await self.get_asset_type(tenant, asset.asset_type)
            changes["attributes"] = resolve_attributes(asset_type, merged)
        if labels is not None:
            changes["labels"] = {
                k: v for k, v in {**asset.labels, **labels}.items() if v is not None
            }
        if site is not _UNSET:
            changes["site"] = site
        if location is not _UNSET:
            changes["location"] = location
        updated = replace(asset, **changes)
        await asyncio.to_thread(self.store.update_asset, updated)
        await self._changed(tenant, "asset", asset_id, Change.UPDATED)
        return updated

    async def get_asset(self, tenant: str, asset_id: str) -> Asset:
        return await asyncio.to_thread(self.store.get_asset, tenant, asset_id)

    async def list_assets(self, tenant: str, asset_type: str | None = None) -> list[Asset]:
        return await asyncio.to_thread(self.store.list_assets, tenant, asset_type)

    async def delete_asset(self, tenant: str, asset_id: str) -> None:
        await asyncio.to_thread(self.store.delete_asset, tenant, asset_id)
        await self._changed(tenant, "asset", asset_id, Change.DELETED)

    async def _changed(
        self, tenant: str, kind: Literal["asset_type", "asset"], target: str, change: Change
    ) -> None:
        await self.events.publish_event(
            RegistryChanged(tenant=tenant, kind=kind, target=target, change=change)
        )
