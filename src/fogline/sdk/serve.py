"""The model server the SDK gives a model: HTTP (Starlette on uvicorn) or AMQP (aio-pika),
chosen by the environment the runtime sets (see `ServerSettings.from_env`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import orjson

from fogline.sdk.contract import Output, Reading, ScoreRequest, outputs_of
from fogline.sdk.model import FunctionModel, Model

log = logging.getLogger("fogline.model")


@dataclass(frozen=True)
class ServerSettings:
    protocol: str = "http"
    host: str = "127.0.0.1"
    port: int = 8080
    socket: str | None = None  # a Unix socket to serve on instead
    socket_fd: int | None = None  # a listening socket inherited (the sandbox hands one over)
    score_endpoint: str = "/score"
    health_endpoint: str = "/health"
    amqp_url: str | None = None
    score_queue: str | None = None
    health_queue: str | None = None
    concurrency: int = 1  # calls served at once; more are refused as busy

    @classmethod
    def from_env(cls) -> ServerSettings:
        e = os.environ
        return cls(
            protocol=e.get("FOGLINE_MODEL_PROTOCOL", "http"),
            host=e.get("FOGLINE_MODEL_HOST", "127.0.0.1"),
            port=int(e.get("FOGLINE_MODEL_PORT") or e.get("PORT") or 8080),
            socket=e.get("FOGLINE_MODEL_SOCKET") or None,
            socket_fd=int(e["FOGLINE_MODEL_SOCKET_FD"])
            if e.get("FOGLINE_MODEL_SOCKET_FD")
            else None,
            score_endpoint=e.get("FOGLINE_SCORE_ENDPOINT", "/score"),
            health_endpoint=e.get("FOGLINE_HEALTH_ENDPOINT", "/health"),
            amqp_url=e.get("FOGLINE_AMQP_URL"),
            score_queue=e.get("FOGLINE_SCORE_QUEUE"),
            health_queue=e.get("FOGLINE_HEALTH_QUEUE"),
            concurrency=max(1, int(e.get("FOGLINE_MODEL_CONCURRENCY") or 1)),
        )


class ModelBusy(Exception):
    """Every worker is scoring: the call is refused before it starts (HTTP 429), so the
    companion may send it again; it never waits here long enough to time out."""


class ModelHost:
    """Runs the user's model on `concurrency` worker threads (one unless the manifest asks for
    more: a stateful model always has one), so a slow model never blocks health checks, and a
    stateful model sees its calls strictly in order. A call beyond the workers is refused as
    busy rather than queued: the companion sends no more than this, and a call it timed out on
    and gave up may still be running here."""

    def __init__(self, model: Model, concurrency: int = 1) -> None:
        self.model = model
        self.concurrency = concurrency
        self.executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="model")
        self.scored = 0
        self.failures = 0
        self.busy_refusals = 0
        self.in_flight = 0

    async def score(self, request: ScoreRequest) -> list[Output]:
        if self.in_flight >= self.concurrency:
            self.busy_refusals += 1
            raise ModelBusy(f"all {self.concurrency} workers are busy")
        self.in_flight += 1
        loop = asyncio.get_running_loop()
        try:
            if request.window is not None:
                result = await loop.run_in_executor(
                    self.executor, self.model.score_window, request.readings, request.window
                )
            else:
                result = await loop.run_in_executor(
                    self.executor, self.model.score, request.readings
                )
            outputs = outputs_of(request.readings, result)
        except Exception:
            self.failures += 1
            raise
        finally:
            self.in_flight -= 1
        self.scored += len(request.readings)
        return outputs

    async def learn(self, readings: list[Reading], labels: list[Any] | None) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.executor, self.model.learn, readings, labels)

    def health(self) -> tuple[bool, dict[str, Any]]:
        try:
            verdict = self.model.health()
        except Exception as exc:
            return False, {"status": "error", "error": str(exc)}
        if isinstance(verdict, dict):
            ok = verdict.get("status", "ok") == "ok"
            return ok, {"status": "ok" if ok else "unhealthy", **verdict}
        return bool(verdict), {"status": "ok" if verdict else "unhealthy"}

    def answer(self, request: ScoreRequest, outputs: list[Output]) -> bytes:
        document = {"request_id": request.request_id, "outputs": [o.to_json() for o in outputs]}
        try:
            payload: bytes | None = orjson.dumps(document)
        except TypeError:  # e.g. an int wider than 64 bits, which orjson cannot write
            payload = None
        if payload is None or b"null" in payload:
            # orjson writes NaN and the infinities as null: the platform would see a null and
            # never the value the model gave. Python's json writes them as NaN and Infinity
            # (and any int), which the platform reads and refuses value by value, keeping
            # what they were.
            with contextlib.suppress(TypeError, ValueError):
                payload = json.dumps(document).encode()
        if payload is None:
            raise TypeError("score returned values that cannot be written as JSON")
        return payload


def serve(
    model: Model | None = None,
    *,
    score: Callable[[list[Reading]], list[Any]] | None = None,
    learn: Callable[[list[Reading], list[Any] | None], None] | None = None,
    health: Callable[[], bool | dict[str, Any]] | None = None,
    settings: ServerSettings | None = None,
) -> None:
    """Serve a model until SIGTERM/SIGINT. Give a Model, or the functions."""
    if model is None:
        if score is None:
            raise TypeError("serve() needs a Model or a score function")
        model = FunctionModel(score, learn, health)
    settings = settings or ServerSettings.from_env()
    logging.basicConfig(level=os.environ.get("FOGLINE_MODEL_LOG_LEVEL", "WARNING").upper())
    host = ModelHost(model, settings.concurrency)
    if settings.protocol == "amqp":
        from fogline.sdk.amqp import serve_amqp

        asyncio.run(serve_amqp(host, settings))
    else:
        from fogline.sdk.http import serve_http

        serve_http(host, settings)


async def wait_for_stop() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
