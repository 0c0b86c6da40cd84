"""Errors to RFC 9457 problem responses, in one place."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from fogline.domain.errors import ErrorKind, FoglineError

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"

STATUS_OF_KIND = {
    ErrorKind.INVALID: 422,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.CONFLICT: 409,
    ErrorKind.UNAUTHENTICATED: 401,
    ErrorKind.FORBIDDEN: 403,
    ErrorKind.UNAVAILABLE: 503,
    ErrorKind.CONFIGURATION: 500,
    ErrorKind.INTERNAL: 500,
}

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


def problem(
    status: int, detail: str, errors: list[dict[str, str]] | None = None, **extra: Any
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
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(FoglineError)
    async def fogline_error(_request: Request, exc: FoglineError) -> JSONResponse:
        status = STATUS_OF_KIND[exc.kind]
        if status >= 500:
            log.error("api.error", extra={"fields": {"error": exc.message}})
        errors = [{"field": p.field, "reason": p.reason} for p in exc.problems]
        return problem(status, exc.message, errors)

    @app.exception_handler(RequestValidationError)
    async def request_invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        for e in exc.errors():
            location = [str(part) for part in e.get("loc", ()) if part not in ("body",)]
            errors.append({"field": ".".join(location), "reason": str(e.get("msg", "invalid"))})
        noun = "problem" if len(errors) == 1 else "problems"
        return problem(422, f"invalid request: {len(errors)} {noun}", errors)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("api.unexpected", extra={"fields": {"error": type(exc).__name__}})
        return problem(500, "internal error; the platform log has the details")
