"""Binding a model's inputs and outputs to telemetry: of one asset, of several, or of an asset
type (every asset of it, resolved afresh each time, so assets added to or removed from the type
are in or out without any further step).

What `PUT .../mappings` asks for, once the API has read its body (`MappingRequest`): per asset
and per asset type, the columns to rename (`inputs` / `outputs`: column -> telemetry); columns
not named read or write the telemetry of their own name. Here: whether those assets, types,
columns and telemetry exist and fit.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from fogline.bus.events import EventPublisher, MappingsChanged
from fogline.domain.assets import AssetType, DType
from fogline.domain.errors import InvalidInput, NotFound, Problem
from fogline.domain.lifecycle import ModelState
from fogline.domain.models import Direction, Mapping, ModelMappings, ModelRecord, TemplateColumn
from fogline.store.assets import AssetStore
from fogline.store.models import ModelMappingStore, ModelStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ColumnRenames:
    """Column -> telemetry, per direction; a column not named keeps its own name."""

    inputs: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class MappingRequest:
    """The mappings asked for: by asset id, and by asset type id."""

    assets: dict[str, ColumnRenames] = field(default_factory=dict)
    asset_types: dict[str, ColumnRenames] = field(default_factory=dict)


@dataclass(frozen=True)
class Inheritance:
    """What `inherit` did to a new version's mappings: `before`, its own (kept when it had
    any: then nothing changed), and `after`, what it holds now; `undo` goes back to `before`."""

    model: ModelRecord
    before: ModelMappings
    after: ModelMappings

    @property
    def changed(self) -> bool:
        return self.before != self.after


@dataclass(frozen=True)
class ResolvedAsset:
    """What the data companion feeds for one asset: column -> telemetry, per direction."""

    asset: str
    via: str  # "asset" or "asset-type:<id>"
    inputs: dict[str, str]
    outputs: dict[str, str]


class DeviceTelemetryLookup(Protocol):
    def device_telemetry(self, tenant: str, assets: Sequence[str]) -> dict[str, set[str]]:
        """Per asset: the telemetry a device has ever written on it."""
        ...


class ModelMappingService:
    def __init__(
        self,
        models: ModelStore,
        mappings: ModelMappingStore,
        assets: AssetStore,
        telemetry: DeviceTelemetryLookup,
        events: EventPublisher,
    ) -> None:
        self.models = models
        self.mappings = mappings
        self.assets = assets
        self.telemetry = telemetry
        # mappings.changed after every change: running companions follow at once.
        self.events = events

    async def replace(
        self,
        tenant: str,
        name: str,
        version: str,
        request: MappingRequest,
        found: Sequence[Problem] = (),
    ) -> ModelMappings:
        """Replace every mapping of the model, or none: `InvalidInput` lists every problem,
        those of `found` (what the caller already found wrong with the request) with these
        checks' own, so that one answer tells them all."""
        result = await asyncio.to_thread(self._replace, tenant, name, version, request, found)
        await self._changed(tenant, name, version, result)
        return result

    async def inherit(self, old: ModelRecord, new: ModelRecord) -> Inheritance:
        """A new version without mappings of its own takes the old one's, when its columns
        allow. The answer says what the new version held before and holds now, for `undo`."""
        inheritance = await asyncio.to_thread(self._inherit, old, new)
        if inheritance.changed:
            await self._changed(new.tenant, new.name, new.version, inheritance.after)
        return inheritance

    def _inherit(self, old: ModelRecord, new: ModelRecord) -> Inheritance:
        own = self.mappings.get(new.id)
        if own.assets or own.asset_types:
            return Inheritance(new, own, own)
        previous = self.mappings.get(old.id)
        columns = {(t.direction, t.name) for t in new.templates}
        if not all(
            (m.direction, m.column) in columns for m in previous.assets + previous.asset_types
        ):
            return Inheritance(new, own, own)
        self.mappings.replace(new.id, previous)
        # Read back rather than kept: the store orders them by the new version's columns.
        return Inheritance(new, own, self.mappings.get(new.id))

    async def undo(self, inheritance: Inheritance) -> None:
        """Put the new version's mappings back as they were before `inherit` (an update that
        was refused or lost changes nothing). Mappings a user replaced since are theirs: kept."""
        if not inheritance.changed:
            return
        model = inheritance.model
        current = await asyncio.to_thread(self.mappings.get, model.id)
        if current != inheritance.after:
            log.warning(
                "mappings.undo_skipped",
                extra={"fields": {"model": f"{model.name}:{model.version}"}},
            )
            return
        await asyncio.to_thread(self.mappings.replace, model.id, inheritance.before)
        await self._changed(model.tenant, model.name, model.version, inheritance.before)

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

    def _replace(
        self,
        tenant: str,
        name: str,
        version: str,
        request: MappingRequest,
        found: Sequence[Problem],
    ) -> ModelMappings:
        model = self.models.get_model(tenant, name, version)
        if model.state is ModelState.REMOVED:
            raise NotFound(f"model {name} version {version} was removed")
        problems = list(found)
        assets = self._targets(tenant, model, request.assets, "assets", problems)
        types = self._targets(tenant, model, request.asset_types, "asset_types", problems)
        problems += self._output_conflicts(tenant, assets, types)
        if problems:
            raise InvalidInput.of(problems, "mappings")
        mappings = ModelMappings(tuple(assets), tuple(types))
        self.mappings.replace(model.id, mappings)
        return mappings

    def _targets(
        self,
        tenant: str,
        model: ModelRecord,
        given: dict[str, ColumnRenames],
        key: str,
        problems: list[Problem],
    ) -> list[Mapping]:
        result: list[Mapping] = []
        for target, renames in given.items():
            where = f"{key}.{target}"
            asset_type = self._type_of(tenant, key, target, where, problems)
            if asset_type is not None:
                result += self._columns(model, target, asset_type, renames, where, problems)
        return result

    def _columns(
        self,
        model: ModelRecord,
        target: str,
        asset_type: AssetType,
        renames: ColumnRenames,
        where: str,
        problems: list[Problem],
    ) -> list[Mapping]:
        """The model's columns bound to the telemetry of `asset_type` that `renames` names."""
        result: list[Mapping] = []
        for direction, side, named in (
            (Direction.INPUT, "inputs", renames.inputs),
            (Direction.OUTPUT, "outputs", renames.outputs),
        ):
            columns = [t for t in model.templates if t.direction == direction]
            for name in set(named) - {c.name for c in columns}:
                problems.append(Problem(f"{where}.{side}.{name}", "the model has no such column"))
            for column in columns:
                telemetry = named.get(column.name, column.name)
                problem = _binding_problem(column, asset_type, telemetry)
                if problem is not None:
                    problems.append(Problem(f"{where}.{side}.{column.name}", problem))
                else:
                    result.append(Mapping(direction, column.name, target, telemetry))
        return result

    def _output_conflicts(
        self, tenant: str, assets: list[Mapping], types: list[Mapping]
    ) -> list[Problem]:
        """Outputs that would write a telemetry the model reads on the same assets (each output
        would feed the model again), or one that devices write on a mapped asset (the model
        would overwrite the devices' readings). For a type: its assets now, except those with
        a mapping of their own."""
        problems: list[Problem] = []
        own = {m.target for m in assets}
        for key, mappings in (("assets", assets), ("asset_types", types)):
            by_target: dict[str, list[Mapping]] = {}
            for m in mappings:
                by_target.setdefault(m.target, []).append(m)
            for target, bound in by_target.items():
                outputs = [m for m in bound if m.direction is Direction.OUTPUT]
                read = {m.telemetry: m.column for m in bound if m.direction is Direction.INPUT}
                covered = [target] if key == "assets" else self._type_assets(tenant, target, own)
                written = self.telemetry.device_telemetry(tenant, covered) if outputs else {}
                for m in outputs:
                    where = f"{key}.{target}.outputs.{m.column}"
                    if m.telemetry in read:
                        problems.append(
                            Problem(
                                where,
                                f"writes {m.telemetry!r}, which this model reads (input "
                                f"{read[m.telemetry]!r}): each output would feed it again",
                            )
                        )
                    writers = sorted(a for a, names in written.items() if m.telemetry in names)
                    if writers:
                        problems.append(
                            Problem(
                                where,
                                f"devices write {m.telemetry!r} on {_some(writers, 'asset')}; "
                                "a model's output may not overwrite a device's telemetry",
                            )
                        )
        return problems

    def _type_assets(self, tenant: str, type_id: str, own: set[str]) -> list[str]:
        return [a.id for a in self.assets.list_assets(tenant, type_id) if a.id not in own]

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
            (entry.inputs if m.direction is Direction.INPUT else entry.outputs)[m.column] = (
                m.telemetry
            )
        by_type: dict[str, list[Mapping]] = {}
        for m in mappings.asset_types:
            by_type.setdefault(m.target, []).append(m)
        for type_id, type_mappings in sorted(by_type.items()):
            for asset in self.assets.list_assets(tenant, type_id):
                if asset.id in resolved:
                    continue
                entry = ResolvedAsset(asset.id, f"asset-type:{type_id}", {}, {})
                for m in type_mappings:
                    target = entry.inputs if m.direction is Direction.INPUT else entry.outputs
                    target[m.column] = m.telemetry
                resolved[asset.id] = entry
        return [resolved[a] for a in sorted(resolved)]


def _some(names: list[str], noun: str, shown: int = 5) -> str:
    """`asset 'a'`, `assets 'a', 'b'`, or the first few and how many more."""
    listed = ", ".join(repr(n) for n in names[:shown])
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return f"{noun}{'s' if len(names) > 1 else ''} {listed}{more}"


def _binding_problem(column: TemplateColumn, asset_type: AssetType, telemetry: str) -> str | None:
    """Why `column` cannot be bound to `telemetry` of `asset_type`, or None when it can: the
    telemetry must exist, and an output must write the kind of value the telemetry holds."""
    definition = asset_type.definition(telemetry)
    if definition is None:
        return f"asset type {asset_type.id!r} has no telemetry {telemetry!r}"
    if column.direction is Direction.OUTPUT and column.read_as_string != (
        definition.dtype is DType.STRING
    ):
        wanted = "string" if column.read_as_string else "float, int or bool"
        return (
            f"output {column.name!r} needs a {wanted} telemetry; "
            f"{telemetry!r} is {definition.dtype.value}"
        )
    return None
