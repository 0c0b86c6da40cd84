"""Asset types, assets and devices."""

from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    ModelWrapValidatorHandler,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from fogline.api.problems import field_problems
from fogline.api.schemas.common import (
    DTypeName,
    Name,
    Out,
    Short,
    Slug,
    Strict,
    Timestamp,
    omitted_when_none,
    with_more_problems,
)
from fogline.api.schemas.telemetry import DeviceStatsOut
from fogline.domain.assets import (
    Asset,
    AssetType,
    AttributeDefinition,
    DType,
    Location,
    TelemetryDefinition,
    check_attribute_items,
    check_telemetry_items,
)
from fogline.domain.devices import Device, HardwareProfile
from fogline.domain.errors import Problem
from fogline.domain.ids import slug_problem
from fogline.domain.telemetry import DeviceStats
from fogline.domain.timeseries import iso_from_ms
from fogline.fleet.devices import (
    MAX_IMPORT_DEVICES,
    MAX_PASSWORD_LENGTH,
    MIN_PASSWORD_LENGTH,
    PASSWORD_PATTERN,
    DeviceBatch,
    DeviceCredentials,
)
from fogline.store.security import SecurityCount

Password = Annotated[
    str,
    Field(
        min_length=MIN_PASSWORD_LENGTH,
        max_length=MAX_PASSWORD_LENGTH,
        pattern=PASSWORD_PATTERN,
        description="printable ASCII, 16 to 72 characters (bcrypt reads 72 bytes)",
    ),
]

# -- asset types ------------------------------------------------------------------------------


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

    @model_validator(mode="wrap")
    @classmethod
    def _every_problem_at_once(cls, data: Any, handler: ModelWrapValidatorHandler[Any]) -> Any:
        """When some definitions cannot be read, the rules of those that can (duplicate
        names, ranges) are checked too: one answer names every problem, not the first pass's."""
        try:
            return handler(data)
        except ValidationError as exc:
            raise with_more_problems(exc, cls.__name__, _rule_problems(data)) from None

    def to_domain(self, tenant: str, type_id: str) -> AssetType:
        return AssetType(
            tenant=tenant,
            id=type_id,
            name=self.name or type_id,
            description=self.description,
            telemetry=tuple(d.to_domain() for d in self.telemetry),
            attributes=tuple(d.to_domain() for d in self.attributes),
        )


def _readable(
    items: Any, model: type[TelemetryDefinitionIn] | type[AttributeDefinitionIn]
) -> list[tuple[int, Any]]:
    """The items of a list as `model`, with their places: each from its fields that can be read
    on their own, the defaults standing in for the others (so a bad dtype does not hide the
    item's range or its name's duplicate). An unreadable name is left empty: pydantic has
    reported its place already, so the rules' problems there are left out."""
    readable = []
    for i, item in enumerate(items if isinstance(items, list) else []):
        if not isinstance(item, dict):
            continue
        good: dict[str, Any] = {}
        for key, value in item.items():
            probe = {"name": "x", key: value}
            with contextlib.suppress(ValidationError):
                model.model_validate(probe)
                good[key] = value
        if "dtype" not in good:
            good.pop("default", None)  # judged by the dtype: not without it
        named = "name" in good
        with contextlib.suppress(ValidationError):
            definition = model.model_validate({"name": "x", **good}).to_domain()
            readable.append((i, definition if named else replace(definition, name="")))
    return readable


def _rule_problems(data: Any) -> list[Problem]:
    if not isinstance(data, dict):
        return []
    telemetry = _readable(data.get("telemetry"), TelemetryDefinitionIn)
    attributes = _readable(data.get("attributes"), AttributeDefinitionIn)
    return check_telemetry_items(telemetry, "telemetry") + check_attribute_items(
        attributes, "attributes"
    )


class AssetTypeIn(AssetTypeBody):
    id: Slug


class TelemetryDefinitionOut(Out):
    name: str
    dtype: DTypeName
    unit: str | None = omitted_when_none()
    min: float | None = omitted_when_none()
    max: float | None = omitted_when_none()
    description: str | None = omitted_when_none()

    @classmethod
    def of(cls, d: TelemetryDefinition) -> TelemetryDefinitionOut:
        return cls(
            name=d.name,
            dtype=d.dtype.value,
            unit=d.unit,
            min=d.min,
            max=d.max,
            description=d.description,
        )


