"""What every area's schemas share: the id and text rules, and the base classes."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from fogline.domain.ids import MAX_ID_LENGTH, SLUG_PATTERN

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
Short = Annotated[str, Field(max_length=100)]
Timestamp = Annotated[str, Field(description="ISO 8601, UTC, to the millisecond")]


def _is_none(value: Any) -> bool:
    return value is None


def omitted_when_none(description: str | None = None) -> Any:
    """A field left out of the answer when it has no value, rather than sent as null."""
    return Field(default=None, exclude_if=_is_none, description=description)


class Strict(BaseModel):
    """A request body: a JSON value of another type is refused, never converted (`false` is no
    number), and so is a key the body does not have."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Out(BaseModel):
    """A response body, built by the route from the contexts' records."""
