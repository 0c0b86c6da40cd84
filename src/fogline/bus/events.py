"""Platform events: what changed, said by the context that owns the change, for every context
(and every user, through `fogline events`) that cares.

They are the public contract between contexts: each event is a pydantic model with a `type`,
published into a durable JetStream stream (`<ROOT>_EVENTS`), ordered and replayable by
sequence. Add fields with defaults; never rename or remove one (consumers in other processes,
and stored events, still carry the old shape). `docs/events.md` lists them for users.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from fogline.domain.timeseries import now_ms


class EventType(StrEnum):
    MODEL_TRANSITIONED = "model.transitioned"
    REGISTRY_CHANGED = "registry.changed"
    DEVICE_CHANGED = "device.changed"
    MAPPINGS_CHANGED = "mappings.changed"
    DEPLOYMENT_STEP = "deployment.step"
    MODEL_RESTARTED = "model.restarted"
    SECURITY_REFUSED = "security.refused"


class Change(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    DELETED = "deleted"


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str = Field(default_factory=lambda: uuid.uuid4().hex, description="unique; dedup key")
    at: int = Field(default_factory=now_ms, description="when it happened, epoch ms")
    tenant: str


class ModelTransitioned(_Event):
    """A model version moved in its lifecycle (submitted ones start in draft)."""

    type: Literal[EventType.MODEL_TRANSITIONED] = EventType.MODEL_TRANSITIONED
    model: str
    version: str
    event: str
    from_state: str | None
    to_state: str
    reason: str | None = None


class RegistryChanged(_Event):
    """An asset type or an asset was created, changed or deleted."""

    type: Literal[EventType.REGISTRY_CHANGED] = EventType.REGISTRY_CHANGED
    kind: Literal["asset_type", "asset"]
    target: str = Field(description="the asset type's or the asset's id")
    change: Change


class DeviceChanged(_Event):
    """A device was registered, changed, given a new password or deleted."""

    type: Literal[EventType.DEVICE_CHANGED] = EventType.DEVICE_CHANGED
    device: str
    change: Change
    credentials_changed: bool = False


class MappingsChanged(_Event):
    """A model version's mappings to assets (or asset types) were replaced."""

    type: Literal[EventType.MAPPINGS_CHANGED] = EventType.MAPPINGS_CHANGED
    model: str
    version: str
    assets: list[str] = Field(default_factory=list)
    asset_types: list[str] = Field(default_factory=list)


class DeploymentStep(_Event):
    """A step of a deployment saga (deploy, stop, update, restore, health, recover) was
    attempted, done, failed or compensated."""

    type: Literal[EventType.DEPLOYMENT_STEP] = EventType.DEPLOYMENT_STEP
    model: str
    version: str
    saga: str
    step: str
    status: str
    attempt: int
    detail: str | None = None


class ModelRestarted(_Event):
    """A running model is being restarted by its health monitor: it crashed, failed its health
    check, or a call outlived its timeout. `attempt` counts the restarts in the monitor's
    window; the monitor gives up (the model goes to draft) when they reach its limit."""

    type: Literal[EventType.MODEL_RESTARTED] = EventType.MODEL_RESTARTED
    model: str
    version: str
    reason: str
    attempt: int
    backoff_s: float = Field(description="how long the monitor waited before this restart")


class SecurityEvent(_Event):
    """nats-server refused a login, a publish or a subscription. Refusals are counted per
    (user, kind) and published at most once per flush interval (a few seconds) with their
    `count`: a burst is one event. `tenant` and `device` come from the user name when it is
    `<tenant>.<device>`; any other name has tenant `_none` and no device. The user name is the
    client's own claim: for a failed login the device may not exist."""

    type: Literal[EventType.SECURITY_REFUSED] = EventType.SECURITY_REFUSED
    kind: Literal["login_failed", "publish_denied", "subscribe_denied"]
    username: str
    device: str | None = None
    count: int = Field(ge=1, description="refusals since the previous event of this user and kind")
    first_at: int = Field(description="the first of them, epoch ms (`at`: the last)")
    subject: str | None = Field(default=None, description="the NATS subject refused, if any")
    address: str | None = Field(default=None, description="the client's host:port")
    protocol: Literal["mqtt", "nats"] = "mqtt"


PlatformEvent = Annotated[
    ModelTransitioned
    | RegistryChanged
    | DeviceChanged
    | MappingsChanged
    | DeploymentStep
    | ModelRestarted
    | SecurityEvent,
    Field(discriminator="type"),
]
EVENT_ADAPTER: TypeAdapter[PlatformEvent] = TypeAdapter(PlatformEvent)

EventHandler = Callable[[PlatformEvent], Awaitable[None]]


def decode_event(data: bytes) -> PlatformEvent:
    return EVENT_ADAPTER.validate_json(data)


def encode_event(event: PlatformEvent) -> bytes:
    return event.model_dump_json().encode()


@dataclass(frozen=True)
class StoredEvent:
    """An event as the stream keeps it: its sequence orders it and is where a replay resumes."""

    seq: int
    event: PlatformEvent


class EventPublisher(Protocol):
    """What a context needs to tell others that something changed (the Bus is one)."""

    async def publish_event(self, event: PlatformEvent) -> None: ...
