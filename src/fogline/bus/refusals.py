"""Refusals the bus itself makes, carried to the historian as small marker messages.

Some telemetry is refused before it can reach the telemetry stream whole: a message bridged from
an external broker that is over the size limit, or an MQTT message so large that nats-server
closes the connection that sent it. Such a refusal is published on the device's own telemetry
subject as a marker (these headers, and at most the head of the payload), so it joins the same
stream, is committed by the same historian exactly once as a `too-large` dead letter, and counts
in the device's counters like any other refusal. A device that forged the headers would only
refuse its own message.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import nats
import orjson
from nats.aio.client import Client
from nats.errors import Error as NatsError

from fogline.bus.connection import Bus
from fogline.bus.errors import BrokerUnavailable
from fogline.bus.server import tenant_account

log = logging.getLogger(__name__)

REFUSED_HEADER = "Fogline-Refused"
DETAIL_HEADER = "Fogline-Refused-Detail"
TOO_LARGE = "too-large"
HEAD_BYTES = 2048  # what a dead letter keeps of a payload


async def publish_refusal(bus: Bus, subject: str, detail: str, payload: bytes = b"") -> None:
    """Store a `too-large` refusal on `subject` in the telemetry stream (JetStream's ack means
    it is kept)."""
    headers = {REFUSED_HEADER: TOO_LARGE, DETAIL_HEADER: " ".join(detail.split())}
    await bus.js.publish(subject, payload[:HEAD_BYTES], headers=headers, timeout=10)


def refusal_of(headers: dict[str, str] | None) -> str | None:
    """The refusal a marker message carries, or None for telemetry."""
    if not headers or headers.get(REFUSED_HEADER) != TOO_LARGE:
        return None
    return headers.get(DETAIL_HEADER) or "message over the size limit"


@dataclass(frozen=True)
class ClosedConnection:
    """nats-server's account of a client connection it closed."""

    account: str
    user: str
    client_id: str | None  # the MQTT client id, for MQTT clients
    reason: str

    @property
    def over_max_payload(self) -> bool:
        return "payload" in self.reason.lower()

    @property
    def device(self) -> tuple[str, str] | None:
        """(tenant, device) when a device closed, as its user name and account both say."""
        tenant, dot, device = self.user.partition(".")
        if not dot or self.account != tenant_account(tenant):
            return None
        return tenant, device


class ConnectionEvents:
    """nats-server's disconnect events ($SYS.ACCOUNT.*.DISCONNECT), read with the system
    account's user: the one place that tells why a device's connection was closed. Its
    connect events ($SYS.ACCOUNT.*.CONNECT) say whose each connection is: the log's reports
    of permission violations name only the connection's number."""

    def __init__(
        self,
        url: str,
        user: str,
        password: str,
        on_closed: Callable[[ClosedConnection], None],
        on_connected: Callable[[int, str], None] | None = None,
    ) -> None:
        self.url = url
        self.user = user
        self.password = password
        self.on_closed = on_closed
        self.on_connected = on_connected
        self._nc: Client | None = None

    async def start(self) -> None:
        async def quiet(_exc: Exception) -> None:
            return None

        try:
            self._nc = await nats.connect(
                self.url,
                user=self.user,
                password=self.password,
                name="fogline-events",
                connect_timeout=5,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                error_cb=quiet,
            )
        except (TimeoutError, NatsError, OSError) as exc:
            raise BrokerUnavailable(f"cannot read nats-server's events: {exc}") from None
        await self._nc.subscribe("$SYS.ACCOUNT.*.DISCONNECT", cb=self._on_event)
        if self.on_connected is not None:
            await self._nc.subscribe("$SYS.ACCOUNT.*.CONNECT", cb=self._on_connect)

    async def _on_connect(self, msg: Any) -> None:
        try:
            client = orjson.loads(msg.data).get("client") or {}
            connection, user = int(client["id"]), str(client.get("user", ""))
        except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError):
            return
        if user and self.on_connected is not None:
            self.on_connected(connection, user)

    async def user_of(self, connection: int) -> str | None:
        """Who connection `connection` is (open or recently closed), asked of nats-server
        (CONNZ): for connections made before the connect events were followed."""
        nc = self._nc
        if nc is None or nc.is_closed:
            return None
        query = {"cid": connection, "auth": True, "state": 2}  # 2: open and closed
        try:
            reply = await nc.request("$SYS.REQ.SERVER.PING.CONNZ", orjson.dumps(query), timeout=2)
            found = (orjson.loads(reply.data).get("data") or {}).get("connections") or []
        except (TimeoutError, NatsError, orjson.JSONDecodeError, AttributeError):
            return None
        for conn in found:
            if conn.get("cid") == connection and conn.get("authorized_user"):
                return str(conn["authorized_user"])
        return None

    async def _on_event(self, msg: Any) -> None:
        try:
            event = orjson.loads(msg.data)
            client = event.get("client") or {}
            closed = ClosedConnection(
                account=str(client.get("acc", "")),
                user=str(client.get("user", "")),
                client_id=client.get("client_id"),
                reason=str(event.get("reason", "")),
            )
        except (orjson.JSONDecodeError, AttributeError):
            return
        self.on_closed(closed)

    async def stop(self) -> None:
        nc, self._nc = self._nc, None
        if nc is not None and not nc.is_closed:
            await nc.close()


class OversizeReporter:
    """Turns nats-server closing a device's connection for an over-size MQTT message into a
    `too-large` dead letter of that device. MQTT 3.1.1 cannot refuse one message, so the device
    will usually send it again on reconnect: at most one dead letter per device and `interval_s`,
    counting the repeats in between."""

    def __init__(self, bus: Bus, max_payload: int, interval_s: float = 60.0) -> None:
        self.bus = bus
        self.max_payload = max_payload
        self.interval_s = interval_s
        self.reported = 0
        self._last: dict[tuple[str, str], float] = {}
        self._repeats: dict[tuple[str, str], int] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def repeats_pending(self) -> int:
        """Closed connections counted since the last dead letter of each device."""
        return sum(self._repeats.values())

    def on_closed(self, closed: ClosedConnection) -> None:
        if not closed.over_max_payload:
            return
        device = closed.device
        if device is None:
            return
        now = time.monotonic()
        last = self._last.get(device)
        if last is not None and now - last < self.interval_s:
            self._repeats[device] = self._repeats.get(device, 0) + 1
            return
        self._last[device] = now
        repeats = self._repeats.pop(device, 0)
        task = asyncio.create_task(self._report(device, closed, repeats))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _report(
        self, device: tuple[str, str], closed: ClosedConnection, repeats: int
    ) -> None:
        tenant, device_id = device
        detail = (
            f"an MQTT message over the broker's limit of {self.max_payload} bytes: nats-server "
            f"closed the connection (client id {closed.client_id or '?'}); MQTT 3.1.1 cannot "
            "refuse one message, so a client that sends it again is closed again"
        )
        if repeats:
            detail += f"; closed {repeats} more times since the last such dead letter"
        log.warning(
            "mqtt.message_over_limit",
            extra={"fields": {"tenant": tenant, "device": device_id, "repeats": repeats}},
        )
        try:
            await publish_refusal(self.bus, self.bus.subjects.telemetry(tenant, device_id), detail)
            self.reported += 1
        except NatsError as exc:
            log.error("mqtt.refusal_not_stored", extra={"fields": {"error": str(exc)}})
