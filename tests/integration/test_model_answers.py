"""Issue 12, D5: a model's answer is bounded before it is read. A model server (a real HTTP
server here) that answers more than the limit, announced or streamed, is refused as soon as
the answer passes it; an answer within the limit is read whole."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import web

import fogline.models.transport as transport
from fogline.models.transport import AnswerTooLarge, HttpModelClient
from tests.conftest import free_port

LIMIT = 1024 * 1024


@pytest.fixture
async def model_server(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    monkeypatch.setattr(transport, "MAX_ANSWER_BYTES", LIMIT)
    sent: dict[str, int] = {"streamed": 0}

    async def announced(_request: web.Request) -> web.Response:
        return web.Response(body=b'"' + b"x" * (4 * LIMIT) + b'"', content_type="application/json")

    async def streamed(request: web.Request) -> web.StreamResponse:
        answer = web.StreamResponse(headers={"content-type": "application/json"})
        answer.enable_chunked_encoding()
        await answer.prepare(request)
        try:
            for _ in range(1000):  # 64 MiB if it were all read
                await answer.write(b"x" * 65536)
                sent["streamed"] += 65536
        except (ConnectionResetError, RuntimeError):
            pass  # the platform hung up: what it should do
        return answer

    async def fine(_request: web.Request) -> web.Response:
        return web.Response(
            body=orjson.dumps([{"score": 1.0}] * 1000), content_type="application/json"
        )

    app = web.Application()
    app.router.add_post("/announced", announced)
    app.router.add_post("/streamed", streamed)
    app.router.add_post("/fine", fine)
    app.router.add_get("/health", streamed)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
        # The streaming handler was cut off long before it sent everything.
        assert sent["streamed"] < 16 * LIMIT


@pytest.mark.parametrize("endpoint", ["/announced", "/streamed"])
async def test_an_answer_over_the_limit_is_refused_unread(model_server: str, endpoint: str) -> None:
    client = HttpModelClient(model_server, endpoint, "/health")
    try:
        with pytest.raises(AnswerTooLarge, match=f"more than {LIMIT} bytes"):
            await client.score("r1", b"[]", timeout=10, wait=True)
    finally:
        await client.close()


async def test_an_answer_within_the_limit_is_read_and_a_huge_health_answer_is_unhealthy(
    model_server: str,
) -> None:
    client = HttpModelClient(model_server, "/fine", "/health")
    try:
        answer: Any = await client.score("r1", b"[]", timeout=10, wait=True)
        assert len(answer) == 1000
        healthy, why = await client.health(timeout=10)
        assert not healthy and f"more than {LIMIT} bytes" in why
    finally:
        await client.close()
