"""Request bodies, checked by pydantic at the edge, and the JSON shapes of responses."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from fogline.domain.access import ApiKey
from fogline.domain.assets import (
    Asset,
    AssetType,
    AttributeDefinition,
    DType,
    Location,
    TelemetryDefinition,
)
from fogline.domain.devices import Device, HardwareProfile
from fogline.domain.ids import MAX_ID_LENGTH, SLUG_PATTERN
from fogline.domain.telemetry import DeviceStats, StoredDeadLetter
from fogline.domain.timeseries import iso_from_ms
from fogline.fleet.devices import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH, PASSWORD_PATTERN

DTypeName = Literal["float", "int", "bool", "string"]

# The rules the contexts check, said in the schema too (the lengths are the SQL columns').
Slug = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_ID_LENGTH,
        pattern=SLUG_PATTERN,
        description="lowercase letters, digits, '-' and '_', starting with a letter or digit",
    ),
]
Name = Annotated[str, Field(max_length=200)]
Password = Annotated[
    str,
    Field(
        min_length=MIN_PASSWORD_LENGTH,
        max_length=MAX_PASSWORD_LENGTH,
        pattern=PASSWORD_PATTERN,
        description="printable ASCII, 16 to 72 characters (bcrypt reads 72 bytes)",
    ),
]
Short = Annotated[str, Field(max_length=100)]


class Strict(BaseModel):
    # strict: a JSON value of another type is refused, never converted (`false` is no number)
    model_config = ConfigDict(extra="forbid", strict=True)


class TenantIn(Strict):
    id: Slug
    name: Name | None = None


class ApiKeyIn(Strict):
    name: str = Field(min_length=1, max_length=200)


class TelemetryDefinitionIn(Strict):
    name: Slug
    dtype: DTypeName = "float"
    unit: str | None = Field(default=None, max_length=32)
    min: float | None = None
    max: float | None = None
    description: str | None = None

    def to_domain(self) -> TelemetryDefinition:
        return TelemetryDefinition(
            self.name, DType(self.dtype), self.unit, self.min, self.max, self.description
        )


class AttributeDefinitionIn(Strict):
    name: Slug
    dtype: DTypeName = "string"
    required: bool = False
    default: Any = None
    description: str | None = None

    def to_domain(self) -> AttributeDefinition:
        return AttributeDefinition(
            self.name, DType(self.dtype), self.required, self.default, self.description
        )


class AssetTypeBody(Strict):
    name: Name | None = None
    description: str | None = None
    telemetry: list[TelemetryDefinitionIn] = Field(default_factory=list)
    attributes: list[AttributeDefinitionIn] = Field(default_factory=list)

    def to_domain(self, tenant: str, type_id: str) -> AssetType:
        return AssetType(
            tenant=tenant,
            id=type_id,
            name=self.name or type_id,
            description=self.description,
            telemetry=tuple(d.to_domain() for d in self.telemetry),
            attributes=tuple(d.to_domain() for d in self.attributes),
        )


class AssetTypeIn(AssetTypeBody):
    id: Slug


class LocationIn(Strict):
    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)
    altitude: float | None = None

    def to_domain(self) -> Location:
        return Location(self.latitude, self.longitude, self.altitude)


class AssetIn(Strict):
    id: Slug
    asset_type: Slug
    name: Name | None = None
    attributes: dict[str, Any] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    site: Name | None = None
    location: LocationIn | None = None

    def to_domain(self, tenant: str) -> Asset:
        return Asset(
            tenant=tenant,
            id=self.id,
            asset_type=self.asset_type,
            name=self.name or self.id,
            attributes=self.attributes,
            labels=self.labels,
            site=self.site,
            location=self.location.to_domain() if self.location else None,
        )


class AssetPatch(Strict):
    name: Name | None = None
    attributes: dict[str, Any] | None = None
    labels: dict[str, str | None] | None = None
    site: Name | None = None
    location: LocationIn | None = None


class HardwareIn(Strict):
    cpu: Short | None = None
    cpu_cores: int | None = Field(default=None, ge=1, le=1_000_000)
    memory_mb: int | None = Field(default=None, ge=1, le=2**53)
    accelerator: Short | None = None
    connectivity: Short | None = None
    power_source: Short | None = None

    def to_domain(self) -> HardwareProfile:
        return HardwareProfile(**self.model_dump())


class DeviceIn(Strict):
    id: Slug
    name: Name | None = None
    hardware: HardwareIn = Field(default_factory=HardwareIn)
    firmware: Short | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    password: Password | None = Field(default=None, description="default: one is generated")

    def to_domain(self, tenant: str) -> Device:
        return Device(
            tenant=tenant,
            id=self.id,
            name=self.name or self.id,
            hardware=self.hardware.to_domain(),
            firmware=self.firmware,
            labels=self.labels,
        )


class DevicePatch(Strict):
    name: Name | None = None
    firmware: Short | None = None
    labels: dict[str, str | None] | None = None
    hardware: HardwareIn | None = None


# -- responses --------------------------------------------------------------------------------


def api_key_json(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "tenant": key.tenant,
        "name": key.name,
        "role": key.role.value,
        "created_at": iso_from_ms(key.created_at),
        "revoked": key.revoked_at is not None,
    }


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def asset_type_json(t: AssetType) -> dict[str, Any]:
    return {
        "id": t.id,
        "name": t.name,
        "description": t.description,
        "telemetry": [_drop_none({**asdict(d), "dtype": d.dtype.value}) for d in t.telemetry],
        "attributes": [{**asdict(d), "dtype": d.dtype.value} for d in t.attributes],
    }


def asset_json(a: Asset) -> dict[str, Any]:
    return {
        "id": a.id,
        "asset_type": a.asset_type,
        "name": a.name,
        "attributes": a.attributes,
        "labels": a.labels,
        "site": a.site,
        "location": asdict(a.location) if a.location else None,
    }


def device_json(d: Device, stats: DeviceStats | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": d.id,
        "name": d.name,
        "hardware": _drop_none(asdict(d.hardware)),
        "firmware": d.firmware,
        "labels": d.labels,
        "mqtt_username": d.username,
    }
    if stats is not None:
        body["stats"] = device_stats_json(stats)
    return body


def device_stats_json(s: DeviceStats) -> dict[str, Any]:
    return {
        "device": s.device,
        "messages": s.messages_total,
        "values": s.values_total,
        "dead_letters": s.dead_letters_total,
        "last_seen": iso_from_ms(s.last_seen_ms),
    }


def dead_letter_json(stored: StoredDeadLetter) -> dict[str, Any]:
    d = stored.letter
    return {
        "id": stored.id,
        "device": d.device,
        "received_at": iso_from_ms(d.received_at),
        "reason_code": d.reason_code.value,
        "reason": d.reason,
        "item": d.item,
        "asset": d.asset,
        "telemetry": d.telemetry,
        "stream_seq": d.stream_seq,
        "payload": d.payload,
    }
