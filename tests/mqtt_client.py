"""A real MQTT device for tests: paho, connected with a device's credentials."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


class Device:
    def __init__(self, host: str, port: int, username: str, password: str, client_id: str) -> None:
        self.connected = threading.Event()
        self.reason: Any = None
        self.disconnects: list[Any] = []  # reason codes of connections lost (not our own close)
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.username_pw_set(username, password)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self._closing = False
        self.host, self.port = host, port

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self.reason = reason
        self.connected.set()

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if not self._closing:
            self.disconnects.append(reason)

    def connect(self, timeout: float = 10.0) -> Any:
        """Connect and return the CONNACK reason code."""
        self.client.connect(self.host, self.port, keepalive=30)
        self.client.loop_start()
        if not self.connected.wait(timeout):
            raise AssertionError("no CONNACK")
        return self.reason

    def publish(self, topic: str, payload: Any, qos: int = 1) -> None:
        data = payload if isinstance(payload, bytes | str) else json.dumps(payload)
        info = self.client.publish(topic, data, qos=qos)
        info.wait_for_publish(10)

    def close(self) -> None:
        self._closing = True
        self.client.disconnect()
        self.client.loop_stop()


class RecordingDevice:
    """A device publishing numbered QoS 1 readings, recording which were acknowledged. paho
    keeps what was not acknowledged and sends it again after each reconnect."""

    def __init__(
        self,
        host: str,
        port: int,
        creds: dict[str, Any],
        rate: float,
        client_id: str = "recording-d1",
        state_bytes: int = 4000,
    ) -> None:
        self.topic = creds["topic"]
        self.rate = rate
        self.state_bytes = state_bytes  # a large value per reading fills a disk quickly
        self.t0 = int(time.time() * 1000) - 3_600_000
        self.sent = 0
        self.acked: set[int] = set()
        self.refused_connects = 0
        self._mids: dict[int, int] = {}
        self._early: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False
        )
        self.client.username_pw_set(creds["username"], creds["password"])
        self.client.reconnect_delay_set(min_delay=1, max_delay=2)
        self.client.max_queued_messages_set(0)
        self.client.on_publish = self._on_publish
        self.client.on_connect = self._on_connect
        self.client.connect(host, port, keepalive=10)
        self.client.loop_start()
        self._thread = threading.Thread(target=self._publish_loop, daemon=True)

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            self.refused_connects += 1

    def _on_publish(self, _c: Any, _u: Any, mid: int, _rc: Any, _p: Any) -> None:
        with self._lock:
            number = self._mids.pop(mid, None)
            if number is None:
                self._early.add(mid)  # acknowledged before `publish` returned its mid
            else:
                self.acked.add(number)

    def start(self) -> None:
        self._thread.start()

    def _publish_loop(self) -> None:
        state = "x" * self.state_bytes
        while not self._stop.is_set():
            n = self.sent
            reading = {"asset": "m1", "ts": self.t0 + n, "values": {"rpm": n, "state": state}}
            # Not under our lock: paho calls on_publish holding its own, and its publish takes
            # that one too (the two orders would deadlock).
            info = self.client.publish(self.topic, orjson.dumps(reading), qos=1)
            with self._lock:
                if info.mid in self._early:
                    self._early.discard(info.mid)
                    self.acked.add(n)
                else:
                    self._mids[info.mid] = n
            self.sent += 1
            time.sleep(1 / self.rate)

    def stop_publishing(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def unacked(self) -> int:
        with self._lock:
            return len(self._mids)

    def close(self) -> None:
        self.stop_publishing()
        self.client.disconnect()
        self.client.loop_stop()
