"""Bridging an external MQTT broker (Mosquitto, a site's existing broker) into the bus.

Fogline subscribes to every device's telemetry topic on that broker with QoS 1 and a persistent
session, publishes each message into the telemetry stream, and acknowledges it to the broker
only once JetStream has stored it: a crash in between makes the broker redeliver, nothing is
lost. Who may publish there is that broker's business; Fogline still refuses telemetry from
devices it does not know.

A message over `max_message_bytes` is not copied into the hot store: a small marker takes its
place (see `refusals.py`), becomes a `too-large` dead letter, and the message is acknowledged,
so the broker does not redeliver it forever. The bridge's client id ends in a random part kept
in the data dir: on a broker where any client may take any client id over, a guessable id
would let a device displace the bridge and inherit its persistent session (every tenant's
telemetry).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import paho.mqtt.client as mqtt
from nats.errors import Error as NatsError
from paho.mqtt.enums import CallbackAPIVersion

from fogline.bus.connection import Bus, redact_url
from fogline.bus.errors import BrokerConfigInvalid, BrokerUnavailable
from fogline.bus.refusals import publish_refusal

log = logging.getLogger(__name__)


def bridge_client_id(root: str, data_dir: Path) -> str:
    """The bridge's MQTT client id: stable across restarts (its session is persistent), and
    not guessable (the random part lives in the data dir, readable by the platform only)."""
    path = data_dir / "bridge-client-id"
    try:
        suffix = path.read_text().strip()
    except FileNotFoundError:
        suffix = ""
    if not suffix:
        suffix = secrets.token_hex(12)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(suffix)
    return f"fogline-bridge-{root}-{suffix}"


@dataclass(frozen=True)
class MqttEndpoint:
    host: str
    port: int
    username: str | None
    password: str | None
    tls: bool

    @classmethod
    def parse(cls, url: str) -> MqttEndpoint:
        parsed = urlparse(url)
        if parsed.scheme not in ("mqtt", "mqtts", "tcp", "ssl") or not parsed.hostname:
            raise BrokerConfigInvalid(
                f"MQTT URL {redact_url(url)!r} must look like mqtt://[user:password@]host[:port]"
            )
        tls = parsed.scheme in ("mqtts", "ssl")
        return cls(
            host=parsed.hostname,
            port=parsed.port or (8883 if tls else 1883),
            username=unquote(parsed.username) if parsed.username else None,
            password=unquote(parsed.password) if parsed.password else None,
            tls=tls,
        )


class MqttBridge:
    def __init__(
        self, endpoint: MqttEndpoint, bus: Bus, client_id: str, max_message_bytes: int
    ) -> None:
        self.endpoint = endpoint
        self.bus = bus
        self.client_id = client_id
        self.max_message_bytes = max_message_bytes
        self.forwarded = 0
        self.refused = 0
        self.too_large = 0
        self.paused = False  # while the platform refuses data: nothing acknowledged
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connected = threading.Event()
        self._connect_error: str | None = None
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=False,
            manual_ack=True,
        )
        if endpoint.username:
            self._client.username_pw_set(endpoint.username, endpoint.password)
        if endpoint.tls:
            self._client.tls_set()
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message

    async def start(self, timeout: float = 10.0) -> None:
        self._loop = asyncio.get_running_loop()
        self._connected.clear()
        e = self.endpoint
        try:
            await asyncio.to_thread(self._client.connect, e.host, e.port, 30)
        except OSError as exc:
            raise BrokerUnavailable(
                f"cannot reach the MQTT broker {e.host}:{e.port}: {exc}"
            ) from None
        self._client.loop_start()
        if not await asyncio.to_thread(self._connected.wait, timeout):
            self._client.loop_stop()
            raise BrokerUnavailable(
                f"the MQTT broker {e.host}:{e.port} refused the bridge: "
                f"{self._connect_error or 'no answer'}"
            )

    def _on_connect(self, client: Any, _userdata: Any, _flags: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            self._connect_error = str(reason)
            return
        client.subscribe(self.bus.subjects.mqtt_telemetry_filter, qos=1)
        self._connected.set()
        log.info("bridge.connected", extra={"fields": {"broker": self.endpoint.host}})

    def _on_message(self, client: Any, _userdata: Any, message: Any) -> None:
        assert self._loop is not None
        if self.paused:
            return  # not acked: the broker keeps it for when the bridge takes data again
        subject = self.bus.subjects.subject_from_topic(message.topic)
        if subject is None or self.bus.subjects.parse_telemetry(subject) is None:
            self.refused += 1
            client.ack(message.mid, message.qos)
            return
        payload: bytes = message.payload
        too_large = len(payload) > self.max_message_bytes
        stored: Coroutine[Any, Any, Any]
        if too_large:
            detail = (
                f"message is {len(payload)} bytes; the limit is {self.max_message_bytes} "
                f"(bridged from {self.endpoint.host}:{self.endpoint.port})"
            )
            stored = publish_refusal(self.bus, subject, detail, payload)
        else:
            stored = self.bus.js.publish(subject, payload, timeout=10)
        future: Future[Any] = asyncio.run_coroutine_threadsafe(stored, self._loop)
        try:
            future.result(timeout=15)
        except (NatsError, TimeoutError) as exc:
            # Not acked: the broker keeps the message and redelivers it on reconnect.
            log.warning("bridge.publish_failed", extra={"fields": {"error": str(exc)}})
            client.disconnect()
            return
        client.ack(message.mid, message.qos)
        if too_large:
            self.too_large += 1
        else:
            self.forwarded += 1

    async def pause(self, reason: str) -> None:
        """Take no data for now: leave the broker, which keeps the bridge's QoS 1 messages in
        its persistent session until `resume`."""
        self.paused = True
        log.warning("bridge.paused", extra={"fields": {"why": reason}})
        await self.stop()

    async def resume(self) -> None:
        self.paused = False
        await self.start()
        log.warning("bridge.resumed")

    async def stop(self) -> None:
        self._client.disconnect()
        await asyncio.to_thread(self._client.loop_stop)
