"""The models context's records: a submitted model version, its template columns, its
mappings to assets, its lifecycle events, its stale requests and its dead letters (its sagas:
`sagas.py`). Plain data; the store reads and writes them, the models context decides what
happens to them."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from fogline.domain.lifecycle import ModelState


class Direction(StrEnum):
    """Which side of a model a template column is on: fed to it, or written back by it."""

    INPUT = "input"
    OUTPUT = "output"


@dataclass(frozen=True)
class TemplateColumn:
    direction: Direction
    name: str
    read_as_string: bool


@dataclass(frozen=True)
class RegistryCredentials:
    registry: str
    username: str | None
    password_sealed: str | None


@dataclass(frozen=True)
class ModelRecord:
    id: int
    tenant: str
    name: str
    version: str
    description: str | None
    state: ModelState
    state_reason: str | None
    manifest: dict[str, Any]  # as submitted, without secrets
    templates: tuple[TemplateColumn, ...]
    has_registry_password: bool
    created_at: int
    updated_at: int


@dataclass(frozen=True)
class ModelEventRecord:
    id: int
    event: str
    from_state: str | None
    to_state: str
    reason: str | None
    at: int


@dataclass(frozen=True)
class Mapping:
    """One template column bound to one telemetry, of an asset or of every asset of a type."""

    direction: Direction
    column: str
    target: str  # asset id or asset type id
    telemetry: str


@dataclass(frozen=True)
class ModelMappings:
    assets: tuple[Mapping, ...]
    asset_types: tuple[Mapping, ...]


@dataclass(frozen=True)
class StaleRequest:
    request_id: str
    readings: int
    sent_at: int
    timed_out_at: int


class LossReason(StrEnum):
    """Why readings a companion accepted (or outputs a model gave) were dead-lettered."""

    MODEL_ERROR = "model-error"  # the model answered the call with an error
    MODEL_DOWN = "model-down"  # it crashed or could not be reached, and the one retry failed too
    TIMEOUT = "timeout"  # no answer within timeoutMs, the one retry after a restart neither
    MALFORMED_ANSWER = "malformed-answer"  # an answer that is not what the contract says
    REFUSED_OUTPUT = "refused-output"  # an output value refused; the detail code says why
    OVERLOAD = "dropped-on-overload"  # the companion's queue was full
    DISCARDED_AT_STOP = "discarded-at-stop"  # still queued when the model stopped or restarted
    LATE = "late"  # TIME_WINDOW: every window holding the reading had closed (past the lateness)
    FUTURE = "future"  # TIME_WINDOW: the reading is too far ahead of the platform's clock


@dataclass(frozen=True)
class ModelDeadLetter:
    """Readings of a model that were not scored, or one output value that was not written,
    kept with the reason (one record per call or per batch of drops: `readings` says how many
    readings it stands for; 0 for an output value)."""

    tenant: str
    model_id: int
    at: int
    reason_code: LossReason
    reason: str
    readings: int
    detail_code: str | None = None  # for refused outputs: not-finite, wrong-type, too-large, ...
    request_id: str | None = None
    asset: str | None = None
    ts: int | None = None  # of the reading (or output), when the record is about one
    column: str | None = None  # the model's output column, for a refused output value
    payload: str | None = None  # the original values (JSON), clipped


@dataclass(frozen=True)
class StoredModelDeadLetter:
    id: int
    letter: ModelDeadLetter


def output_source(name: str, version: str) -> str:
    """How a model version's outputs are labelled where a device id would be (dead letters)."""
    return f"model:{name}@{version}"
