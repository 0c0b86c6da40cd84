"""The route class every API router uses: who is calling is settled before the body is read,
and the body is bounded while it is read.

FastAPI reads and parses a route's body before it resolves the route's dependencies, so an
authentication dependency alone would let an anonymous caller make the API read a body of any
size first. Here the route's own authentication runs first, then its handler.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from fogline.api.deps import (
    ApiServices,
    api_key,
    authenticate_key,
    authenticate_sender,
    device_sender,
)
from fogline.api.limits import body_kind, bounded
from fogline.models.manifest import SEMVER_PATTERN


def _calls(dependant: Dependant) -> Iterator[Any]:
    for sub in dependant.dependencies:
        yield sub.call
        yield from _calls(sub)


def _authentication(dependant: Dependant) -> Callable[[Request], Awaitable[Any]] | None:
    calls = set(_calls(dependant))
    if device_sender in calls:
        return authenticate_sender
    if api_key in calls:
        return authenticate_key
    return None


class FoglineRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        authenticate = _authentication(self.dependant)
        if authenticate is None:
            return handler

        async def authenticated_first(request: Request) -> Response:
            await authenticate(request)
            return await handler(request)

        return authenticated_first

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            services: ApiServices = scope["app"].state.services
            receive = bounded(receive, scope, services.limits.of(body_kind(self.endpoint)))
        await super().handle(scope, receive, send)


class SemverConvertor(Convertor[str]):
    """`{version:semver}`: a path segment that is not a version is not that route's, so
    `/models/m/update` is the update route's alone (and GET on it a 405, not a bad version)."""

    regex = SEMVER_PATTERN.removeprefix("^").removesuffix("$")

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("semver", SemverConvertor())
