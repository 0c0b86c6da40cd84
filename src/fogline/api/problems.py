"""Errors to RFC 9457 problem responses, in one place."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from fogline.domain.errors import STATUS_OF_KIND, FoglineError, Unavailable
from fogline.domain.errors import Problem as DomainProblem
from fogline.domain.ids import SLUG_PATTERN
from fogline.fleet.devices import PASSWORD_PATTERN

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"


TITLES = {
    400: "Bad request",
    401: "Not authenticated",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Content too large",
    422: "Invalid input",
    500: "Internal error",
    503: "Service unavailable",
}


# -- what the OpenAPI schema says of errors ---------------------------------------------------


class FieldProblem(BaseModel):
    field: str = Field(description="dotted path of the input at fault; empty for the whole")
    reason: str


class Problem(BaseModel):
    """RFC 9457 problem details: every error the API answers."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    errors: list[FieldProblem] | None = Field(
        default=None, description="for invalid input: every problem at once"
    )


_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}


# Every 503 says when to try again: what is away is usually back within seconds.
RETRY_AFTER_S = 5
_RETRY_AFTER_HEADER = {
    "Retry-After": {
        "description": "seconds to wait before trying again",
        "schema": {"type": "integer"},
    }
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The error answers of a route, for FastAPI's `responses=`: problem+json, each one."""
    return {
        status: {
            "description": TITLES[status],
            "content": {PROBLEM_JSON: {"schema": _PROBLEM_REF}},
            **({"headers": _RETRY_AFTER_HEADER} if status == 503 else {}),
        }
        for status in statuses
    }


# The statuses routes share: any route that checks an API key may answer 401 (no or a bad key)
# and 422 (a bad parameter); within a tenant also 403 (another tenant's key) and 404 (no such
# tenant, or thing); a route that reads a body also 413 (too large), and one whose body is a
# JSON document 400 (not JSON at all: not UTF-8, say).
KEYED = problem_responses(401, 422)
IN_TENANT = problem_responses(401, 403, 404, 422)
WITH_BODY = problem_responses(400, 413, 422)
RAW_BODY = problem_responses(413, 422)
CONFLICT = problem_responses(409)
UNAVAILABLE = problem_responses(503)


def _problem_schemas() -> dict[str, Any]:
    schema = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    definitions: dict[str, Any] = schema.pop("$defs", {})
    return {**definitions, "Problem": schema}


# -- answering ------------------------------------------------------------------------------


def problem(
    status: int,
    detail: str,
    errors: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    if errors:
        body["errors"] = errors
    body.update(extra)
    headers = dict(headers or {})
    if status == 401:
        headers.setdefault("WWW-Authenticate", "Bearer")
    if status == 503:
        headers.setdefault("Retry-After", str(RETRY_AFTER_S))
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


PathTable = list[tuple[re.Pattern[str], frozenset[str]]]


def _path_table(app: FastAPI) -> PathTable:
    """Every documented path as a pattern (its parameters' own patterns where they have one),
    with the methods it takes; made once per app."""
    known: PathTable | None = getattr(app.state, "path_table", None)
    if known is not None:
        return known
    table: PathTable = []
    for template, item in app.openapi().get("paths", {}).items():
        patterns: dict[str, str] = {}
        for operation in item.values():
            for parameter in operation.get("parameters", []):
                if parameter.get("in") == "path":
                    found = parameter.get("schema", {}).get("pattern", "")
                    patterns[parameter["name"]] = found.removeprefix("^").removesuffix("$")

        def segment(match: re.Match[str], patterns: dict[str, str] = patterns) -> str:
            return f"(?:{patterns.get(match.group(1)) or '[^/]+'})"

        regex = re.sub(r"\\\{(\w+)\\\}", segment, re.escape(template))
        table.append((re.compile(f"^{regex}$"), frozenset(m.upper() for m in item)))
    app.state.path_table = table
    return table


def allowed_methods(app: FastAPI, path: str) -> str:
    """`Allow` for a path: every method of every documented operation the path matches."""
    methods: set[str] = set()
    for regex, verbs in _path_table(app):
        if regex.match(path):
            methods |= verbs
    if "GET" in methods:
        methods.add("HEAD")
    return ", ".join(sorted(methods))


_PATTERN_RULES = {
    SLUG_PATTERN: "is not a slug: use lowercase letters, digits, '-' and '_', starting with a "
    "letter or digit",
    PASSWORD_PATTERN: "must be printable ASCII (space to '~')",
}


def _reason(field: str, error: Any) -> str:
    """pydantic's message, or for a pattern the rule in words and the value that broke it
    (never a password's)."""
    if error.get("type") != "string_pattern_mismatch":
        return str(error.get("msg", "invalid"))
    pattern = (error.get("ctx") or {}).get("pattern", "")
    shown = "the password" if "password" in field else repr(error.get("input"))[:80]
    return f"{shown} {_PATTERN_RULES.get(pattern, f'does not match {pattern}')}"


def field_problems(errors: Sequence[Any], prefix: str = "") -> list[DomainProblem]:
    """pydantic's errors as problems, each at its dotted field path under `prefix`."""
    problems = []
    for e in errors:
        location = [str(part) for part in e.get("loc", ()) if part not in ("body",)]
        field = ".".join([prefix, *location] if prefix else location)
        problems.append(DomainProblem(field, _reason(field, e)))
    return problems


def invalid_request(errors: Sequence[Any]) -> JSONResponse:
    """pydantic's errors of a request (its path, query, headers or body) as one 422 problem
    listing each: the one place the API words them."""
    problems = [{"field": p.field, "reason": p.reason} for p in field_problems(errors)]
    noun = "problem" if len(problems) == 1 else "problems"
    return problem(422, f"invalid request: {len(problems)} {noun}", problems)


def install(app: FastAPI) -> None:
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            schema.setdefault("components", {}).setdefault("schemas", {}).update(_problem_schemas())
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]

    @app.exception_handler(FoglineError)
    async def fogline_error(request: Request, exc: FoglineError) -> JSONResponse:
        status = STATUS_OF_KIND[exc.kind]
        if status == 503:
            # A part away (the database, the broker): one line per request, no traceback.
            fields = {"path": request.url.path, "error": exc.message}
            log.warning("api.unavailable", extra={"fields": fields})
        elif status >= 500:
            log.error("api.error", extra={"fields": {"error": exc.message}})
        errors = [{"field": p.field, "reason": p.reason} for p in exc.problems]
        headers = None
        if status == 503:
            wait = exc.retry_after_s if isinstance(exc, Unavailable) else RETRY_AFTER_S
            headers = {"Retry-After": str(wait)}
        return problem(status, exc.message, errors, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def request_invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return invalid_request(exc.errors())

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # The router names only the one route it tried; the resource may take more.
            headers["Allow"] = allowed_methods(app, request.url.path) or headers.get("Allow", "")
        detail = str(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            # No route took the path: say what was asked, and the usual cause.
            detail = (
                f"nothing at {request.method} {request.url.path}: check the ids in it "
                "(model versions are like 1.0.0) against /api/v1/docs"
            )
        return problem(exc.status_code, detail, headers=headers)

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("api.unexpected", extra={"fields": {"error": type(exc).__name__}})
        return problem(500, "internal error; the platform log has the details")
