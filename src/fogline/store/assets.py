"""Asset types and assets in SQL."""

from __future__ import annotations

import json
from typing import Any, Protocol

from sqlalchemy import Engine, Row, and_, delete, func, insert, select, update
from sqlalchemy.engine import Connection

from fogline.domain.assets import (
    Asset,
    AssetType,
    AttributeDefinition,
    DType,
    Location,
    TelemetryDefinition,
)
from fogline.domain.errors import AlreadyExists, Conflict, NotFound
from fogline.domain.timeseries import now_ms
from fogline.store import schema as s
from fogline.store.tenants import require_tenant


class AssetStore(Protocol):
    """Asset types (templates of telemetry and attributes) and the assets made from them."""

    def put_asset_type(self, asset_type: AssetType) -> bool: ...
    def get_asset_type(self, tenant: str, type_id: str) -> AssetType: ...
    def list_asset_types(self, tenant: str) -> list[AssetType]: ...
    def delete_asset_type(self, tenant: str, type_id: str) -> None: ...
    def create_asset(self, asset: Asset) -> None: ...
    def update_asset(self, asset: Asset) -> None: ...
    def get_asset(self, tenant: str, asset_id: str) -> Asset: ...
    def list_assets(self, tenant: str, asset_type: str | None = None) -> list[Asset]: ...
    def delete_asset(self, tenant: str, asset_id: str) -> None: ...


