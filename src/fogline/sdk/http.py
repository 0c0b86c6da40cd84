"""The HTTP face of a model server: score, learn, health, and callbacks for async answers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fogline.sdk.contract import Reading, ScoreRequest
from fogline.sdk.serve import ModelBusy, ModelHost, ServerSettings

log = logging.getLogger("fogline.model")
CALLBACK_ATTEMPTS = 3


def _problem(status: int, detail: str, headers: dict[str, str] | None = None) -> Response:
    body = {"type": "about:blank", "title": "model error", "status": status, "detail": detail}
    return JSONResponse(body, status, headers, media_type="application/problem+json")


def build_app(host: ModelHost, settings: ServerSettings) -> Starlette:
    pending: set[asyncio.Task[None]] = set()
    client = httpx.AsyncClient(timeout=10)

    async def score(request: Request) -> Response:
        try:
            score_request = ScoreRequest.from_json(orjson.loads(await request.body()))
        except (ValueError, TypeError) as exc:
            return _problem(400, str(exc))
        if score_request.callback_url:
            if len(pending) >= host.concurrency:  # each is scoring or sending its answer
                host.busy_refusals += 1
                return _problem(429, "all workers are busy", {"Retry-After": "1"})
            task = asyncio.create_task(_answer_later(score_request))
            pending.add(task)
            task.add_done_callback(pending.discard)
            return JSONResponse({"request_id": score_request.request_id, "accepted": True}, 202)
        try:
            outputs = await host.score(score_request)
        except ModelBusy as exc:
            return _problem(429, str(exc), {"Retry-After": "1"})
        except Exception as exc:
            log.exception("score failed")
            return _problem(500, f"score failed: {exc}")
        return Response(host.answer(score_request, outputs), media_type="application/json")

    async def _answer_later(score_request: ScoreRequest) -> None:
        assert score_request.callback_url is not None
        try:
            outputs = await host.score(score_request)
        except Exception:
            log.exception("score failed")
            return  # the companion times the request out and records it as stale
        body = host.answer(score_request, outputs)
        for attempt in range(CALLBACK_ATTEMPTS):
            try:
                answer = await client.post(
                    score_request.callback_url,
                    content=body,
                    headers={"content-type": "application/json"},
                )
                if answer.status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2 * 2**attempt)

    async def learn(request: Request) -> Response:
        try:
            body: Any = orjson.loads(await request.body())
            parsed = ScoreRequest.from_json(body)
        except (ValueError, TypeError) as exc:
            return _problem(400, str(exc))
        readings: list[Reading] = parsed.readings
        try:
            await host.learn(readings, body.get("labels"))
        except NotImplementedError as exc:
            return _problem(501, str(exc))
        return JSONResponse({"learned": len(readings)})

    async def health(_request: Request) -> Response:
        ok, detail = host.health()
        detail.update(
            scored=host.scored,
            failures=host.failures,
            in_flight=host.in_flight,
            concurrency=host.concurrency,
        )
        return JSONResponse(detail, 200 if ok else 503)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        await client.aclose()

    return Starlette(
        routes=[
            Route(settings.score_endpoint, score, methods=["POST"]),
            Route("/learn", learn, methods=["POST"]),
            Route(settings.health_endpoint, health, methods=["GET"]),
        ],
        lifespan=lifespan,
    )


def serve_http(host: ModelHost, settings: ServerSettings) -> None:
    if settings.socket and settings.socket_fd is None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(settings.socket)
    uvicorn.run(
        build_app(host, settings),
        host=settings.host,
        port=settings.port,
        uds=settings.socket if settings.socket_fd is None else None,
        fd=settings.socket_fd,
        log_level="warning",
        access_log=False,
    )
