"""Devices and their broker credentials in SQL."""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Engine, Row, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from fogline.domain.devices import Device, HardwareProfile
from fogline.domain.errors import AlreadyExists, NotFound
from fogline.domain.timeseries import now_ms
from fogline.store import schema as s
from fogline.store.assets import dumps
from fogline.store.tenants import require_tenant


@dataclass(frozen=True)
class DeviceCredential:
    username: str
    password_hash: str


class DeviceStore(Protocol):
    """Devices of a tenant and the password hashes the broker checks them against."""

    def create_device(self, device: Device, password_hash: str) -> None: ...
    def create_devices(self, devices: Sequence[tuple[Device, str]]) -> None: ...
    def existing_device_ids(self, tenant: str, ids: Collection[str]) -> set[str]: ...
    def update_device(self, device: Device) -> None: ...
    def set_device_password(self, tenant: str, device_id: str, password_hash: str) -> None: ...
    def get_device(self, tenant: str, device_id: str) -> Device: ...
    def device_password_hash(self, tenant: str, device_id: str) -> str | None: ...
    def list_devices(self, tenant: str) -> list[Device]: ...
    def delete_device(self, tenant: str, device_id: str) -> None: ...
    def device_credentials(self) -> list[DeviceCredential]: ...


class SqlDeviceStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- devices --------------------------------------------------------------------------

    def create_device(self, device: Device, password_hash: str) -> None:
        now = now_ms()
        with self.engine.begin() as conn:
            require_tenant(conn, device.tenant)
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

    def create_devices(self, devices: Sequence[tuple[Device, str]]) -> None:
        """Devices with their password hashes, all in one transaction: all or none (an id
        taken meanwhile raises, and nothing of the batch stays)."""
        if not devices:
            return
        now = now_ms()
        rows = [
            {
                "tenant_id": d.tenant,
                "id": d.id,
                "password_hash": password_hash,
                "created_at": now,
                **_device_values(d, now),
            }
            for d, password_hash in devices
        ]
        with self.engine.begin() as conn:
            for tenant in {d.tenant for d, _ in devices}:
                require_tenant(conn, tenant)
            try:
                conn.execute(insert(s.devices), rows)
            except IntegrityError:
                raise AlreadyExists("a device of the batch already exists") from None

    def existing_device_ids(self, tenant: str, ids: Collection[str]) -> set[str]:
        """Which of `ids` are devices of the tenant already."""
        found: set[str] = set()
        wanted = sorted(set(ids))
        with self.engine.connect() as conn:
            # In chunks: a long IN list is one bound parameter per id.
            for first in range(0, len(wanted), 500):
                chunk = wanted[first : first + 500]
                query = select(s.devices.c.id).where(
                    s.devices.c.tenant_id == tenant, s.devices.c.id.in_(chunk)
                )
                found.update(str(i) for i in conn.execute(query).scalars())
        return found

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


def _device_values(device: Device, now: int) -> dict[str, Any]:
    hw = device.hardware
    return {
        "name": device.name,
        "hardware_json": dumps({k: v for k, v in vars(hw).items() if v is not None}),
        "firmware": device.firmware,
        "labels_json": dumps(device.labels),
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