class AttributeDefinitionOut(Out):
    name: str
    dtype: DTypeName
    required: bool
    default: Any
    description: str | None

    @classmethod
    def of(cls, d: AttributeDefinition) -> AttributeDefinitionOut:
        return cls(
            name=d.name,
            dtype=d.dtype.value,
            required=d.required,
            default=d.default,
            description=d.description,
        )


class AssetTypeOut(Out):
    id: str
    name: str
    description: str | None
    telemetry: list[TelemetryDefinitionOut]
    attributes: list[AttributeDefinitionOut]

    @classmethod
    def of(cls, t: AssetType) -> AssetTypeOut:
        return cls(
            id=t.id,
            name=t.name,
            description=t.description,
            telemetry=[TelemetryDefinitionOut.of(d) for d in t.telemetry],
            attributes=[AttributeDefinitionOut.of(d) for d in t.attributes],
        )


# -- assets -----------------------------------------------------------------------------------


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

    def changes(self) -> dict[str, Any]:
        """What `AssetRegistry.update_asset` is to change: name, attributes and labels when
        given a value; site and location when given at all (null clears them)."""
        changes: dict[str, Any] = {
            "name": self.name,
            "attributes": self.attributes,
            "labels": self.labels,
        }
        given = self.model_fields_set
        if "site" in given:
            changes["site"] = self.site
        if "location" in given:
            changes["location"] = self.location.to_domain() if self.location else None
        return changes


class LocationOut(Out):
    latitude: float
    longitude: float
    altitude: float | None


class AssetOut(Out):
    id: str
    asset_type: str
    name: str
    attributes: dict[str, Any]
    labels: dict[str, str]
    site: str | None
    location: LocationOut | None

    @classmethod
    def of(cls, a: Asset) -> AssetOut:
        location = a.location
        return cls(
            id=a.id,
            asset_type=a.asset_type,
            name=a.name,
            attributes=a.attributes,
            labels=a.labels,
            site=a.site,
            location=None
            if location is None
            else LocationOut(
                latitude=location.latitude,
                longitude=location.longitude,
                altitude=location.altitude,
            ),
        )


# -- devices ----------------------------------------------------------------------------------


class HardwareIn(Strict):
    cpu: Short | None = None
    cpu_cores: int | None = Field(default=None, ge=1, le=1_000_000)
    memory_mb: int | None = Field(default=None, ge=1, le=2**53)
    accelerator: Short | None = None
    connectivity: Short | None = None
    power_source: Short | None = None

    def to_domain(self) -> HardwareProfile:
        return HardwareProfile(**self.model_dump())


class DeviceFields(Strict):
    """A device as given: what creating one and a row of a bulk import share."""

    id: Slug
    name: Name | None = None
    hardware: HardwareIn = Field(default_factory=HardwareIn)
    firmware: Short | None = None
    labels: dict[str, str] = Field(default_factory=dict)

    def to_domain(self, tenant: str) -> Device:
        return Device(
            tenant=tenant,
            id=self.id,
            name=self.name or self.id,
            hardware=self.hardware.to_domain(),
            firmware=self.firmware,
            labels=self.labels,
        )


class DeviceIn(DeviceFields):
    password: Password | None = Field(default=None, description="default: one is generated")


_IMPORT_ROW = TypeAdapter(DeviceFields)


class DevicesImportIn(Strict):
    """Devices to create at once, all or none. Each row is a device as `POST /devices` takes
    it, without a password (one is generated per device). Every row is checked before any is
    created, and every problem is answered at once (fields `devices.<row>.<field>`)."""

    devices: list[dict[str, Any]] = Field(
        min_length=1,
        max_length=MAX_IMPORT_DEVICES,
        description="rows: id (required), name, firmware, labels, hardware",
    )
    dry_run: bool = Field(default=False, description="check every row, create nothing")

    def batch(self, tenant: str) -> DeviceBatch:
        devices: dict[int, Device] = {}
        ids: dict[int, str] = {}
        problems: list[Problem] = []
        for row, fields in enumerate(self.devices):
            given_id = fields.get("id")
            if isinstance(given_id, str) and slug_problem(given_id) is None:
                ids[row] = given_id
            try:
                devices[row] = _IMPORT_ROW.validate_python(fields).to_domain(tenant)
            except ValidationError as exc:
                problems += field_problems(exc.errors(), f"devices.{row}")
        return DeviceBatch(devices, ids, problems)


