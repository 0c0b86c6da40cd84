"""`fogline bench ingest`: readings/s committed end to end, publish-to-commit latency, and the
raw rate of the same publishers straight to a bare NATS subscriber, all in one run.

Phases, each with the same MQTT publishers (real paho clients in separate processes):
1. raw: publishers flat out to a subject no stream captures; bare NATS subscribers count.
2. max: publishers flat out to the telemetry topics; the platform's committed counters tell
   when everything is in SQL. Committed readings/s over raw readings/s is the ratio.
3. paced: publishers at the offered rate (by default 80 % of what the max phase committed, so
   that the figure means the same on a slower or a faster machine); live events (SSE) of
   sampled assets give the latency from publish (the reading's timestamp) to commit, held
   against the p99 target; the platform's memory is sampled.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import nats

from fogline.bench.fleet_load import BenchFleet, LatencyProbe, PhaseResult
from fogline.client.http import FoglineClient
from fogline.retry import block_until

BENCH_TYPE = "bench-sensor"
PACED_SHARE = 0.8  # of the measured max, when no rate is given: loaded, not saturated
P99_TARGET_MS = 250.0  # publish -> commit, in the paced phase


def paced_rate(asked: float, max_rate: float) -> tuple[float, str]:
    """The paced phase's rate and where it came from."""
    if asked > 0:
        return asked, "--rate"
    return max(1.0, round(max_rate * PACED_SHARE)), f"{PACED_SHARE:.0%} of the max phase"


def p99_verdict(p99_ms: float | None, target_ms: float = P99_TARGET_MS) -> str:
    if p99_ms is None:
        return "no latency samples: p99 unknown"
    held = "held" if p99_ms <= target_ms else "NOT held"
    return f"p99 {p99_ms} ms against the {target_ms:g} ms target: {held}"


@dataclass(frozen=True)
class IngestBenchConfig:
    devices: int = 20
    duration_s: float = 30.0
    batch: int = 10
    rate: float = 0.0  # readings/s offered in the paced phase; 0: PACED_SHARE of the max phase
    processes: int = 2
    phase_s: float = 15.0
    latency_samples_assets: int = 2
    keep: bool = False


class IngestBench:
    def __init__(self, api: FoglineClient, tenant: str, config: IngestBenchConfig) -> None:
        self.api = api
        self.tenant = tenant
        self.config = config
        self.fleet = BenchFleet(
            api,
            tenant,
            uuid.uuid4().hex[:6],
            BENCH_TYPE,
            config.devices,
            config.batch,
            config.processes,
        )

    def committed_values(self) -> int:
        stats = self.api.get(f"/tenants/{self.tenant}/ingest/stats")
        ours = self.fleet.prefix
        return sum(d["values"] for d in stats["devices"] if d["device"].startswith(ours))

    def raw_phase(self) -> tuple[float, PhaseResult]:
        """Publishers flat out to `.../bench`, counted by bare NATS subscribers."""
        counted = [0]
        ready = threading.Event()
        stop = threading.Event()
        fleet = self.fleet

        async def subscribe() -> None:
            conns = []
            for d in fleet.devices:
                nc = await nats.connect(fleet.nats_url, user=d.username, password=d.password)

                async def count(_msg: Any) -> None:
                    counted[0] += 1

                await nc.subscribe(
                    f"{fleet.topic_root}.{self.tenant}.devices.{d.device_id}.bench", cb=count
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
        result = fleet.publish("bench", 0.0, self.config.phase_s)
        time.sleep(1.0)
        stop.set()
        thread.join(timeout=10)
        readings = counted[0] * self.config.batch
        return readings / result.seconds, result

    def max_phase(self) -> tuple[float, PhaseResult, int]:
        before = self.committed_values()
        started = time.time() + 3.0
        result = self.fleet.publish("telemetry", 0.0, self.config.phase_s)
        expected = before + result.published_msgs * self.config.batch * 4
        # A loop of its own, not fogline.retry's: the time of the last change is the measure.
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
        sampled = [d.assets[0] for d in self.fleet.devices[: self.config.latency_samples_assets]]
        probe = LatencyProbe(self.api, self.tenant, sampled, lambda _reading: "commit")
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
        with probe:
            result = self.fleet.publish_timed(probe, readings_per_s, self.config.duration_s)
            expected = before + result.published_msgs * self.config.batch * 4
            block_until(lambda: self.committed_values() >= expected, 60, interval_s=0.2)
        sampling.set()
        sampler.join(timeout=10)
        latency = probe.summary("commit")
        return {
            "offered_readings_per_s": readings_per_s,
            "achieved_readings_per_s": result.published_msgs * self.config.batch / result.seconds,
            "published_msgs": result.published_msgs,
            "lost_values": max(0, expected - self.committed_values()),
            "latency_samples": latency["samples"],
            "p50_ms": latency["p50_ms"],
            "p99_ms": latency["p99_ms"],
            "mean_ms": latency["mean_ms"],
            "memory": memory,
        }


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
    bench.fleet.provision("Benchmark sensor", [])
    try:
        raw_rate, _ = bench.raw_phase()
        max_rate, _, missing = bench.max_phase()
        rate, basis = paced_rate(config.rate, max_rate)
        paced = bench.paced_phase(rate)
    finally:
        if not config.keep:
            bench.fleet.cleanup()
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
        "paced": {
            **paced,
            "rate_from": basis,
            "p99_target_ms": P99_TARGET_MS,
            "p99_held": paced["p99_ms"] is not None and paced["p99_ms"] <= P99_TARGET_MS,
        },
        "rss_mb": rss,
        "platform_rss_samples": memory,
    }
    report["lines"] = [
        f"devices {config.devices} (MQTT, QoS 1), {config.batch} readings x 4 values per message,"
        f" {config.processes} publisher processes",
        f"raw MQTT->NATS subscriber   {raw_rate:>10,.0f} readings/s",
        f"committed end to end (max)  {max_rate:>10,.0f} readings/s",
        f"ratio committed/raw         {report['ratio_to_raw']}",
        f"paced at {paced['offered_readings_per_s']:,.0f}/s ({basis}; achieved "
        f"{paced['achieved_readings_per_s']:,.0f}/s): publish->commit p50 {paced['p50_ms']} ms, "
        f"p99 {paced['p99_ms']} ms over {paced['latency_samples']} samples; "
        f"lost values {paced['lost_values']}",
        p99_verdict(paced["p99_ms"]),
        *(
            f"RSS MB {name:<11} start {r['start']:>6}  after 1 min {r['after_1_min']:>6}  "
            f"end {r['end']:>6}  max {r['max']:>6}"
            for name, r in rss.items()
        ),
    ]
    return report
