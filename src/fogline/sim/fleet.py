"""A fleet of virtual motors, each a device that publishes over real MQTT with its own
credentials, exactly as firmware would."""

from __future__ import annotations

import json
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from fogline.client.http import ApiError, FoglineClient
from fogline.sim.motors import MOTOR_ATTRIBUTES, MOTOR_TELEMETRY, Fault, FaultEpisode, Motor

MOTOR_TYPE = "induction-motor"


@dataclass
class VirtualDevice:
    device_id: str
    motor: Motor
    username: str
    password: str
    client: Any = None
    connected: threading.Event = field(default_factory=threading.Event)
    refused: str | None = None


@dataclass
class FleetStats:
    messages: int = 0
    values: int = 0
    glitches: int = 0
    publish_failures: int = 0


class VirtualFleet:
    def __init__(
        self,
        api: FoglineClient,
        tenant: str,
        mqtt_host: str,
        mqtt_port: int,
        motors: int = 20,
        seed: int = 7,
        interval_s: float = 1.0,
        glitch_rate: float = 0.002,
        topic_root: str = "fogline",
    ) -> None:
        self.api = api
        self.tenant = tenant
        self.mqtt_host = mqtt_host
        self.mqtt_port = mqtt_port
        self.count = motors
        self.rng = random.Random(seed)
        self.interval_s = interval_s
        self.glitch_rate = glitch_rate
        self.topic_root = topic_root
        self.devices: list[VirtualDevice] = []
        self.stats = FleetStats()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- provisioning through the API, as an operator would -------------------------------

    def provision(self) -> None:
        t = self.tenant
        self.api.put(
            f"/tenants/{t}/asset-types/{MOTOR_TYPE}",
            {
                "name": "Induction motor",
                "description": "Three-phase induction motor with vibration, thermal, "
                "current and acoustic sensing",
                "telemetry": MOTOR_TELEMETRY,
                "attributes": MOTOR_ATTRIBUTES,
            },
        )
        sites = ["plant-north", "plant-south"]
        for i in range(1, self.count + 1):
            asset_id, device_id = f"motor-{i:02d}", f"motor-{i:02d}-gw"
            site = sites[i % len(sites)]
            try:
                self.api.post(
                    f"/tenants/{t}/assets",
                    {
                        "id": asset_id,
                        "asset_type": MOTOR_TYPE,
                        "name": f"Motor {i:02d}",
                        "attributes": {"rated_power_kw": self.rng.choice([5.5, 7.5, 11.0])},
                        "labels": {"line": f"line-{1 + i % 4}"},
                        "site": site,
                    },
                )
            except ApiError as exc:
                if exc.status != 409:
                    raise
            creds = self._device_credentials(device_id, site)
            motor = Motor(asset_id, random.Random(self.rng.random()))
            motor.phase_left_s = self.rng.uniform(5, 120)
            self.devices.append(
                VirtualDevice(device_id, motor, creds["username"], creds["password"])
            )

    def _device_credentials(self, device_id: str, site: str) -> dict[str, str]:
        t = self.tenant
        try:
            created = self.api.post(
                f"/tenants/{t}/devices",
                {
                    "id": device_id,
                    "hardware": {
                        "cpu": "arm-cortex-a53",
                        "cpu_cores": 4,
                        "memory_mb": 1024,
                        "connectivity": self.rng.choice(["ethernet", "wifi", "lte"]),
                        "power_source": "mains",
                    },
                    "firmware": "2.4.1",
                    "labels": {"site": site},
                },
            )
            creds: dict[str, str] = created["credentials"]
            return creds
        except ApiError as exc:
            if exc.status != 409:
                raise
        # A device from an earlier run: it gets new credentials, as after a re-flash.
        rotated: dict[str, str] = self.api.post(f"/tenants/{t}/devices/{device_id}/credentials")
        return rotated

    # -- running --------------------------------------------------------------------------

    def connect(self, timeout: float = 15.0) -> None:
        for d in self.devices:
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=d.device_id)
            client.username_pw_set(d.username, d.password)
            client.on_connect = _on_connect(d)
            client.connect_async(self.mqtt_host, self.mqtt_port, keepalive=30)
            client.loop_start()
            d.client = client
        deadline = time.monotonic() + timeout
        for d in self.devices:
            if not d.connected.wait(max(0.0, deadline - time.monotonic())):
                raise RuntimeError(
                    f"device {d.device_id} could not connect over MQTT: {d.refused or 'timeout'}"
                )

    def inject_fault(self, asset: str, fault: Fault, duration_s: float) -> None:
        for d in self.devices:
            if d.motor.asset == asset:
                d.motor.start_fault(fault, int(time.time() * 1000), duration_s)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="virtual-fleet", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        next_tick = time.monotonic()
        while not self._stop.is_set():
            now_ms = int(time.time() * 1000)
            for d in self.devices:
                self._publish(d, now_ms)
            next_tick += self.interval_s
            self._stop.wait(max(0.0, next_tick - time.monotonic()))

    def _publish(self, d: VirtualDevice, now_ms: int) -> None:
        values: dict[str, Any] = d.motor.step(self.interval_s, now_ms)
        if self.rng.random() < self.glitch_rate:
            # A flaky sensor: firmware sends a string where a number belongs.
            values["temperature"] = "ERR"
            self.stats.glitches += 1
        payload = json.dumps({"asset": d.motor.asset, "ts": now_ms, "values": values})
        topic = f"{self.topic_root}/{self.tenant}/devices/{d.device_id}/telemetry"
        info = d.client.publish(topic, payload, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            self.stats.publish_failures += 1
            return
        self.stats.messages += 1
        self.stats.values += len(values)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for d in self.devices:
            if d.client is not None:
                d.client.disconnect()
                d.client.loop_stop()

    def active_faults(self) -> list[tuple[str, Fault]]:
        return [(d.motor.asset, d.motor.fault) for d in self.devices if d.motor.fault]

    def episodes(self) -> list[FaultEpisode]:
        """Every fault so far, the ones still going ending now: the fleet's ground truth."""
        now = int(time.time() * 1000)
        done = [e for d in self.devices for e in d.motor.episodes]
        ongoing = [
            FaultEpisode(d.motor.asset, d.motor.fault, d.motor.fault_started_ms, now)
            for d in self.devices
            if d.motor.fault is not None
        ]
        return done + ongoing


def _on_connect(d: VirtualDevice) -> Any:
    def callback(_client: Any, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:
            d.refused = str(reason)
        else:
            d.connected.set()

    return callback
