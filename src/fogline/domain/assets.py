"""Asset types and assets: what telemetry belongs to, and the rules it must follow."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from functools import cached_property
from typing import Any

from fogline.domain.errors import InvalidInput, Problem
from fogline.domain.ids import slug_problem


class DType(Enum):
    FLOAT = "float"
    INT = "int"
    BOOL = "bool"
    STRING = "string"

    @property
    def numeric(self) -> bool:
        return self in (DType.FLOAT, DType.INT)


@dataclass(frozen=True)
class TelemetryDefinition:
    name: str
    dtype: DType
    unit: str | None = None
    min: float | None = None
    max: float | None = None
    description: str | None = None


@dataclass(frozen=True)
class AttributeDefinition:
    name: str
    dtype: DType
    required: bool = False
    default: Any = None
    description: str | None = None


@dataclass(frozen=True)
class AssetType:
    tenant: str
    id: str
    name: str
    description: str | None
    telemetry: tuple[TelemetryDefinition, ...]
    attributes: tuple[AttributeDefinition, ...] = ()

    @cached_property
    def definitions(self) -> dict[str, TelemetryDefinition]:
        return {d.name: d for d in self.telemetry}

    def definition(self, name: str) -> TelemetryDefinition | None:
        return self.definitions.get(name)


@dataclass(frozen=True)
class Location:
    latitude: float
    longitude: float
    altitude: float | None = None


@dataclass(frozen=True)
class Asset:
    tenant: str
    id: str
    asset_type: str
    name: str
    attributes: dict[str, Any] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    site: str | None = None
    location: Location | None = None


_FLOAT, _INT, _BOOL, _STRING = DType.FLOAT, DType.INT, DType.BOOL, DType.STRING
# The longest text a string telemetry stores (characters), whoever writes it.
MAX_STRING_VALUE = 4096
# The integers a stored value can be: what orjson (and so the store) can carry.
INT_MIN, UINT_MAX = -(2**63), 2**64 - 1


def value_matches(dtype: DType, value: Any) -> bool:
    """Whether a JSON value has the declared type. bool is not a number here, though Python
    thinks so, and integral floats such as 3.0 count as ints since JSON encoders emit them.
    Exact type checks, not isinstance: this runs for every value the historian sees."""
    kind = type(value)
    if dtype is _FLOAT:
        return kind is int or (kind is float and math.isfinite(value))
    if dtype is _INT:
        return kind is int or (kind is float and value.is_integer())
    if dtype is _BOOL:
        return kind is bool
    return kind is str


def _name_problems(name: str, where: str, seen: set[str], what: str) -> list[Problem]:
    """A definition's name: a slug, and once per list (`seen` collects the names so far)."""
    problems = [p] if (p := slug_problem(name, f"{where}.name")) is not None else []
    if name in seen:
        problems.append(Problem(f"{where}.name", f"duplicate {what} name {name!r}"))
    seen.add(name)
    return problems


def check_telemetry_definitions(defs: list[TelemetryDefinition], path: str) -> list[Problem]:
    return check_telemetry_items(list(enumerate(defs)), path)


def check_telemetry_items(defs: list[tuple[int, TelemetryDefinition]], path: str) -> list[Problem]:
    """The definitions with their places in the list: those that could be read at all, when
    others could not (so that one answer names every problem)."""
    problems: list[Problem] = []
    seen: set[str] = set()
    for i, d in defs:
        where = f"{path}.{i}"
        problems += _name_problems(d.name, where, seen, "telemetry")
        if not d.dtype.numeric and (d.min is not None or d.max is not None):
            problems.append(Problem(where, "a range (min/max) applies to float and int only"))
        for bound, value in (("min", d.min), ("max", d.max)):
            if value is not None and not math.isfinite(value):  # JSON would show it as null
                problems.append(Problem(f"{where}.{bound}", "must be a finite number"))
        if d.min is not None and d.max is not None and d.min > d.max:
            problems.append(Problem(f"{where}.min", f"min {d.min} is above max {d.max}"))
    return problems


def check_attribute_definitions(defs: list[AttributeDefinition], path: str) -> list[Problem]:
    return check_attribute_items(list(enumerate(defs)), path)


def check_attribute_items(defs: list[tuple[int, AttributeDefinition]], path: str) -> list[Problem]:
    problems: list[Problem] = []
    seen: set[str] = set()
    for i, d in defs:
        where = f"{path}.{i}"
        problems += _name_problems(d.name, where, seen, "attribute")
        if d.default is not None and not value_matches(d.dtype, d.default):
            problems.append(Problem(f"{where}.default", f"is not a {d.dtype.value}"))
    return problems


def resolve_attributes(
    asset_type: AssetType, given: dict[str, Any], path: str = "attributes"
) -> dict[str, Any]:
    """The asset's attributes checked against its type, with the type's defaults filled in.

    Attributes the type does not declare are kept as they are: a type describes what every asset
    has, not everything an asset may carry.
    """
    problems: list[Problem] = []
    resolved = dict(given)
    for d in asset_type.attributes:
        if d.name in given:
            if not value_matches(d.dtype, given[d.name]):
                problems.append(Problem(f"{path}.{d.name}", f"must be a {d.dtype.value}"))
        elif d.default is not None:
            resolved[d.name] = d.default
        elif d.required:
            problems.append(Problem(f"{path}.{d.name}", "is required by the asset type"))
    if problems:
        raise InvalidInput.of(problems, "attributes")
    return resolved
