"""Telemetry as it is stored: values of an asset's series, and the dead letters of bad input."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Any, NamedTuple


class SourceKind(StrEnum):
    """Who wrote a message of the telemetry stream: a device, or a model's data companion."""

    DEVICE = "device"
    MODEL = "model"


class Reading(NamedTuple):
    """The values of one asset at one time, already checked against its asset type. A named
    tuple, not a dataclass: the historian makes hundreds of thousands of these a second.
    `source` says who wrote them: a model's values never replace a device's."""

    tenant: str
    asset: str
    ts: int
    values: dict[str, Any]
    source: SourceKind = SourceKind.DEVICE


class DeadLetterReason(Enum):
    NOT_JSON = "not-json"
    TOO_LARGE = "too-large"
    BAD_SHAPE = "bad-shape"
    UNKNOWN_DEVICE = "unknown-device"
    UNKNOWN_ASSET = "unknown-asset"
    BAD_TIMESTAMP = "bad-timestamp"
    UNKNOWN_TELEMETRY = "unknown-telemetry"
    WRONG_TYPE = "wrong-type"
    OUT_OF_RANGE = "out-of-range"
    # One record for the refusals of a message beyond the per-message limit.
    CAPPED = "capped"
    # A message the historian could not store although it passed validation (found by
    # splitting a failing batch down to it); the error is in the reason.
    UNPROCESSABLE = "unprocessable"
    # A model's output for telemetry that a device writes on that asset: a model never
    # overwrites a device's readings.
    DEVICE_TELEMETRY = "device-telemetry"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Input Fogline refused, kept with the reason so nobody has to guess what was lost.

    `item` is the reading's index in a batch (None when the whole message was refused);
    `telemetry` names the value when only that value was refused.
    """

    tenant: str
    device: str
    received_at: int
    reason_code: DeadLetterReason
    reason: str
    payload: str | None
    stream_seq: int | None = None
    item: int | None = None
    asset: str | None = None
    telemetry: str | None = None


@dataclass(frozen=True, slots=True)
class StoredDeadLetter:
    id: int
    letter: DeadLetter


@dataclass(frozen=True, slots=True)
class DeviceActivity:
    """What one device sent in one historian batch, for its counters."""

    tenant: str
    device: str
    messages: int
    values: int
    dead_letters: int
    last_seen_ms: int


@dataclass(frozen=True, slots=True)
class DeviceStats:
    tenant: str
    device: str
    messages_total: int
    values_total: int
    dead_letters_total: int
    last_seen_ms: int
