"""MQTT publisher processes for benchmarks: real paho clients, one per device, paced or flat out.

Each process owns a share of the devices. A device is a gateway that reports for `batch` assets:
every message carries one reading per asset, stamped with the publish time in epoch ms (kept
strictly increasing per device so no two readings of one asset share a timestamp).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from dataclasses import dataclass
from multiprocessing.queues import Queue
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


@dataclass(frozen=True)
class BenchDevice:
    device_id: str
    username: str
    password: str
    assets: tuple[str, ...]


@dataclass(frozen=True)
class PublishJob:
    host: str
    port: int
    topic_root: str
    tenant: str
    suffix: str  # "telemetry" for the platform, "bench" for the raw baseline
    devices: tuple[BenchDevice, ...]
    msgs_per_s_per_device: float  # 0: as fast as possible
    duration_s: float
    start_at: float  # wall-clock time to begin, so every process starts together


def run_publisher(job: PublishJob, results: Queue[Any]) -> None:
    """Entry point of a publisher process; puts (published, failed, first_ts, last_ts)."""
    clients = []
    for d in job.devices:
        connected = threading.Event()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=d.device_id)
        client.username_pw_set(d.username, d.password)
        client.max_inflight_messages_set(200)
        client.max_queued_messages_set(2000)
        client.on_connect = lambda *_a, ev=connected: ev.set()
        client.connect(job.host, job.port, keepalive=60)
        client.loop_start()
        if not connected.wait(15):
            results.put(("error", f"{d.device_id} could not connect"))
            return
        clients.append(client)
    while time.time() < job.start_at:
        time.sleep(0.001)
    published = failed = 0
    last_info: list[Any] = [None] * len(job.devices)
    last_ts = [0] * len(job.devices)
    topics = [
        f"{job.topic_root}/{job.tenant}/devices/{d.device_id}/{job.suffix}" for d in job.devices
    ]
    interval = 1.0 / job.msgs_per_s_per_device if job.msgs_per_s_per_device else 0.0
    begin = time.monotonic()
    end = begin + job.duration_s
    tick = 0
    while True:
        now = time.monotonic()
        if now >= end:
            break
        if interval:
            due = begin + tick * interval
            if due > now:
                time.sleep(due - now)
            tick += 1
        for i, d in enumerate(job.devices):
            ts = max(int(time.time() * 1000), last_ts[i] + 1)
            last_ts[i] = ts
            payload = json.dumps(
                [
                    {
                        "asset": a,
                        "ts": ts,
                        "values": {"v1": 1.5, "v2": 20.25, "v3": 0.5, "v4": float(k)},
                    }
                    for k, a in enumerate(d.assets)
                ]
            )
            info = clients[i].publish(topics[i], payload, qos=1)
            if info.rc == mqtt.MQTT_ERR_SUCCESS:
                published += 1
                last_info[i] = info
            else:
                failed += 1
                time.sleep(0.001)  # paho's queue is full: let the network catch up
    # Let the in-flight QoS 1 messages be acknowledged before disconnecting.
    for info in last_info:
        if info is not None:
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(timeout=10)
    for c in clients:
        c.disconnect()
        c.loop_stop()
    results.put(("done", published, failed))
