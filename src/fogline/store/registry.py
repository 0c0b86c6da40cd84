"""Tenants, API keys, asset types, assets and devices in SQL."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Engine, Row, and_, delete, func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from fogline.domain.access import ApiKey, Role
from fogline.domain.errors import AlreadyExists, Conflict, NotFound, Unauthenticated
from fogline.domain.registry import (
    Asset,
    AssetType,
    AttributeDefinition,
    Device,
    DType,
    HardwareProfile,
    Location,
    TelemetryDefinition,
)
from fogline.domain.timeseries import now_ms
from fogline.store import schema as s

API_KEY_PREFIX = "fgl"


@dataclass(frozen=True)
class DeviceCredential:
    username: str
    password_hash: str


class RegistryStore(Protocol):
    """What the rest of Fogline needs from the registry, whatever database holds it."""

    def create_tenant(self, tenant_id: str, name: str) -> None: ...
    def tenant_exists(self, tenant_id: str) -> bool: ...
    def list_tenants(self) -> list[tuple[str, str]]: ...
    def create_api_key(self, tenant: str | None, name: str, role: Role) -> tuple[ApiKey, str]: ...
    def authenticate(self, presented: str) -> ApiKey: ...
    def list_api_keys(self, tenant: str | None) -> list[ApiKey]: ...
    def revoke_api_key(self, key_id: str, tenant: str | None) -> None: ...
    def put_asset_type(self, asset_type: AssetType) -> bool: ...
    def get_asset_type(self, tenant: str, type_id: str) -> AssetType: ...
    def list_asset_types(self, tenant: str) -> list[AssetType]: ...
    def delete_asset_type(self, tenant: str, type_id: str) -> None: ...
    def create_asset(self, asset: Asset) -> None: ...
    def update_asset(self, asset: Asset) -> None: ...
    def get_asset(self, tenant: str, asset_id: str) -> Asset: ...
    def list_assets(self, tenant: str, asset_type: str | None = None) -> list[Asset]: ...
    def delete_asset(self, tenant: str, asset_id: str) -> None: ...
    def create_device(self, device: Device, password_hash: str) -> None: ...
    def update_device(self, device: Device) -> None: ...
    def set_device_password(self, tenant: str, device_id: str, password_hash: str) -> None: ...
    def get_device(self, tenant: str, device_id: str) -> Device: ...
    def device_password_hash(self, tenant: str, device_id: str) -> str | None: ...
    def list_devices(self, tenant: str) -> list[Device]: ...
    def delete_device(self, tenant: str, device_id: str) -> None: ...
    def device_credentials(self) -> list[DeviceCredential]: ...


def _hash_secret(secret: str) -> str:
    # API key secrets are 256 random bits: a fast hash is enough, no key stretching needed.
    return hashlib.sha256(secret.encode()).hexdigest()


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


class SqlRegistry:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- tenants --------------------------------------------------------------------------

    def create_tenant(self, tenant_id: str, name: str) -> None:
        with self.engine.begin() as conn:
            if conn.execute(select(s.tenants.c.id).where(s.tenants.c.id == tenant_id)).first():
                raise AlreadyExists(f"tenant {tenant_id!r} already exists")
            conn.execute(insert(s.tenants).values(id=tenant_id, name=name, created_at=now_ms()))

    def tenant_exists(self, tenant_id: str) -> bool:
        with self.engine.connect() as conn:
            return bool(
                conn.execute(select(s.tenants.c.id).where(s.tenants.c.id == tenant_id)).first()
            )

    def _require_tenant(self, conn: Connection, tenant_id: str) -> None:
        if not conn.execute(select(s.tenants.c.id).where(s.tenants.c.id == tenant_id)).first():
            raise NotFound(f"tenant {tenant_id!r} does not exist")

    def list_tenants(self) -> list[tuple[str, str]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(s.tenants.c.id, s.tenants.c.name).order_by(s.tenants.c.id))
            return [(r.id, r.name) for r in rows]

    # -- API keys -------------------------------------------------------------------------

    def create_api_key(self, tenant: str | None, name: str, role: Role) -> tuple[ApiKey, str]:
        """A new key and the one and only copy of its secret, as `fgl_<id>_<secret>`."""
        key_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        key = ApiKey(id=key_id, tenant=tenant, name=name, role=role, created_at=now_ms())
        with self.engine.begin() as conn:
            if tenant is not None:
                self._require_tenant(conn, tenant)
            conn.execute(
                insert(s.api_keys).values(
                    id=key_id,
                    tenant_id=tenant,
                    name=name,
                    role=role.value,
                    secret_hash=_hash_secret(secret),
                    created_at=key.created_at,
                )
            )
        return key, f"{API_KEY_PREFIX}_{key_id}_{secret}"

    def authenticate(self, presented: str) -> ApiKey:
        prefix, _, rest = presented.partition("_")
        key_id, _, secret = rest.partition("_")
        if prefix != API_KEY_PREFIX or not key_id or not secret:
            raise Unauthenticated("malformed API key")
        with self.engine.connect() as conn:
            row = conn.execute(select(s.api_keys).where(s.api_keys.c.id == key_id)).first()
        if row is None or not hmac.compare_digest(row.secret_hash, _hash_secret(secret)):
            raise Unauthenticated("unknown API key")
        if row.revoked_at is not None:
            raise Unauthenticated("this API key was revoked")
        return _api_key(row)

    def list_api_keys(self, tenant: str | None) -> list[ApiKey]:
        query = select(s.api_keys).order_by(s.api_keys.c.created_at)
        if tenant is not None:
            query = query.where(s.api_keys.c.tenant_id == tenant)
        with self.engine.connect() as conn:
            return [_api_key(r) for r in conn.execute(query)]

    def revoke_api_key(self, key_id: str, tenant: str | None) -> None:
        condition = s.api_keys.c.id == key_id
        if tenant is not None:
            condition = and_(condition, s.api_keys.c.tenant_id == tenant)
        with self.engine.begin() as conn:
            done = conn.execute(
                update(s.api_keys)
                .where(condition, s.api_keys.c.revoked_at.is_(None))
                .values(revoked_at=now_ms())
            )
            if done.rowcount == 0:
                raise NotFound(f"no active API key {key_id!r}")

    # -- asset types ----------------------------------------------------------------------

    def put_asset_type(self, asset_type: AssetType) -> bool:
        """Create the type, or replace its definitions; True when it was created."""
        t = asset_type
        now = now_ms()
        with self.engine.begin() as conn:
            self._require_tenant(conn, t.tenant)
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
                            "default_json": None if d.default is None else _dumps(d.default),
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
            self._require_tenant(conn, asset.tenant)
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
            # The series row stays: its id is cached by historians, and an asset made again
            # under the same id simply continues in it.

    # -- devices --------------------------------------------------------------------------

    def create_device(self, device: Device, password_hash: str) -> None:
        now = now_ms()
        with self.engine.begin() as conn:
            self._require_tenant(conn, device.tenant)
            try:
                conn.execute(
                    insert(s.devices).values(
                        tenant_id=device.tenant,
                        id=device.id,
                        password_hash=password_hash,
                        created_at=now,
                        **_device_values(device, now),
                    )
                )
            except IntegrityError:
                raise AlreadyExists(f"device {device.id!r} already exists") from None

    def update_device(self, device: Device) -> None:
        with self.engine.begin() as conn:
            done = conn.execute(
                update(s.devices)
                .where(s.devices.c.tenant_id == device.tenant, s.devices.c.id == device.id)
                .values(**_device_values(device, now_ms()))
            )
            if done.rowcount == 0:
                raise NotFound(f"device {device.id!r} does not exist")

    def set_device_password(self, tenant: str, device_id: str, password_hash: str) -> None:
        with self.engine.begin() as conn:
            done = conn.execute(
                update(s.devices)
                .where(s.devices.c.tenant_id == tenant, s.devices.c.id == device_id)
                .values(password_hash=password_hash, updated_at=now_ms())
            )
            if done.rowcount == 0:
                raise NotFound(f"device {device_id!r} does not exist")

    def get_device(self, tenant: str, device_id: str) -> Device:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(s.devices).where(
                    s.devices.c.tenant_id == tenant, s.devices.c.id == device_id
                )
            ).first()
        if row is None:
            raise NotFound(f"device {device_id!r} does not exist")
        return _device(row)

    def device_password_hash(self, tenant: str, device_id: str) -> str | None:
        with self.engine.connect() as conn:
            value = conn.execute(
                select(s.devices.c.password_hash).where(
                    s.devices.c.tenant_id == tenant, s.devices.c.id == device_id
                )
            ).scalar_one_or_none()
        return None if value is None else str(value)

    def list_devices(self, tenant: str) -> list[Device]:
        query = select(s.devices).where(s.devices.c.tenant_id == tenant).order_by(s.devices.c.id)
        with self.engine.connect() as conn:
            return [_device(r) for r in conn.execute(query)]

    def delete_device(self, tenant: str, device_id: str) -> None:
        with self.engine.begin() as conn:
            done = conn.execute(
                delete(s.devices).where(
                    s.devices.c.tenant_id == tenant, s.devices.c.id == device_id
                )
            )
            if done.rowcount == 0:
                raise NotFound(f"device {device_id!r} does not exist")

    def device_credentials(self) -> list[DeviceCredential]:
        """Every device's broker user and password hash, for the broker's own user list."""
        query = select(s.devices.c.tenant_id, s.devices.c.id, s.devices.c.password_hash)
        with self.engine.connect() as conn:
            return [
                DeviceCredential(f"{r.tenant_id}.{r.id}", r.password_hash)
                for r in conn.execute(query.order_by(s.devices.c.tenant_id, s.devices.c.id))
            ]


def _api_key(row: Row[Any]) -> ApiKey:
    return ApiKey(
        id=row.id,
        tenant=row.tenant_id,
        name=row.name,
        role=Role(row.role),
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


def _asset_values(asset: Asset, now: int) -> dict[str, Any]:
    loc = asset.location
    return {
        "asset_type_id": asset.asset_type,
        "name": asset.name,
        "attributes_json": _dumps(asset.attributes),
        "labels_json": _dumps(asset.labels),
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


def _device_values(device: Device, now: int) -> dict[str, Any]:
    hw = device.hardware
    return {
        "name": device.name,
        "hardware_json": _dumps({k: v for k, v in vars(hw).items() if v is not None}),
        "firmware": device.firmware,
        "labels_json": _dumps(device.labels),
        "updated_at": now,
    }


def _device(row: Row[Any]) -> Device:
    return Device(
        tenant=row.tenant_id,
        id=row.id,
        name=row.name,
        hardware=HardwareProfile(**json.loads(row.hardware_json)),
        firmware=row.firmware,
        labels=json.loads(row.labels_json),
    )
