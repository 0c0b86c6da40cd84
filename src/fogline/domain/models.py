"""The models context's records: a submitted model version, its template columns, its
mappings to assets, its lifecycle events and its stale requests (its sagas: `sagas.py`).
Plain data; the store reads and writes them, the models context decides what happens to them."""

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
