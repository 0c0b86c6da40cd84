"""How a data companion talks to a model server: HTTP or AMQP (RabbitMQ), behind one small
interface. The wire format is the SDK's contract (`fogline.sdk.contract`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import aio_pika
import aiohttp
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from fogline.domain.errors import Unavailable
from fogline.models.outputs import load_answer

log = logging.getLogger(__name__)

AnswerHandler = Callable[[str, dict[str, Any]], Awaitable[None]]
# The most a model may answer to one call. The answer is read in chunks and refused as soon
# as it passes this: a model's answer can never take the platform's memory (a 150 MB answer
# once took it from 134 to 568 MB).
MAX_ANSWER_BYTES = 32 * 1024**2
READ_CHUNK_BYTES = 64 * 1024


class ModelCallFailed(Unavailable):
    """The model did not answer a call as the contract says."""


class ModelUnreachable(ModelCallFailed):
    """The call never reached a working model (refused, reset, no queue): it may be down."""


class CallTimedOut(ModelCallFailed):
    """No answer within the call's timeout: the model may still be working on it."""


class ModelBusy(ModelCallFailed):
    """The model refused the call because all its workers are busy (HTTP 429): it never
    started on it, so sending it again later is safe."""


class ModelAnswered(ModelCallFailed):
    """The model answered the call with an error: it has seen these readings."""


class MalformedAnswer(ModelCallFailed):
    """The model answered something that is not what the contract says."""


class AnswerTooLarge(MalformedAnswer):
    """The model's answer was over MAX_ANSWER_BYTES: refused unread."""


class ModelClient(Protocol):
    async def health(self, timeout: float) -> tuple[bool, str]: ...
    async def score(self, request_id: str, body: bytes, timeout: float, wait: bool) -> Any: ...
    async def close(self) -> None: ...


class HttpModelClient:
    """POST score, GET health. `wait=False` is an asynchronous model: it answers 202 and
    sends the outputs to the callback URL in the request.

    aiohttp rather than httpx here: a companion may make thousands of small calls a second,
    and aiohttp's client costs several times less CPU per call."""

    def __init__(self, base_url: str, score_endpoint: str, health_endpoint: str) -> None:
        # `unix:PATH` is a sandboxed model's socket (it has no network of its own).
        self.socket_path = base_url[len("unix:") :] if base_url.startswith("unix:") else None
        self.base_url = "http://model" if self.socket_path else base_url.rstrip("/")
        self.score_url = self.base_url + score_endpoint
        self.health_url = self.base_url + health_endpoint
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        # Made on first use: a session belongs to the event loop that runs it.
        if self._session is None:
            connector: aiohttp.BaseConnector
            if self.socket_path:
                connector = aiohttp.UnixConnector(path=self.socket_path, limit=16)
            else:
                connector = aiohttp.TCPConnector(limit=16)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    async def _call(
        self, method: str, url: str, timeout: float, body: bytes | None = None
    ) -> tuple[int, bytes]:
        headers = {"content-type": "application/json"} if body is not None else None
        async with self.session.request(
            method, url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)
        ) as answer:
            return answer.status, await _read_bounded(answer, MAX_ANSWER_BYTES)

    async def health(self, timeout: float) -> tuple[bool, str]:
        try:
            status, content = await self._call("GET", self.health_url, timeout)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return False, f"health check failed: {_describe(exc)}"
        except AnswerTooLarge as exc:
            return False, f"health check failed: {exc.message}"
        if status == 200:
            return True, "ok"
        return False, f"health check answered {status}: {_text(content)}"

    async def score(self, request_id: str, body: bytes, timeout: float, wait: bool) -> Any:
        try:
            status, content = await self._call("POST", self.score_url, timeout, body)
        except TimeoutError:
            raise CallTimedOut(f"no answer within {timeout:g} s") from None
        except aiohttp.ClientError as exc:
            raise ModelUnreachable(f"score call failed: {_describe(exc)}") from None
        if status == 429:
            raise ModelBusy(f"the model is busy: {_text(content)}")
        if status not in ((200,) if wait else (200, 202)):
            raise ModelAnswered(f"score answered {status}: {_text(content)}")
        if not wait:
            return None
        try:
            return load_answer(content)
        except ValueError:
            raise MalformedAnswer("score answered with something that is not JSON") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