def dumps(value: Any) -> str:
    """JSON as stored: sorted keys and no spaces, so equal values are equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


class SqlAssetStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- asset types ----------------------------------------------------------------------

    def put_asset_type(self, asset_type: AssetType) -> bool:
        """Create the type, or replace its definitions; True when it was created."""
        t = asset_type
        now = now_ms()
        with self.engine.begin() as conn:
            require_tenant(conn, t.tenant)
            key = and_(s.asset_types.c.tenant_id == t.tenant, s.asset_types.c.id == t.id)
            exists = conn.execute(select(s.asset_types.c.id).where(key)).first() is not None
            if exists:
                conn.execute(
                    update(s.asset_types)
                    .where(key)
                    .values(name=t.name, description=t.description, updated_at=now)
                )
                for table in (s.telemetry_definitions, s.attribute_definitions):
                    conn.execute(
                        delete(table).where(
                            table.c.tenant_id == t.tenant, table.c.asset_type_id == t.id
                        )
                    )
            else:
                conn.execute(
                    insert(s.asset_types).values(
                        tenant_id=t.tenant,
                        id=t.id,
                        name=t.name,
                        description=t.description,
                        created_at=now,
                        updated_at=now,
                    )
                )
            if t.telemetry:
                conn.execute(
                    insert(s.telemetry_definitions),
                    [
                        {
                            "tenant_id": t.tenant,
                            "asset_type_id": t.id,
                            "name": d.name,
                            "position": i,
                            "dtype": d.dtype.value,
                            "unit": d.unit,
                            "min_value": d.min,
                            "max_value": d.max,
                            "description": d.description,
                        }
                        for i, d in enumerate(t.telemetry)
                    ],
                )
            if t.attributes:
                conn.execute(
                    insert(s.attribute_definitions),
                    [
                        {
                            "tenant_id": t.tenant,
                            "asset_type_id": t.id,
                            "name": d.name,
                            "position": i,
                            "dtype": d.dtype.value,
                            "required": d.required,
                            "default_json": None if d.default is None else dumps(d.default),
                            "description": d.description,
                        }
                        for i, d in enumerate(t.attributes)
                    ],
                )
        return not exists

    def get_asset_type(self, tenant: str, type_id: str) -> AssetType:
        with self.engine.connect() as conn:
            types = self._load_asset_types(conn, tenant, type_id)
        if not types:
            raise NotFound(f"asset type {type_id!r} does not exist")
        return types[0]

    def list_asset_types(self, tenant: str) -> list[AssetType]:
        with self.engine.connect() as conn:
            return self._load_asset_types(conn, tenant, None)

    def _load_asset_types(
        self, conn: Connection, tenant: str, type_id: str | None
    ) -> list[AssetType]:
        def scoped(table: Any) -> Any:
            condition = table.c.tenant_id == tenant
            if type_id is not None:
                column = table.c.id if table is s.asset_types else table.c.asset_type_id
                condition = and_(condition, column == type_id)
            return condition

        types = conn.execute(
            select(s.asset_types).where(scoped(s.asset_types)).order_by(s.asset_types.c.id)
        ).all()
        telemetry: dict[str, list[TelemetryDefinition]] = {}
        for r in conn.execute(
            select(s.telemetry_definitions)
            .where(scoped(s.telemetry_definitions))
            .order_by(s.telemetry_definitions.c.position)
        ):
            telemetry.setdefault(r.asset_type_id, []).append(
                TelemetryDefinition(
                    name=r.name,
                    dtype=DType(r.dtype),
                    unit=r.unit,
                    min=r.min_value,
                    max=r.max_value,
                    description=r.description,
                )
            )
        attributes: dict[str, list[AttributeDefinition]] = {}
        for r in conn.execute(
            select(s.attribute_definitions)
            .where(scoped(s.attribute_definitions))
            .order_by(s.attribute_definitions.c.position)
        ):
            attributes.setdefault(r.asset_type_id, []).append(
                AttributeDefinition(
                    name=r.name,
                    dtype=DType(r.dtype),
                    required=bool(r.required),
                    default=None if r.default_json is None else json.loads(r.default_json),
                    description=r.description,
                )
            )
        return [
            AssetType(
                tenant=tenant,
                id=r.id,
                name=r.name,
                description=r.description,
                telemetry=tuple(telemetry.get(r.id, ())),
                attributes=tuple(attributes.get(r.id, ())),
            )
            for r in types
        ]

    def delete_asset_type(self, tenant: str, type_id: str) -> None:
        with self.engine.begin() as conn:
            in_use = conn.execute(
                select(func.count())
                .select_from(s.assets)
                .where(s.assets.c.tenant_id == tenant, s.assets.c.asset_type_id == type_id)
            ).scalar_one()
            if in_use:
                raise Conflict(
                    f"asset type {type_id!r} still has {in_use} asset(s); delete them first"
                )
            done = conn.execute(
                delete(s.asset_types).where(
                    s.asset_types.c.tenant_id == tenant, s.asset_types.c.id == type_id
                )
            )
            if done.rowcount == 0:
                raise NotFound(f"asset type {type_id!r} does not exist")

    # -- assets ---------------------------------------------------------------------------

    def create_asset(self, asset: Asset) -> None:
        now = now_ms()
        with self.engine.begin() as conn:
            require_tenant(conn, asset.tenant)
            key = and_(s.assets.c.tenant_id == asset.tenant, s.assets.c.id == asset.id)
            if conn.execute(select(s.assets.c.id).where(key)).first():
                raise AlreadyExists(f"asset {asset.id!r} already exists")
            conn.execute(
                insert(s.assets).values(
                    tenant_id=asset.tenant, id=asset.id, created_at=now, **_asset_values(asset, now)
                )
            )

    def update_asset(self, asset: Asset) -> None:
        with self.engine.begin() as conn:
            done = conn.execute(
                update(s.assets)
                .where(s.assets.c.tenant_id == asset.tenant, s.assets.c.id == asset.id)
                .values(**_asset_values(asset, now_ms()))
            )
            if done.rowcount == 0:
                raise NotFound(f"asset {asset.id!r} does not exist")

    def get_asset(self, tenant: str, asset_id: str) -> Asset:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(s.assets).where(s.assets.c.tenant_id == tenant, s.assets.c.id == asset_id)
            ).first()
        if row is None:
            raise NotFound(f"asset {asset_id!r} does not exist")
        return _asset(row)

    def list_assets(self, tenant: str, asset_type: str | None = None) -> list[Asset]:
        query = select(s.assets).where(s.assets.c.tenant_id == tenant).order_by(s.assets.c.id)
        if asset_type is not None:
            query = query.where(s.assets.c.asset_type_id == asset_type)
        with self.engine.connect() as conn:
            return [_asset(r) for r in conn.execute(query)]

    def delete_asset(self, tenant: str, asset_id: str) -> None:
        """Delete the asset and its history: telemetry belongs to an asset and goes with it."""
        with self.engine.begin() as conn:
            done = conn.execute(
                delete(s.assets).where(s.assets.c.tenant_id == tenant, s.assets.c.id == asset_id)
            )
            if done.rowcount == 0:
                raise NotFound(f"asset {asset_id!r} does not exist")
            series = s.telemetry_series
            of_asset = select(series.c.id).where(
                series.c.tenant_id == tenant, series.c.asset_id == asset_id
            )
            conn.execute(delete(s.readings).where(s.readings.c.series_id.in_(of_asset)))
            conn.execute(delete(s.latest_values).where(s.latest_values.c.series_id.in_(of_asset)))
            aggregates = s.telemetry_aggregates
            conn.execute(delete(aggregates).where(aggregates.c.series_id.in_(of_asset)))
            # The series row stays: its id is cached by historians, and an asset made again
            # under the same id simply continues in it.


def _asset_values(asset: Asset, now: int) -> dict[str, Any]:
    loc = asset.location
    return {
        "asset_type_id": asset.asset_type,
        "name": asset.name,
        "attributes_json": dumps(asset.attributes),
        "labels_json": dumps(asset.labels),
        "site": asset.site,
        "latitude": loc.latitude if loc else None,
        "longitude": loc.longitude if loc else None,
        "altitude": loc.altitude if loc else None,
        "updated_at": now,
    }


def _asset(row: Row[Any]) -> Asset:
    location = None
    if row.latitude is not None and row.longitude is not None:
        location = Location(row.latitude, row.longitude, row.altitude)
    return Asset(
        tenant=row.tenant_id,
        id=row.id,
        asset_type=row.asset_type_id,
        name=row.name,
        attributes=json.loads(row.attributes_json),
        labels=json.loads(row.labels_json),
        site=row.site,
        location=location,
    )
