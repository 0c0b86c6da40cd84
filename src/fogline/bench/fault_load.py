"""QoS 1 MQTT devices that keep every message's fate: the load of `fogline bench faults`.

Each device is a paho client (its own network thread) that reconnects by itself with backoff
when the broker refuses or drops it, also on the first connection. Messages published while
it is away stay in paho's queue, and those sent but not acknowledged are sent again (DUP) after
the reconnect: paho does this for QoS 1 (`_messages_reconnect_reset_out`), which is what a
device that must not lose readings does. Every publish is kept, marked acknowledged when its
PUBACK arrives (paho's `on_publish`), so acknowledged readings can be compared with the stored
ones afterwards. (`MQTTMessageInfo.is_published()` cannot tell: a message first queued while
disconnected keeps rc NO_CONN and raises there even once acknowledged.)

One pacing thread publishes for all devices: at the fault bench's rates (hundreds to a few
thousand readings/s, batched per message) that is far from its limit.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from fogline.bench.fault_ledger import SentMessage
from fogline.bench.publishers import BenchDevice

RECONNECT_MIN_S = 1  # paho takes whole seconds
RECONNECT_MAX_S = 4  # short: recovery figures should measure the platform, not the devices
QUEUED_ERRORS = (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN)  # NO_CONN: kept, sent later


@dataclass
class _Published:
    device: str
    ts: int
    acknowledged: bool = False


class AckedLoad:
    def __init__(
        self,
        host: str,
        port: int,
        topic_root: str,
        tenant: str,
        devices: Sequence[BenchDevice],
        readings_per_s: float,
    ) -> None:
        self.host, self.port = host, port
        self.devices = list(devices)
        batch = len(self.devices[0].assets)
        self.interval_s = batch * len(self.devices) / readings_per_s  # between ticks
        self.topics = [f"{topic_root}/{tenant}/devices/{d.device_id}/telemetry" for d in devices]
        self.clients: list[mqtt.Client] = []
        self.published: list[_Published] = []
        self.not_queued = 0  # publishes paho refused outright (never expected)
        self.connects = 0
        self.disconnects = 0
        self._acks = 0
        self._lock = threading.Lock()
        # (device index, mid) of messages awaiting their PUBACK, and PUBACKs that came back
        # before `publish()` returned the mid (paho's network thread can be that quick).
        self._pending: dict[tuple[int, int], _Published] = {}
        self._early: set[tuple[int, int]] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._pace, name="fault-load", daemon=True)

    # -- life -------------------------------------------------------------------------------

    def start(self) -> None:
        for i, d in enumerate(self.devices):
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=d.device_id, userdata=i)
            client.username_pw_set(d.username, d.password)
            client.max_inflight_messages_set(100)
            client.max_queued_messages_set(0)  # unbounded: a device keeps what it could not send
            client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
            client.on_connect = self._on_connect
            client.on_disconnect = self._on_disconnect
            client.on_publish = self._on_publish
            client.connect_async(self.host, self.port, keepalive=10)
            client.loop_start()  # retries the first connection too
            self.clients.append(client)
        self._thread.start()

    def stop_publishing(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def close(self) -> None:
        self.stop_publishing()
        for client in self.clients:
            with contextlib.suppress(Exception):  # a client already gone has nothing to close
                client.disconnect()
            client.loop_stop()

    # -- facts ------------------------------------------------------------------------------

    @property
    def acks(self) -> int:
        """PUBACKs received so far: a live progress counter."""
        return self._acks

    def unacknowledged(self) -> int:
        with self._lock:
            return len(self._pending)

    def messages(self) -> list[SentMessage]:
        with self._lock:
            return [SentMessage(p.device, p.ts, p.acknowledged) for p in self.published]

    def assets_of(self) -> dict[str, tuple[str, ...]]:
        return {d.device_id: d.assets for d in self.devices}

    # -- paho callbacks (its network threads) -----------------------------------------------

    def _on_connect(self, *_args: object) -> None:
        self.connects += 1

    def _on_disconnect(self, *_args: object) -> None:
        self.disconnects += 1

    def _on_publish(self, _client: object, device: int, mid: int, *_args: object) -> None:
        with self._lock:
            self._acks += 1
            message = self._pending.pop((device, mid), None)
            if message is None:
                self._early.add((device, mid))
            else:
                message.acknowledged = True

    # -- pacing -----------------------------------------------------------------------------

    def _pace(self) -> None:
        last_ts = [0] * len(self.devices)
        begin = time.monotonic()
        tick = 0
        while not self._stop.is_set():
            due = begin + tick * self.interval_s
            if self._stop.wait(max(0.0, due - time.monotonic())):
                return
            tick += 1
            for i, device in enumerate(self.devices):
                # Strictly increasing per device: (asset, ts) names one reading.
                ts = max(int(time.time() * 1000), last_ts[i] + 1)
                last_ts[i] = ts
                self._publish(i, device, ts)

    def _publish(self, i: int, device: BenchDevice, ts: int) -> None:
        payload = json.dumps(
            [
                {
                    "asset": a,
                    "ts": ts,
                    "values": {"v1": 1.5, "v2": 20.25, "v3": 0.5, "v4": float(k)},
                }
                for k, a in enumerate(device.assets)
            ]
        )
        info = self.clients[i].publish(self.topics[i], payload, qos=1)
        if info.rc not in QUEUED_ERRORS:
            self.not_queued += 1
            return
        message = _Published(device.device_id, ts)
        key = (i, info.mid)
        with self._lock:
            self.published.append(message)
            if key in self._early:
                self._early.discard(key)
                message.acknowledged = True
            else:
                self._pending[key] = message
