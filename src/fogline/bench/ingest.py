"""`fogline bench ingest`: readings/s committed end to end, publish-to-commit latency, and the
raw rate of the same publishers straight to a bare NATS subscriber, all in one run.

Phases, each with the same MQTT publishers (real paho clients in separate processes):
1. raw: publishers flat out to a subject no stream captures; bare NATS subscribers count.
2. max: publishers flat out to the telemetry topics; the platform's committed counters tell
   when everything is in SQL. Committed readings/s over raw readings/s is the ratio.
3. paced: publishers at the offered rate; live events (SSE) of sampled assets give the latency
   from publish (the reading's timestamp) to commit; the platform's memory is sampled.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import statistics
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import nats
import orjson

from fogline.bench.publishers import BenchDevice, PublishJob, run_publisher
from fogline.client.http import FoglineClient
from fogline.domain.errors import Unavailable

BENCH_TYPE = "bench-sensor"


@dataclass(frozen=True)
class IngestBenchConfig:
    devices: int = 20
    duration_s: float = 30.0
    batch: int = 10
    rate: float = 0.0  # readings/s offered in the paced phase; 0 picks 50,000
    processes: int = 2
    phase_s: float = 15.0
    latency_samples_assets: int = 2
    keep: bool = False


@dataclass
class PhaseResult:
    published_msgs: int
    failed_msgs: int
    seconds: float


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class IngestBench:
    def __init__(self, api: FoglineClient, tenant: str, config: IngestBenchConfig) -> None:
        self.api = api
        self.tenant = tenant
        self.config = config
        self.run_id = uuid.uuid4().hex[:6]
        self.devices: list[BenchDevice] = []
        system = api.get("/system")
        self.system = system
        mqtt_url = urlparse(system["mqtt"] or "")
        if not mqtt_url.hostname:
            raise Unavailable("the platform has no MQTT listener to benchmark")
        self.mqtt_host, self.mqtt_port = mqtt_url.hostname, mqtt_url.port or 1883
        self.nats_url = system["nats"]
        self.topic_root = "fogline"

    # -- setup and teardown -----------------------------------------------------------------

    def provision(self) -> None:
        t = self.tenant
        self.api.put(
            f"/tenants/{t}/asset-types/{BENCH_TYPE}",
            {
                "name": "Benchmark sensor",
                "telemetry": [{"name": f"v{i}", "dtype": "float"} for i in range(1, 5)],
            },
        )
        for d in range(self.config.devices):
            device_id = f"bench-{self.run_id}-d{d:03d}"
            assets = []
            for a in range(self.config.batch):
                asset_id = f"bench-{self.run_id}-d{d:03d}-a{a:02d}"
                self.api.post(f"/tenants/{t}/assets", {"id": asset_id, "asset_type": BENCH_TYPE})
                assets.append(asset_id)
            creds = self.api.post(f"/tenants/{t}/devices", {"id": device_id})["credentials"]
            topic = creds["topic"]
            self.topic_root = topic.split("/")[0]
            self.devices.append(
                BenchDevice(device_id, creds["username"], creds["password"], tuple(assets))
            )

    def cleanup(self) -> None:
        for d in self.devices:
            self.api.delete(f"/tenants/{self.tenant}/devices/{d.device_id}")
            for a in d.assets:
                self.api.delete(f"/tenants/{self.tenant}/assets/{a}")

    # -- phases ---------------------------------------------------------------------------

    def _publish(self, suffix: str, msgs_per_s_per_device: float, seconds: float) -> PhaseResult:
        ctx = multiprocessing.get_context("spawn")
        results: Any = ctx.Queue()
        shares = [self.devices[i :: self.config.processes] for i in range(self.config.processes)]
        start_at = time.time() + 3.0  # time for every process to connect its clients
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
                msgs_per_s_per_device,
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

    def committed_values(self) -> int:
        stats = self.api.get(f"/tenants/{self.tenant}/ingest/stats")
        ours = f"bench-{self.run_id}-"
        return sum(d["values"] for d in stats["devices"] if d["device"].startswith(ours))

    def raw_phase(self) -> tuple[float, PhaseResult]:
        """Publishers flat out to `.../bench`, counted by bare NATS subscribers."""
        counted = [0]
        ready = threading.Event()
        stop = threading.Event()

        async def subscribe() -> None:
            conns = []
            for d in self.devices:
                nc = await nats.connect(self.nats_url, user=d.username, password=d.password)

                async def count(_msg: Any) -> None:
                    counted[0] += 1

                await nc.subscribe(
                    f"{self.topic_root}.{self.tenant}.devices.{d.device_id}.bench", cb=count
                )
                await nc.flush()
                conns.append(nc)
            ready.set()
            await asyncio.to_thread(stop.wait)
            for nc in conns:
                await nc.close()

        thread = threading.Thread(target=lambda: asyncio.run(subscribe()), daemon=True)
        thread.start()
        ready.wait(30)
        result = self._publish("bench", 0.0, self.config.phase_s)
        time.sleep(1.0)
        stop.set()
        thread.join(timeout=10)
        readings = counted[0] * self.config.batch
        return readings / result.seconds, result

    def max_phase(self) -> tuple[float, PhaseResult, int]:
        before = self.committed_values()
        started = time.time() + 3.0
        result = self._publish("telemetry", 0.0, self.config.phase_s)
        expected = before + result.published_msgs * self.config.batch * 4
        last_change, last = time.time(), before
        deadline = time.time() + 120
        while time.time() < deadline:
            current = self.committed_values()
            if current != last:
                last, last_change = current, time.time()
            if current >= expected:
                break
            time.sleep(0.2)
        committed_readings = (last - before) // 4
        return committed_readings / (last_change - started), result, expected - last

    def paced_phase(self, readings_per_s: float) -> dict[str, Any]:
        per_device = readings_per_s / self.config.batch / len(self.devices)
        latencies: list[float] = []
        stop = threading.Event()
        sampled = [d.assets[0] for d in self.devices[: self.config.latency_samples_assets]]

        def follow(asset: str) -> None:
            with FoglineClient(self.api.base.removesuffix("/api/v1"), self._key()) as client:
                for event, data in client.live(self.tenant, asset):
                    if stop.is_set():
                        return
                    if event != "readings":
                        continue
                    now = time.time() * 1000
                    for r in orjson.loads(data)["readings"]:
                        latencies.append(now - r["ts"])

        followers = [threading.Thread(target=follow, args=(a,), daemon=True) for a in sampled]
        for f in followers:
            f.start()
        memory: list[tuple[float, float, float, float]] = []
        sampling = threading.Event()

        def sample_memory() -> None:
            t0 = time.time()
            while not sampling.is_set():
                s = self.api.get("/system")
                memory.append(
                    (
                        round(time.time() - t0, 1),
                        s.get("rss_mb") or 0.0,
                        s.get("historian_rss_mb") or 0.0,
                        s.get("nats_rss_mb") or 0.0,
                    )
                )
                sampling.wait(5.0)

        sampler = threading.Thread(target=sample_memory, daemon=True)
        sampler.start()
        before = self.committed_values()
        result = self._publish("telemetry", per_device, self.config.duration_s)
        expected = before + result.published_msgs * self.config.batch * 4
        deadline = time.time() + 60
        while self.committed_values() < expected and time.time() < deadline:
            time.sleep(0.2)
        stop.set()
        sampling.set()
        sampler.join(timeout=10)
        # Skip the first second: clients and caches warm up there.
        warm = latencies[len(latencies) // max(1, int(self.config.duration_s)) :]
        return {
            "offered_readings_per_s": readings_per_s,
            "achieved_readings_per_s": result.published_msgs * self.config.batch / result.seconds,
            "published_msgs": result.published_msgs,
            "lost_values": max(0, expected - self.committed_values()),
            "latency_samples": len(warm),
            "p50_ms": round(_percentile(warm, 0.50), 1),
            "p99_ms": round(_percentile(warm, 0.99), 1),
            "mean_ms": round(statistics.fmean(warm), 1) if warm else float("nan"),
            "memory": memory,
        }

    def _key(self) -> str | None:
        auth = self.api.http.headers.get("authorization", "")
        return auth.removeprefix("Bearer ") or None


def _memory_summary(
    samples: list[tuple[float, float, float, float]],
) -> dict[str, dict[str, float]]:
    """Per process: at the start, once warm (a minute in: caches filled), at the end, and the
    peak. Flat memory means `end` stays near `after_1_min`."""
    if not samples:
        return {}
    warm = next((s for s in samples if s[0] >= 60.0), samples[-1])
    result = {}
    for index, name in ((1, "api"), (2, "historian"), (3, "nats-server")):
        result[name] = {
            "start": samples[0][index],
            "after_1_min": warm[index],
            "end": samples[-1][index],
            "max": max(s[index] for s in samples),
        }
    return result


def run_ingest_bench(api: FoglineClient, tenant: str, config: IngestBenchConfig) -> dict[str, Any]:
    bench = IngestBench(api, tenant, config)
    bench.provision()
    try:
        raw_rate, _ = bench.raw_phase()
        max_rate, _, missing = bench.max_phase()
        paced = bench.paced_phase(config.rate or 50_000.0)
    finally:
        if not config.keep:
            bench.cleanup()
    memory = paced.pop("memory")
    rss = _memory_summary(memory)
    report: dict[str, Any] = {
        "devices": config.devices,
        "batch": config.batch,
        "values_per_reading": 4,
        "publisher_processes": config.processes,
        "raw_readings_per_s": round(raw_rate),
        "committed_readings_per_s": round(max_rate),
        "ratio_to_raw": round(max_rate / raw_rate, 3) if raw_rate else None,
        "max_phase_missing_values": missing,
        "paced": paced,
        "rss_mb": rss,
        "platform_rss_samples": memory,
    }
    report["lines"] = [
        f"devices {config.devices} (MQTT, QoS 1), {config.batch} readings x 4 values per message,"
        f" {config.processes} publisher processes",
        f"raw MQTT->NATS subscriber   {raw_rate:>10,.0f} readings/s",
        f"committed end to end (max)  {max_rate:>10,.0f} readings/s",
        f"ratio committed/raw         {report['ratio_to_raw']}",
        f"paced at {paced['offered_readings_per_s']:,.0f}/s (achieved "
        f"{paced['achieved_readings_per_s']:,.0f}/s): publish->commit p50 {paced['p50_ms']} ms, "
        f"p99 {paced['p99_ms']} ms over {paced['latency_samples']} samples; "
        f"lost values {paced['lost_values']}",
        *(
            f"RSS MB {name:<11} start {r['start']:>6}  after 1 min {r['after_1_min']:>6}  "
            f"end {r['end']:>6}  max {r['max']:>6}"
            for name, r in rss.items()
        ),
    ]
    return report