class ImportedDeviceOut(Out):
    id: str
    username: str
    password: str = Field(description="shown in this answer and kept nowhere")


class DevicesImportedOut(Out):
    dry_run: bool
    created: int
    mqtt: str | None = Field(description="the MQTT URL devices connect to")
    devices: list[ImportedDeviceOut]


class DevicePatch(Strict):
    name: Name | None = None
    firmware: Short | None = None
    labels: dict[str, str | None] | None = None
    hardware: HardwareIn | None = None

    def changes(self) -> dict[str, Any]:
        """What `DeviceRegistry.update` is to change; of the hardware, only what was given."""
        hardware = self.hardware.model_dump(exclude_unset=True) if self.hardware else None
        return {
            "name": self.name,
            "firmware": self.firmware,
            "labels": self.labels,
            "hardware": hardware,
        }


class HardwareOut(Out):
    """What is known of the device's hardware: what is not known is left out."""

    cpu: str | None = omitted_when_none()
    cpu_cores: int | None = omitted_when_none()
    memory_mb: int | None = omitted_when_none()
    accelerator: str | None = omitted_when_none()
    connectivity: str | None = omitted_when_none()
    power_source: str | None = omitted_when_none()

    @classmethod
    def of(cls, h: HardwareProfile) -> HardwareOut:
        return cls(
            cpu=h.cpu,
            cpu_cores=h.cpu_cores,
            memory_mb=h.memory_mb,
            accelerator=h.accelerator,
            connectivity=h.connectivity,
            power_source=h.power_source,
        )


class SecurityCountOut(Out):
    """Refusals of one kind by nats-server for one device (or user name)."""

    kind: Literal["login_failed", "publish_denied", "subscribe_denied"]
    username: str
    count: int
    first_seen: Timestamp
    last_seen: Timestamp
    last_subject: str | None = Field(description="the NATS subject last refused, if any")
    last_address: str | None = Field(description="the client's host:port at the last one")

    @classmethod
    def of(cls, c: SecurityCount) -> SecurityCountOut:
        return cls(
            kind=c.kind,  # type: ignore[arg-type]
            username=c.username,
            count=c.count,
            first_seen=iso_from_ms(c.first_seen_ms),
            last_seen=iso_from_ms(c.last_seen_ms),
            last_subject=c.last_subject,
            last_address=c.last_address,
        )


class DeviceOut(Out):
    id: str
    name: str
    hardware: HardwareOut
    firmware: str | None
    labels: dict[str, str]
    mqtt_username: str
    stats: DeviceStatsOut | None = omitted_when_none(
        "its ingest counters, once it has sent anything (in reads only)"
    )
    security_events: list[SecurityCountOut] | None = omitted_when_none(
        "what nats-server refused it (failed logins, denied publishes and subscriptions), "
        "per kind (in reads of one device only)"
    )

    @classmethod
    def of(
        cls,
        d: Device,
        stats: DeviceStats | None = None,
        security: list[SecurityCount] | None = None,
    ) -> DeviceOut:
        return cls(
            id=d.id,
            name=d.name,
            hardware=HardwareOut.of(d.hardware),
            firmware=d.firmware,
            labels=d.labels,
            mqtt_username=d.username,
            stats=DeviceStatsOut.of(stats) if stats is not None else None,
            security_events=None
            if security is None
            else [SecurityCountOut.of(c) for c in security],
        )


class CredentialsOut(Out):
    """A device's MQTT login: the password is shown in this answer and kept nowhere."""

    username: str
    password: str

    @classmethod
    def of(cls, creds: DeviceCredentials) -> CredentialsOut:
        return cls(username=creds.username, password=creds.password)


class ConnectionOut(CredentialsOut):
    mqtt: str | None = Field(description="the MQTT URL devices connect to")
    topic: str = Field(description="the MQTT topic the device publishes its telemetry to")
    enforced_by_broker: bool = Field(
        description="whether the broker itself refuses other logins and other topics"
    )


class NewDeviceOut(DeviceOut):
    credentials: ConnectionOut

    @classmethod
    def created(cls, device: Device, connection: ConnectionOut) -> NewDeviceOut:
        return cls(**dict(DeviceOut.of(device)), credentials=connection)
