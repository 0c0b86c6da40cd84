"""How large a request body may be, per route, enforced while it is read.

A declared `Content-Length` over the limit is refused before a byte of the body is read; a body
without one (chunked) is counted as it streams in and refused as soon as it passes the limit. So
the most a request can make the API hold is its route's limit, and nothing for a caller that
does not authenticate: routes authenticate before they read (see `routing.FoglineRoute`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeVar

from starlette.exceptions import HTTPException
from starlette.types import Message, Receive, Scope

from fogline.models.packages import MAX_PACKAGE_BYTES
from fogline.models.transport import MAX_ANSWER_BYTES

DEFAULT_MAX_REQUEST_BYTES = 1024 * 1024


class BodyKind(Enum):
    JSON = "json"  # API documents: asset types, devices, manifests, model answers...
    TELEMETRY = "telemetry"  # a device's message, bounded like one that came over MQTT
    PACKAGE = "package"  # a model's package archive
    MODEL_ANSWER = "model-answer"  # an asynchronous model's answer: as large as a direct one


@dataclass(frozen=True)
class RequestLimits:
    json_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    telemetry_bytes: int = 256 * 1024
    package_bytes: int = MAX_PACKAGE_BYTES
    model_answer_bytes: int = MAX_ANSWER_BYTES

    def of(self, kind: BodyKind) -> int:
        if kind is BodyKind.TELEMETRY:
            return self.telemetry_bytes
        if kind is BodyKind.MODEL_ANSWER:
            return self.model_answer_bytes
        if kind is BodyKind.PACKAGE:
            return self.package_bytes
        return self.json_bytes


class BodyTooLarge(HTTPException):
    """413: raised from inside the body read, so it passes through FastAPI's own body parsing
    as the HTTP error it is."""

    def __init__(self, limit: int, size: int | None) -> None:
        told = f"{size} bytes" if size is not None else f"more than {limit} bytes"
        super().__init__(413, f"the request body is {told}; the limit here is {limit} bytes")
        self.limit = limit
        self.size = size


_ATTRIBUTE = "__fogline_body_kind__"
E = TypeVar("E", bound=Callable[..., Any])


def body(kind: BodyKind) -> Callable[[E], E]:
    """Mark an endpoint whose body is not an API document (the default, `BodyKind.JSON`)."""

    def mark(endpoint: E) -> E:
        setattr(endpoint, _ATTRIBUTE, kind)
        return endpoint

    return mark


def body_kind(endpoint: Callable[..., Any]) -> BodyKind:
    kind = getattr(endpoint, _ATTRIBUTE, BodyKind.JSON)
    assert isinstance(kind, BodyKind)
    return kind


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def bounded(receive: Receive, scope: Scope, limit: int) -> Receive:
    """`receive` that refuses a body over `limit` bytes, checked before and while reading."""
    declared = _content_length(scope)
    received = 0

    async def receive_bounded() -> Message:
        nonlocal received
        if declared is not None and declared > limit:
            raise BodyTooLarge(limit, declared)
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise BodyTooLarge(limit, None)
        return message

    return receive_bounded
