"""Fetching from a JetStream pull consumer with a bound on bytes as well as messages.

nats-py's `fetch` asks for a number of messages only. A batch of 2,000 messages of up to
`max_payload` each could be gigabytes, and its client drops what overflows a subscription's
pending limit (a "slow consumer"), which an ack-all consumer would then acknowledge with the
next ack: lost. Here each pull request carries `max_bytes`, the subscription never drops, and
the two-step pattern of nats-py's fetch is kept (an immediate request for what is there, then
one that waits), so latency is what it was.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from fogline.bus.errors import BrokerUnavailable

_STATUS = "Status"
_HEARTBEAT = "100"
# Statuses that end a pull request: no messages (404), expired (408), and 409 (max bytes
# reached, too many waiting requests, consumer deleted or leader changed).
_ENDS_REQUEST = ("404", "408", "409")
# No responders: JetStream's API is away for a moment (nats-server re-enables it in each
# account when a config reload changes accounts, as a new device does) or for good.
_NO_RESPONDERS = "503"
UNAVAILABLE_FOR_S = 5.0


class BoundedPull:
    def __init__(self, nc: Client, stream: str, consumer: str, sub: Subscription) -> None:
        self.nc = nc
        self._next = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._sub = sub
        self._inbox = sub.subject
        self._unavailable_since: float | None = None

    @classmethod
    async def create(cls, nc: Client, stream: str, consumer: str) -> BoundedPull:
        # No pending limits: what arrives is bounded by the requests' max_bytes, and a dropped
        # message must never be possible.
        sub = await nc.subscribe(nc.new_inbox(), pending_msgs_limit=0, pending_bytes_limit=0)
        return cls(nc, stream, consumer, sub)

    async def close(self) -> None:
        await self._sub.unsubscribe()

    def _drain(self, into: list[Msg]) -> None:
        """Messages an earlier request delivered after it returned come first; their statuses
        belong to those requests."""
        queue = self._sub._pending_queue
        while not queue.empty():
            msg = queue.get_nowait()
            self._sub._pending_size -= len(msg.data)
            if _status(msg) is None:
                into.append(msg)

    async def _request(
        self, batch: int, max_bytes: int, no_wait: bool, expires_s: float | None
    ) -> None:
        request: dict[str, Any] = {"batch": batch, "max_bytes": max_bytes}
        if no_wait:
            request["no_wait"] = True
        if expires_s is not None:
            request["expires"] = max(int(expires_s * 1e9) - 100_000, 1_000_000)
        await self.nc.publish(self._next, orjson.dumps(request), reply=self._inbox)

    async def _collect(self, msgs: list[Msg], batch: int, deadline: float, wait: bool) -> bool:
        """Read one request's deliveries into `msgs` until it ends (a status, a full batch) or
        the deadline. With `wait`, block for the first message too. False if the request ended
        with no messages."""
        got = False
        while len(msgs) < batch:
            remaining = deadline - time.monotonic()
            if remaining <= 0 and (got or not wait):
                break
            try:
                msg = await self._sub.next_msg(timeout=max(remaining, 0.001))
            except TimeoutError:
                break
            status = _status(msg)
            if status == _NO_RESPONDERS:
                await self._unavailable()
                break
            self._unavailable_since = None
            if status is None:
                msgs.append(msg)
                got = True
            elif status in _ENDS_REQUEST:
                break
            elif status != _HEARTBEAT:
                raise BrokerUnavailable(f"pull request failed: status {status}")
        return got

    async def _unavailable(self) -> None:
        """A moment without JetStream is waited out quietly; a longer absence is an error."""
        now = time.monotonic()
        if self._unavailable_since is None:
            self._unavailable_since = now
        elif now - self._unavailable_since > UNAVAILABLE_FOR_S:
            raise BrokerUnavailable(f"JetStream has not answered for {UNAVAILABLE_FOR_S:.0f}s")
        await asyncio.sleep(0.05)

    async def fetch(self, batch: int, max_bytes: int, timeout: float) -> list[Msg]:
        """Up to `batch` messages and about `max_bytes` (a single message larger than that is
        never delivered: keep max_bytes above the server's max_payload). Empty after
        `timeout` when there is nothing. The same requests as nats-py's fetch: what is there
        now, or (when nothing is) the first messages to come within the timeout."""
        deadline = time.monotonic() + timeout
        msgs: list[Msg] = []
        self._drain(msgs)
        if len(msgs) >= batch:
            return msgs
        # no_wait: the server answers at the end of what it has (404) instead of filling the
        # batch; with expires (when nothing is in hand), it first waits for something to come.
        expires = None if msgs else timeout
        await self._request(batch - len(msgs), max_bytes, True, expires)
        await self._collect(msgs, batch, deadline, wait=True)
        if msgs:
            return msgs
        remaining = deadline - time.monotonic()
        if remaining <= 0.01:
            return msgs
        # The first request ended without messages: one that waits for the rest of the time.
        await self._request(batch, max_bytes, False, remaining)
        await self._collect(msgs, batch, deadline, wait=True)
        return msgs

    async def fetch_available(self, batch: int, max_bytes: int, timeout: float = 5.0) -> list[Msg]:
        """What the stream has for this consumer now, up to `batch`: never waits for messages
        to come (the timeout only bounds a server that does not answer)."""
        deadline = time.monotonic() + timeout
        msgs: list[Msg] = []
        self._drain(msgs)
        if len(msgs) < batch:
            await self._request(batch - len(msgs), max_bytes, True, None)
            await self._collect(msgs, batch, deadline, wait=True)
        return msgs


def _status(msg: Msg) -> str | None:
    if msg.headers is None or msg.data:
        return None
    status: str | None = msg.headers.get(_STATUS)
    return status
