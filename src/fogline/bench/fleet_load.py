"""What the benchmarks share: a fleet of gateway devices registered on a running platform, the
MQTT publisher processes that drive it, and a probe that times readings as the platform's live
stream announces them committed.

A device is a gateway reporting for `batch` assets of one asset type; its readings carry
`v1`..`v4` and are stamped with the publish time (epoch ms), so a committed reading's age on
arrival in the live stream is its publish-to-commit latency.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import orjson

from fogline.bench.publishers import BenchDevice, PublishJob, run_publisher
from fogline.client.http import ApiError, FoglineClient
from fogline.domain.errors import Forbidden, Unavailable

VALUES = [{"name": f"v{i}", "dtype": "float"} for i in range(1, 5)]
PUBLISH_DELAY_S = 3.0  # time for every publisher process to connect its clients


@dataclass
class PhaseResult:
    published_msgs: int
    failed_msgs: int
    seconds: float


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class BenchFleet:
    def __init__(
        self,
        api: FoglineClient,
        tenant: str,
        run_id: str,
        asset_type: str,
        devices: int,
        batch: int,
        processes: int,
    ) -> None:
        self.api = api
        self.tenant = tenant
        self.run_id = run_id
        self.asset_type = asset_type
        self.device_count = devices
        self.batch = batch
        self.processes = processes
        self.devices: list[BenchDevice] = []
        self._created_assets: list[str] = []
        system = api.get("/system")
        if "nats" not in system:  # a tenant's key sees its own counters only
            raise Forbidden("benchmarks need an admin API key: they read the platform's state")
        mqtt_url = urlparse(system["mqtt"] or "")
        if not mqtt_url.hostname:
            raise Unavailable("the platform has no MQTT listener to benchmark")
        if mqtt_url.scheme == "mqtts":
            raise Unavailable(
                "the platform's MQTT listener takes TLS only and the benchmark's devices "
                "publish plain MQTT: benchmark a platform started without TLS"
            )
        self.mqtt_host, self.mqtt_port = mqtt_url.hostname, mqtt_url.port or 1883
        # The benchmark runs beside the platform: a listener on every address is reached on
        # loopback, whatever public name its devices are given.
        mqtt = [x for x in system.get("listeners") or [] if x.get("name") == "mqtt"]
        if mqtt and mqtt[0].get("host") in ("0.0.0.0", ""):
            self.mqtt_host = "127.0.0.1"
        self.nats_url: str = system["nats"]
        self.topic_root = "fogline"

    @property
    def prefix(self) -> str:
        return f"bench-{self.run_id}-"

    @property
    def assets(self) -> list[str]:
        return [a for d in self.devices for a in d.assets]

    def provision(self, type_name: str, extra_telemetry: list[dict[str, Any]]) -> None:
        t = self.tenant
        self.api.put(
            f"/tenants/{t}/asset-types/{self.asset_type}",
            {"name": type_name, "telemetry": [*VALUES, *extra_telemetry]},
        )
        for d in range(self.device_count):
            device_id = f"{self.prefix}d{d:03d}"
            assets = []
            for a in range(self.batch):
                asset_id = f"{device_id}-a{a:02d}"
                self.api.post(
                    f"/tenants/{t}/assets", {"id": asset_id, "asset_type": self.asset_type}
                )
                self._created_assets.append(asset_id)
                assets.append(asset_id)
            creds = self.api.post(f"/tenants/{t}/devices", {"id": device_id})["credentials"]
            self.topic_root = creds["topic"].split("/")[0]
            self.devices.append(
                BenchDevice(device_id, creds["username"], creds["password"], tuple(assets))
            )

    def cleanup(self) -> None:
        """Removes what `provision` made, even when it stopped halfway."""
        t = self.tenant
        for d in self.devices:
            self.api.delete(f"/tenants/{t}/devices/{d.device_id}")
        for a in self._created_assets:
            self.api.delete(f"/tenants/{t}/assets/{a}")
        with contextlib.suppress(ApiError):  # refused while another run's assets use it
            self.api.delete(f"/tenants/{t}/asset-types/{self.asset_type}")

    def publish(self, suffix: str, readings_per_s: float, seconds: float) -> PhaseResult:
        """Every device publishes for `seconds`, paced so that the fleet offers `readings_per_s`
        (0: flat out). The publisher processes start together once all their clients connect."""
        per_device = readings_per_s / self.batch / len(self.devices) if readings_per_s else 0.0
        ctx = multiprocessing.get_context("spawn")
        results: Any = ctx.Queue()
        shares = [self.devices[i :: self.processes] for i in range(self.processes)]
        start_at = time.time() + PUBLISH_DELAY_S
        procs = []
        for share in shares:
            if not share:
                continue
            job = PublishJob(
                self.mqtt_host,
                self.mqtt_port,
                self.topic_root,
                self.tenant,
                suffix,
                tuple(share),
                per_device,
                seconds,
                start_at,
            )
            p = ctx.Process(target=run_publisher, args=(job, results), daemon=True)
            p.start()
            procs.append(p)
        published = failed = 0
        errors = []
        for _ in procs:
            item = results.get(timeout=seconds + 60)
            if item[0] == "error":
                errors.append(item[1])
            else:
                published += item[1]
                failed += item[2]
        for p in procs:
            p.join(timeout=10)
        if errors:
            raise Unavailable("publishers failed: " + "; ".join(errors))
        return PhaseResult(published, failed, seconds)

    def publish_timed(
        self, probe: LatencyProbe, readings_per_s: float, seconds: float
    ) -> PhaseResult:
        """`publish` to the telemetry topics while `probe` records, leaving out the publishers'
        first second (clients and caches warm up there)."""
        timer = threading.Timer(PUBLISH_DELAY_S + 1.0, probe.record, args=(True,))
        timer.start()
        try:
            return self.publish("telemetry", readings_per_s, seconds)
        finally:
            timer.cancel()
            probe.record(False)


Classifier = Callable[[dict[str, Any]], str | None]


class LatencyProbe:
    """Follows the live stream (Server-Sent Events) of a few assets and records, per kind of
    reading (`classify` names it, or None to ignore it), how old each reading was when the
    platform announced it committed."""

    def __init__(
        self, api: FoglineClient, tenant: str, assets: list[str], classify: Classifier
    ) -> None:
        self.api = api
        self.tenant = tenant
        self.assets = assets
        self.classify = classify
        self.samples: dict[str, list[float]] = {}
        self.errors: list[str] = []
        self._recording = threading.Event()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._follow, args=(a,), daemon=True) for a in assets
        ]

    def __enter__(self) -> LatencyProbe:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()

    def record(self, on: bool) -> None:
        """Only what arrives while recording counts (warm-up and drain are left out)."""
        if on:
            self._recording.set()
        else:
            self._recording.clear()

    def _follow(self, asset: str) -> None:
        auth = self.api.http.headers.get("authorization", "")
        key = auth.removeprefix("Bearer ") or None
        with FoglineClient(self.api.base.removesuffix("/api/v1"), key) as client:
            try:
                for event, data in client.live(self.tenant, asset):
                    if self._stop.is_set():
                        return
                    if event == "readings" and self._recording.is_set():
                        self._time(data)
            except Unavailable as exc:
                self.errors.append(exc.message)  # the figures say how many samples there are

    def _time(self, data: str) -> None:
        now = time.time() * 1000
        for reading in orjson.loads(data)["readings"]:
            kind = self.classify(reading)
            if kind is not None:
                self.samples.setdefault(kind, []).append(now - reading["ts"])

    def summary(self, kind: str) -> dict[str, Any]:
        values = self.samples.get(kind, [])
        return {
            "samples": len(values),
            "p50_ms": round(percentile(values, 0.50), 1),
            "p99_ms": round(percentile(values, 0.99), 1),
            "mean_ms": round(statistics.fmean(values), 1) if values else float("nan"),
            "max_ms": round(max(values), 1) if values else float("nan"),
        }
