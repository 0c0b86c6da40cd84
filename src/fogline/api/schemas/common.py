"""What every area's schemas share: the id and text rules, and the base classes."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from fogline.domain.errors import Problem
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


def with_more_problems(exc: ValidationError, title: str, more: list[Problem]) -> ValidationError:
    """pydantic's errors and the rule problems found beside them, as one ValidationError (the
    API answers it as one 422 listing all). A rule problem at a place pydantic already reported
    is left out; if pydantic's errors cannot be rebuilt, they are kept as they were."""
    reported = {".".join(str(part) for part in e["loc"]) for e in exc.errors()}
    extra = [p for p in more if not any(p.field.startswith(r) for r in reported if r)]
    if not extra:
        return exc
    details: list[InitErrorDetails] = []
    for e in exc.errors():
        detail: InitErrorDetails = {"type": e["type"], "loc": e["loc"], "input": e["input"]}
        if "ctx" in e:
            detail["ctx"] = e["ctx"]
        details.append(detail)
    for p in extra:
        loc = tuple(int(part) if part.isdigit() else part for part in p.field.split("."))
        rule = PydanticCustomError("rule", "{reason}", {"reason": p.reason})
        details.append({"type": rule, "loc": loc, "input": None})
    try:
        return ValidationError.from_exception_data(title, details)
    except (TypeError, KeyError, ValueError):
        return exc
