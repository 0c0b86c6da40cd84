"""`fogline bench e2e`: from a device's publish to the model's output committed, against a
running platform, with real MQTT publishers and real model processes.

1. latency: one REAL_TIME model (`fogline.bench.score_model`, each its own process, the local
   runtime) mapped to the bench asset type; the fleet publishes at `rate` readings/s. The live
   stream of sampled assets times each reading twice: when its input is committed (the ingest
   path alone: the baseline of the same run) and when the model's output for it is committed
   (the whole loop). Every published reading must come back scored.
2. fleet: `models` models, each its own process and companion, each mapped to its own share of
   the assets, fed at once at `fleet_rate` readings/s. Every reading of every model must have
   its output committed: the history of each asset is compared, reading by reading.

Everything the run registers (asset type, assets, devices, models) is removed at the end.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fogline.bench.fleet_load import BenchFleet, LatencyProbe, PhaseResult
from fogline.client.http import ApiError, FoglineClient
from fogline.domain.errors import InvalidInput, Problem, Unavailable
from fogline.procs import tree_rss_mb
from fogline.retry import block_until

BENCH_TYPE = "bench-e2e"
VERSION = "1.0.0"
HISTORY_PAGE = 100_000  # points per history request (the API's most)
DEPLOY_WAVE = 10  # models started at once: 2 cores start ~10 Python processes in seconds


@dataclass(frozen=True)
class E2eBenchConfig:
    rate: float = 5000.0  # readings/s in the latency phase
    duration_s: float = 30.0  # seconds of load per phase
    models: int = 50  # models deployed at once in the fleet phase
    fleet_rate: float = 1000.0  # readings/s shared by those models
    devices: int = 10
    batch: int = 10  # assets per device (readings per message)
    processes: int = 2  # publisher processes
    latency_assets: int = 2  # assets whose live stream times the readings
    keep: bool = False

    def check(self) -> None:
        problems = []
        if self.rate <= 0 or self.fleet_rate <= 0:
            problems.append(Problem("rate", "rates must be positive readings/s"))
        if self.duration_s < 2:
            problems.append(Problem("duration", "must be at least 2 s"))
        if self.devices < 1 or self.batch < 1 or self.processes < 1:
            problems.append(Problem("devices", "devices, batch and processes must be positive"))
        if not 0 <= self.models <= self.devices * self.batch:
            problems.append(
                Problem("models", f"between 0 and the fleet's {self.devices * self.batch} assets")
            )
        if problems:
            raise InvalidInput.of(problems, "benchmark settings")


def bench_manifest(name: str) -> dict[str, Any]:
    return {
        "manifest": {
            "name": name,
            "version": VERSION,
            "description": "fogline bench e2e scoring model",
            "model": {
                "type": "http",
                "scoreEndpoint": "/score",
                "healthCheckEndpoint": "/health",
                "hosted": "internal",
                "stateful": False,
                "async": False,
                "local": {
                    "command": ["python", "-m", "fogline.bench.score_model"],
                    "limits": {"memoryMb": 512, "cpus": 1},
                },
            },
            "trigger": {"type": "REAL_TIME"},
            "inputs": [{"dataColumnName": f"v{i}"} for i in range(1, 5)],
            "outputs": [{"dataColumnName": "score"}],
        }
    }


def classify(reading: dict[str, Any]) -> str | None:
    values = reading.get("values", {})
    if "score" in values:
        return "output"
    if "v1" in values:
        return "input"
    return None


class E2eBench:
    def __init__(self, api: FoglineClient, tenant: str, config: E2eBenchConfig) -> None:
        self.api = api
        self.tenant = tenant
        self.config = config
        self.run_id = uuid.uuid4().hex[:6]
        self.fleet = BenchFleet(
            api, tenant, self.run_id, BENCH_TYPE, config.devices, config.batch, config.processes
        )
        self.models: list[str] = []

    # -- models -----------------------------------------------------------------------------

    def _path(self, name: str, action: str = "") -> str:
        return f"/tenants/{self.tenant}/models/{name}/{VERSION}{action}"

    def submit(self, name: str, assets: list[str] | None) -> None:
        self.api.post(f"/tenants/{self.tenant}/models", bench_manifest(name))
        self.models.append(name)
        body = {"assets": assets} if assets is not None else {"asset_types": [BENCH_TYPE]}
        self.api.put(self._path(name, "/mappings"), body)

    def wait_states(self, names: list[str], wanted: str, timeout: float) -> None:
        waiting = list(names)
        state = ""

        def all_reached() -> bool:
            nonlocal state
            while waiting:
                model = self.api.get(self._path(waiting[0]))
                state = model["state"]
                if wanted == "active" and state == "draft":
                    raise Unavailable(
                        f"model {waiting[0]} did not deploy: {model.get('state_reason')}"
                    )
                if state != wanted:
                    return False
                waiting.pop(0)
            return True

        if not block_until(all_reached, timeout, interval_s=0.2):
            raise Unavailable(
                f"{len(waiting)} models not {wanted} after {timeout:.0f} s "
                f"({waiting[0]} is {state})"
            )

    def deploy(self, names: list[str]) -> float:
        """Deploys in waves; seconds from the first request to the last model active."""
        started = time.monotonic()
        for i in range(0, len(names), DEPLOY_WAVE):
            wave = names[i : i + DEPLOY_WAVE]
            for name in wave:
                self.api.post(self._path(name, "/deploy"))
            self.wait_states(wave, "active", 120)
        return time.monotonic() - started

    def stop(self, names: list[str]) -> None:
        states = {name: self.api.get(self._path(name))["state"] for name in names}
        for name, state in states.items():
            if state == "active":
                self.api.post(self._path(name, "/stop"))
        self.wait_states([n for n, state in states.items() if state != "draft"], "stopped", 60)

    def remove_models(self) -> None:
        for name in self.models:
            try:
                state = self.api.get(self._path(name))["state"]
                if state == "active":
                    self.api.post(self._path(name, "/stop"))
                    self.wait_states([name], "stopped", 60)
                    state = "stopped"
                if state == "stopped":
                    self.api.post(self._path(name, "/retire"))
                self.api.delete(self._path(name))
            except (ApiError, Unavailable):
                continue  # leave it for the user to see; the rest is still cleaned up

    def companion(self, name: str) -> dict[str, Any]:
        deployment = self.api.get(self._path(name, "/deployment"))
        return dict(deployment.get("companion") or {})

    def modelrss_mb(self, names: list[str]) -> list[float]:
        sizes = []
        for name in names:
            runtime = self.api.get(self._path(name, "/deployment")).get("runtime") or {}
            pid = runtime.get("pid")
            rss = tree_rss_mb(int(pid)) if pid else None  # with its sandbox's processes
            if rss is not None:
                sizes.append(rss)
        return sizes

    # -- checking that nothing was skipped --------------------------------------------------

    def unscored(self, assets: list[str], since: int) -> dict[str, int]:
        """Per asset: committed input readings since `since` with no committed output."""
        return {
            asset: len(self._times(asset, "v1", since) - self._times(asset, "score", since))
            for asset in assets
        }

    def _times(self, asset: str, telemetry: str, since: int) -> set[int]:
        """Every timestamp of one telemetry of an asset since `since`, page by page."""
        times: set[int] = set()
        start = since
        while True:
            body = self.api.get(
                f"/tenants/{self.tenant}/assets/{asset}/telemetry/history",
                keys=telemetry,
                **{"from": str(start), "limit": str(HISTORY_PAGE)},
            )
            series = body["series"].get(telemetry) or {"points": [], "truncated": False}
            times.update(p[0] for p in series["points"])
            if not series["truncated"] or not series["points"]:
                return times
            start = series["points"][-1][0] + 1

    def drain(self, names: list[str], expected: int, timeout: float = 120) -> list[dict[str, Any]]:
        """Waits until the companions have scored every published reading, or stop moving."""
        # A loop of its own, not fogline.retry's: besides its deadline it stops once the count
        # has not moved for 15 s, a second clock that moves with each change.
        deadline = time.monotonic() + timeout
        last, last_change = -1, time.monotonic()
        while True:
            stats = [self.companion(n) for n in names]
            scored = sum(int(s.get("scored", 0)) for s in stats)
            if scored >= expected or time.monotonic() > deadline:
                return stats
            if scored != last:
                last, last_change = scored, time.monotonic()
            elif time.monotonic() - last_change > 15:
                return stats
            time.sleep(0.5)

    def wait_outputs(self, assets: list[str], since: int, timeout: float = 60) -> dict[str, int]:
        missing: dict[str, int] = {}

        def all_scored() -> bool:
            nonlocal missing
            missing = self.unscored(assets, since)
            return not any(missing.values())

        block_until(all_scored, timeout, interval_s=1.0)
        return missing

    # -- phases -----------------------------------------------------------------------------

    def _loaded(
        self, names: list[str], assets: list[str], rate: float
    ) -> tuple[PhaseResult, LatencyProbe, list[dict[str, Any]], dict[str, int]]:
        sampled = [d.assets[0] for d in self.fleet.devices[: self.config.latency_assets]]
        since = int(time.time() * 1000)
        probe = LatencyProbe(self.api, self.tenant, sampled, classify)
        with probe:
            result = self.fleet.publish_timed(probe, rate, self.config.duration_s)
            expected = result.published_msgs * self.config.batch
            stats = self.drain(names, expected)
            missing = self.wait_outputs(assets, since)
        return result, probe, stats, missing

    def latency_phase(self) -> dict[str, Any]:
        name = f"bench-{self.run_id}-latency"
        self.submit(name, None)
        deploy_s = self.deploy([name])
        runtime = self.api.get(self._path(name, "/deployment")).get("runtime") or {}
        sandbox = (runtime.get("extra") or {}).get("sandbox", "-")
        result, probe, stats, missing = self._loaded([name], self.fleet.assets, self.config.rate)
        self.stop([name])
        return {
            "model": name,
            "sandbox": sandbox,
            "deploy_s": round(deploy_s, 2),
            **self._counts(result, stats, missing),
            "input_committed": probe.summary("input"),
            "output_committed": probe.summary("output"),
            "calls": sum(int(s.get("calls", 0)) for s in stats),
        }

    def fleet_phase(self) -> dict[str, Any]:
        names = [f"bench-{self.run_id}-m{i:03d}" for i in range(self.config.models)]
        assets = self.fleet.assets
        for i, name in enumerate(names):
            self.submit(name, assets[i :: len(names)])
        deploy_s = self.deploy(names)
        rss = self.modelrss_mb(names)
        platform = self.api.get("/system")
        result, probe, stats, missing = self._loaded(names, assets, self.config.fleet_rate)
        fed = sum(1 for s in stats if int(s.get("scored", 0)) > 0)
        self.stop(names)
        return {
            "models": len(names),
            "deploy_s": round(deploy_s, 2),
            **self._counts(result, stats, missing),
            "models_fed": fed,
            "output_committed": probe.summary("output"),
            "input_committed": probe.summary("input"),
            "model_rss_mb": {
                "measured": len(rss),
                "total": round(sum(rss), 1),
                "mean": round(sum(rss) / len(rss), 1) if rss else None,
            },
            "platform_rss_mb": platform.get("rss_mb"),
        }

    def _counts(
        self, result: PhaseResult, stats: list[dict[str, Any]], missing: dict[str, int]
    ) -> dict[str, Any]:
        published = result.published_msgs * self.config.batch
        return {
            "offered_readings_per_s": round(published / result.seconds),
            "published_readings": published,
            "scored_readings": sum(int(s.get("scored", 0)) for s in stats),
            "dropped_by_companions": sum(int(s.get("dropped", 0)) for s in stats),
            "failed_calls": sum(int(s.get("failures", 0)) for s in stats),
            "inputs_without_output": sum(missing.values()),
        }


Progress = Callable[[str], None]


def run_e2e_bench(
    api: FoglineClient,
    tenant: str,
    config: E2eBenchConfig,
    progress: Progress = lambda _line: None,
) -> dict[str, Any]:
    config.check()
    bench = E2eBench(api, tenant, config)
    progress(f"registering {config.devices} devices x {config.batch} assets")
    bench.fleet.provision("Benchmark e2e sensor", [{"name": "score", "dtype": "float"}])
    try:
        progress(f"latency: 1 model, {config.rate:,.0f} readings/s for {config.duration_s:.0f} s")
        latency = bench.latency_phase()
        fleet = None
        if config.models:
            progress(
                f"fleet: {config.models} models, {config.fleet_rate:,.0f} readings/s "
                f"for {config.duration_s:.0f} s"
            )
            fleet = bench.fleet_phase()
    finally:
        if not config.keep:
            progress("removing what the run registered")
            bench.remove_models()
            bench.fleet.cleanup()
    report: dict[str, Any] = {
        "devices": config.devices,
        "batch": config.batch,
        "latency": latency,
        "fleet": fleet,
    }
    report["lines"] = _lines(config, latency, fleet)
    return report


def _lines(
    config: E2eBenchConfig, latency: dict[str, Any], fleet: dict[str, Any] | None
) -> list[str]:
    i, o = latency["input_committed"], latency["output_committed"]
    lines = [
        f"fleet: {config.devices} devices (MQTT, QoS 1) x {config.batch} assets, "
        f"{config.processes} publisher processes",
        f"latency phase: 1 REAL_TIME model, {latency['offered_readings_per_s']:,} readings/s "
        f"for {config.duration_s:.0f} s (deployed in {latency['deploy_s']} s, "
        f"sandbox: {latency['sandbox']})",
        _latency_line("publish -> input committed (baseline)", i),
        _latency_line("publish -> output committed", o),
        f"  scored {latency['scored_readings']:,} of {latency['published_readings']:,} readings "
        f"in {latency['calls']:,} calls; dropped {latency['dropped_by_companions']}, "
        f"failed calls {latency['failed_calls']}, "
        f"inputs without output {latency['inputs_without_output']}",
    ]
    if fleet is not None:
        f, rss = fleet["output_committed"], fleet["model_rss_mb"]
        lines += [
            f"fleet phase: {fleet['models']} models (each its own process), "
            f"{fleet['offered_readings_per_s']:,} readings/s for {config.duration_s:.0f} s "
            f"(all deployed in {fleet['deploy_s']} s)",
            f"  models fed {fleet['models_fed']} of {fleet['models']}; scored "
            f"{fleet['scored_readings']:,} of {fleet['published_readings']:,} readings; dropped "
            f"{fleet['dropped_by_companions']}, failed calls {fleet['failed_calls']}, "
            f"inputs without output {fleet['inputs_without_output']}",
            _latency_line("publish -> output committed", f),
            f"  RSS: platform process {fleet['platform_rss_mb']} MB; model processes "
            f"{rss['total']} MB in all ({rss['mean']} MB each, {rss['measured']} measured)",
        ]
    return lines


def _latency_line(label: str, summary: dict[str, Any]) -> str:
    return (
        f"  {label:<38} p50 {summary['p50_ms']:>7} ms  p99 {summary['p99_ms']:>7} ms"
        f"  ({summary['samples']} samples)"
    )
