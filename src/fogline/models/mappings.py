"""Binding a model's inputs and outputs to telemetry: of one asset, of several, or of an asset
type (every asset of it, resolved afresh each time, so assets added to or removed from the type
are in or out without any further step).

Body of `PUT .../mappings`:

    {"assets": ["m1", "m2"],                      # same telemetry names as the columns
     "asset_types": {"motor": {"inputs": {"temperature": "winding_temp"}}}}

A target given as a list maps each column to the telemetry of the same name; as a mapping,
`inputs` / `outputs` rename columns, and columns not named keep their own name.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from fogline.bus.events import EventPublisher, MappingsChanged
from fogline.domain.assets import AssetType, DType
from fogline.domain.errors import InvalidInput, NotFound, Problem
from fogline.domain.lifecycle import ModelState
from fogline.domain.models import Mapping, ModelMappings, ModelRecord
from fogline.store.assets import AssetStore
from fogline.store.models import ModelMappingStore, ModelStore


@dataclass(frozen=True)
class ResolvedAsset:
    """What the data companion feeds for one asset: column -> telemetry, per direction."""

    asset: str
    via: str  # "asset" or "asset-type:<id>"
    inputs: dict[str, str]
    outputs: dict[str, str]


class ModelMappingService:
    def __init__(
        self,
        models: ModelStore,
        mappings: ModelMappingStore,
        assets: AssetStore,
        events: EventPublisher,
    ) -> None:
        self.models = models
        self.mappings = mappings
        self.assets = assets
        # mappings.changed after every change: running companions follow at once.
        self.events = events

    async def replace(
        self, tenant: str, name: str, version: str, body: dict[str, Any]
    ) -> ModelMappings:
        result = await asyncio.to_thread(self._replace, tenant, name, version, body)
        await self._changed(tenant, name, version, result)
        return result

    async def inherit(self, old: ModelRecord, new: ModelRecord) -> bool:
        """A new version without mappings of its own takes the old one's, when its columns
        allow. True when it did."""
        current = await asyncio.to_thread(self.mappings.get, new.id)
        if current.assets or current.asset_types:
            return False
        previous = await asyncio.to_thread(self.mappings.get, old.id)
        columns = {(t.direction, t.name) for t in new.templates}
        if not all(
            (m.direction, m.column) in columns for m in previous.assets + previous.asset_types
        ):
            return False
        await asyncio.to_thread(self.mappings.replace, new.id, previous)
        await self._changed(new.tenant, new.name, new.version, previous)
        return True

    async def clear(self, model: ModelRecord) -> None:
        """Undo an inheritance: the model is left with no mappings."""
        nothing = ModelMappings((), ())
        await asyncio.to_thread(self.mappings.replace, model.id, nothing)
        await self._changed(model.tenant, model.name, model.version, nothing)

    async def _changed(self, tenant: str, name: str, version: str, now: ModelMappings) -> None:
        await self.events.publish_event(
            MappingsChanged(
                tenant=tenant,
                model=name,
                version=version,
                assets=sorted({m.target for m in now.assets}),
                asset_types=sorted({m.target for m in now.asset_types}),
            )
        )

    def _replace(self, tenant: str, name: str, version: str, body: dict[str, Any]) -> ModelMappings:
        model = self.models.get_model(tenant, name, version)
        if model.state is ModelState.REMOVED:
            raise NotFound(f"model {name} version {version} was removed")
        problems: list[Problem] = []
        unknown = set(body) - {"assets", "asset_types"}
        problems += [Problem(k, "unknown key; use 'assets' and 'asset_types'") for k in unknown]
        assets = self._targets(tenant, model, body.get("assets", []), "assets", problems)
        types = self._targets(tenant, model, body.get("asset_types", []), "asset_types", problems)
        if problems:
            raise InvalidInput.of(problems, "mappings")
        mappings = ModelMappings(tuple(assets), tuple(types))
        self.mappings.replace(model.id, mappings)
        return mappings

    def _targets(
        self,
        tenant: str,
        model: ModelRecord,
        given: Any,
        key: str,
        problems: list[Problem],
    ) -> list[Mapping]:
        if isinstance(given, list):
            given = {target: {} for target in given}
        if not isinstance(given, dict):
            problems.append(Problem(key, "must be a list of ids or a mapping of id to columns"))
            return []
        result: list[Mapping] = []
        for target, spec in given.items():
            where = f"{key}.{target}"
            asset_type = self._type_of(tenant, key, str(target), where, problems)
            if asset_type is None:
                continue
            if not isinstance(spec, dict) or set(spec) - {"inputs", "outputs"}:
                problems.append(Problem(where, "must be {'inputs': {...}, 'outputs': {...}}"))
                continue
            for direction, side in (("input", "inputs"), ("output", "outputs")):
                renames = spec.get(side) or {}
                columns = [t for t in model.templates if t.direction == direction]
                for name in set(renames) - {c.name for c in columns}:
                    problems.append(
                        Problem(f"{where}.{side}.{name}", "the model has no such column")
                    )
                for column in columns:
                    telemetry = str(renames.get(column.name, column.name))
                    definition = asset_type.definition(telemetry)
                    path = f"{where}.{side}.{column.name}"
                    if definition is None:
                        problems.append(
                            Problem(
                                path, f"asset type {asset_type.id!r} has no telemetry {telemetry!r}"
                            )
                        )
                        continue
                    if direction == "output" and column.read_as_string != (
                        definition.dtype is DType.STRING
                    ):
                        wanted = "string" if column.read_as_string else "float, int or bool"
                        problems.append(
                            Problem(
                                path,
                                f"output {column.name!r} needs a {wanted} telemetry; "
                                f"{telemetry!r} is {definition.dtype.value}",
                            )
                        )
                        continue
                    result.append(Mapping(direction, column.name, str(target), telemetry))
        return result

    def _type_of(
        self, tenant: str, key: str, target: str, where: str, problems: list[Problem]
    ) -> AssetType | None:
        try:
            if key == "assets":
                type_id = self.assets.get_asset(tenant, target).asset_type
            else:
                type_id = target
            return self.assets.get_asset_type(tenant, type_id)
        except NotFound as exc:
            problems.append(Problem(where, exc.message))
            return None

    async def get(self, tenant: str, name: str, version: str) -> ModelMappings:
        model = await asyncio.to_thread(self.models.get_model, tenant, name, version)
        return await asyncio.to_thread(self.mappings.get, model.id)

    async def resolve(self, tenant: str, name: str, version: str) -> list[ResolvedAsset]:
        return await asyncio.to_thread(self._resolve, tenant, name, version)

    def _resolve(self, tenant: str, name: str, version: str) -> list[ResolvedAsset]:
        """Concrete mappings first; a type mapping covers every asset of the type that has no
        concrete mapping of its own. Assets are read now, so the answer follows the fleet."""
        model = self.models.get_model(tenant, name, version)
        mappings = self.mappings.get(model.id)
        resolved: dict[str, ResolvedAsset] = {}
        for m in mappings.assets:
            entry = resolved.setdefault(m.target, ResolvedAsset(m.target, "asset", {}, {}))
            (entry.inputs if m.direction == "input" else entry.outputs)[m.column] = m.telemetry
        by_type: dict[str, list[Mapping]] = {}
        for m in mappings.asset_types:
            by_type.setdefault(m.target, []).append(m)
        for type_id, type_mappings in sorted(by_type.items()):
            for asset in self.assets.list_assets(tenant, type_id):
                if asset.id in resolved:
                    continue
                entry = ResolvedAsset(asset.id, f"asset-type:{type_id}", {}, {})
                for m in type_mappings:
                    target = entry.inputs if m.direction == "input" else entry.outputs
                    target[m.column] = m.telemetry
                resolved[asset.id] = entry
        return [resolved[a] for a in sorted(resolved)]
