"""A real MQTT device for tests: paho, connected with a device's credentials."""

from __future__ import annotations

import json
import threading
from typing import Any

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