async def _read_bounded(answer: aiohttp.ClientResponse, limit: int) -> bytes:
    """The answer's body, or AnswerTooLarge as soon as it is known to pass `limit` (from its
    Content-Length, or while it is read); the connection is then dropped, not drained."""
    too_large = f"the model answered more than {limit} bytes; the most one answer may be"
    if answer.content_length is not None and answer.content_length > limit:
        raise AnswerTooLarge(f"{too_large} ({answer.content_length} announced)")
    chunks: list[bytes] = []
    size = 0
    async for chunk in answer.content.iter_chunked(READ_CHUNK_BYTES):
        size += len(chunk)
        if size > limit:
            raise AnswerTooLarge(too_large)
        chunks.append(chunk)
    return b"".join(chunks)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "TimeoutError: no answer in time"
    return f"{type(exc).__name__} {exc}".strip()


def _text(content: bytes) -> str:
    return content[:200].decode(errors="replace")


class AmqpModelClient:
    """Requests on the model's score queue, answers on an exclusive reply queue matched by
    correlation id. Answers nobody waits for (an asynchronous model's) go to `on_answer`."""

    def __init__(
        self,
        connection: AbstractRobustConnection,
        score_queue: str,
        health_queue: str,
        on_answer: AnswerHandler | None = None,
    ) -> None:
        self.connection = connection
        self.score_queue = score_queue
        self.health_queue = health_queue
        self.on_answer = on_answer
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._channel: Any = None
        self._reply_queue: Any = None

    async def _ready(self) -> None:
        if self._channel is not None:
            return
        self._channel = await self.connection.channel()
        self._reply_queue = await self._channel.declare_queue(exclusive=True, auto_delete=True)
        await self._reply_queue.consume(self._on_reply, no_ack=True)

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        key = message.correlation_id or ""
        if len(message.body) > MAX_ANSWER_BYTES:
            # The broker has it in memory already (RabbitMQ bounds a message at 128 MiB);
            # the platform does not go on to parse it.
            body = {"error": f"the model answered more than {MAX_ANSWER_BYTES} bytes"}
        else:
            try:
                body = load_answer(message.body)
            except ValueError:
                body = {"error": "the model answered with something that is not JSON"}
        future = self._waiting.pop(key, None)
        if future is not None and not future.done():
            future.set_result(body)
        elif self.on_answer is not None and isinstance(body, dict):
            await self.on_answer(key, body)

    async def _call(self, queue: str, key: str, body: bytes, timeout: float, wait: bool) -> Any:
        try:
            await self._ready()
            future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            if wait:
                self._waiting[key] = future
            await self._channel.default_exchange.publish(
                aio_pika.Message(
                    body,
                    correlation_id=key,
                    reply_to=self._reply_queue.name,
                    content_type="application/json",
                    expiration=max(timeout, 1.0),
                ),
                routing_key=queue,
                mandatory=True,  # no queue (model not running): an error, not silence
            )
        except (aio_pika.exceptions.AMQPError, ConnectionError, OSError) as exc:
            self._waiting.pop(key, None)
            raise ModelUnreachable(f"AMQP call to {queue} failed: {exc!r}") from None
        if not wait:
            return None
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise CallTimedOut(f"no answer on {queue} within {timeout:.1f}s") from None
        finally:
            self._waiting.pop(key, None)

    async def health(self, timeout: float) -> tuple[bool, str]:
        try:
            answer = await self._call(self.health_queue, uuid.uuid4().hex, b"{}", timeout, True)
        except ModelCallFailed as exc:
            return False, exc.message
        if isinstance(answer, dict) and answer.get("ok", answer.get("status") == "ok"):
            return True, "ok"
        return False, f"health answered {answer!r:.200}"

    async def score(self, request_id: str, body: bytes, timeout: float, wait: bool) -> Any:
        answer = await self._call(self.score_queue, request_id, body, timeout, wait)
        if isinstance(answer, dict) and "error" in answer:
            raise ModelAnswered(f"the model failed: {answer['error']}")
        return answer

    async def close(self) -> None:
        for future in self._waiting.values():
            future.cancel()
        if self._channel is not None:
            with contextlib.suppress(Exception):
                await self._channel.close()
            self._channel = None


class AmqpConnections:
    """One robust connection to the platform's RabbitMQ, opened on first use."""

    def __init__(self, url: str | None) -> None:
        self.url = url
        self._connection: AbstractRobustConnection | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> AbstractRobustConnection:
        if self.url is None:
            raise Unavailable(
                "this model speaks AMQP but the platform has no broker: set FOGLINE_AMQP_URL "
                "(e.g. amqp://guest:guest@127.0.0.1:5672/)"
            )
        async with self._lock:
            if self._connection is None or self._connection.is_closed:
                try:
                    self._connection = await aio_pika.connect_robust(self.url, timeout=5)
                except (aio_pika.exceptions.AMQPError, OSError) as exc:
                    raise Unavailable(f"cannot reach the AMQP broker: {exc!r}") from None
            return self._connection

    async def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
            self._connection = None
