"""`fogline demo`: the platform and a virtual fleet of induction motors over real MQTT, shown
live, ending with a summary of what was ingested and where to look."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import time
from functools import partial
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from fogline.app.lock import DataDirLock
from fogline.app.platform import Platform
from fogline.app.settings import load_settings
from fogline.client.http import FoglineClient
from fogline.domain.access import DEFAULT_TENANT
from fogline.domain.errors import ConfigurationError
from fogline.retry import block_until, wait_until
from fogline.sim.fleet import MOTOR_TYPE, VirtualFleet
from fogline.sim.motors import Fault

MARKER = ".fogline-demo"
SHOWN_MOTORS = 6


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _fresh_dir(path: Path) -> None:
    """The demo starts from nothing each time, but never deletes a directory it did not make."""
    if path.exists() and any(path.iterdir()):
        if not (path / MARKER).exists():
            raise ConfigurationError(
                f"{path} exists and is not a demo directory; choose another with --demo-dir"
            )
        # Not from under a demo still running there: refused as `fogline up` would be.
        running = DataDirLock(path)
        running.acquire()
        running.release()
        shutil.rmtree(path)
    # The platform's user only, as the platform makes its data dir (nothing to narrow later).
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    marker = os.open(path / MARKER, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(marker, "w") as f:
        f.write("made by fogline demo; deleted by the next demo run\n")


async def run_demo(demo_dir: Path, duration: float, motors: int, keep_running: bool) -> None:
    console = Console()
    demo_dir = Path.cwd() / demo_dir if not demo_dir.is_absolute() else demo_dir
    _fresh_dir(demo_dir)
    settings = load_settings(
        data_dir=demo_dir,
        http_port=_free_port(),
        nats_port=_free_port(),
        mqtt_port=_free_port(),
        log_level="warning",
    )
    # The demo's own platform: plain, on loopback, whatever TLS or hosts the environment sets
    # for a real one (its virtual devices speak plain MQTT).
    plain = dict.fromkeys(("tls_cert_file", "tls_key_file", "tls_client_ca_file"))
    settings = settings.model_copy(
        update={**plain, "http_host": "127.0.0.1", "mqtt_host": "127.0.0.1"}
    )
    platform = Platform(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    console.print(f"[bold]Fogline demo[/]: starting the platform in {demo_dir} ...")
    await platform.start()
    try:
        await _run(console, platform, duration, motors, keep_running, stop)
    finally:
        await platform.stop()
    console.print("platform stopped")


async def _run(
    console: Console,
    platform: Platform,
    duration: float,
    motors: int,
    keep_running: bool,
    stop: asyncio.Event,
) -> None:
    settings = platform.settings
    api = FoglineClient(platform.http_url, platform.bootstrap.admin_key)
    assert platform.nats is not None
    host, port = platform.nats.mqtt_address
    fleet = VirtualFleet(api, DEFAULT_TENANT, host, port, motors=motors, seed=7)
    console.print(f"registering {motors} induction motors and their gateway devices ...")
    await asyncio.to_thread(fleet.provision)
    console.print("importing and deploying library models: " + ", ".join(DEMO_MODELS))
    await asyncio.to_thread(_deploy_models, api)
    await asyncio.to_thread(fleet.connect)
    fleet.start()
    console.print(f"{motors} devices publishing over MQTT to {platform.mqtt_url}")
    fault_at = time.monotonic() + duration / 3
    fault_injected = False
    started = time.monotonic()
    last_line = 0.0
    shown = [d.motor.asset for d in fleet.devices[:SHOWN_MOTORS]]
    with Live(console=console, refresh_per_second=2, transient=False) as live:
        while not stop.is_set() and time.monotonic() - started < duration:
            if not fault_injected and time.monotonic() >= fault_at:
                fleet.inject_fault(shown[2], Fault.BEARING_WEAR, duration)
                fault_injected = True
            latest = await asyncio.to_thread(_latest, api, shown)
            view = _view(platform, fleet, latest, time.monotonic() - started, duration)
            if console.is_terminal:
                live.update(view)
            elif time.monotonic() - last_line >= 5:
                h = platform.historian.stats if platform.historian else None
                console.print(
                    f"t={time.monotonic() - started:4.0f}s published {fleet.stats.messages} "
                    f"messages, committed {h.values if h else 0} values, "
                    f"dead letters {h.dead_letters if h else 0}"
                )
                last_line = time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
    fleet.stop()
    await _wait_committed(platform, fleet)
    episodes = fleet.episodes()
    (settings.data_dir / "ground-truth.jsonl").write_text(
        "".join(
            json.dumps(
                {
                    "asset": e.asset,
                    "fault": e.fault.value,
                    "start_ms": e.start_ms,
                    "end_ms": e.end_ms,
                }
            )
            + "\n"
            for e in episodes
        )
    )
    await asyncio.to_thread(_summary, console, platform, api, fleet, shown[2])
    if keep_running and not stop.is_set():
        console.print("\nThe platform keeps running; Ctrl-C stops it.")
        await stop.wait()
    api.close()


DEMO_MODELS = ("temperature-anomaly", "motor-failure")


def _deploy_models(api: FoglineClient, timeout: float = 120.0) -> None:
    """The loop: library models fed by the motors, writing scores and warnings back."""
    t = DEFAULT_TENANT
    for name in DEMO_MODELS:
        api.post(f"/tenants/{t}/library/{name}/import")
        api.put(f"/tenants/{t}/models/{name}/1.0.0/mappings", {"asset_types": [MOTOR_TYPE]})
        api.post(f"/tenants/{t}/models/{name}/1.0.0/deploy")
    deadline = time.monotonic() + timeout
    for name in DEMO_MODELS:
        settled = partial(_deployed_or_failed, api, name)
        model = block_until(settled, deadline - time.monotonic(), interval_s=0.3)
        if model is None or model["state"] != "active":
            reason = model["state_reason"] if model else f"not active within {timeout:.0f}s"
            raise RuntimeError(f"{name} did not deploy: {reason}")


def _deployed_or_failed(api: FoglineClient, name: str) -> dict[str, Any] | None:
    """The model once its deployment has ended: active, or back in draft with the reason."""
    model: dict[str, Any] = api.get(f"/tenants/{DEFAULT_TENANT}/models/{name}/1.0.0")
    return model if model["state"] in ("active", "draft") else None


def _latest(api: FoglineClient, assets: list[str]) -> dict[str, dict[str, Any]]:
    return {
        a: api.get(f"/tenants/{DEFAULT_TENANT}/assets/{a}/telemetry/latest")["values"]
        for a in assets
    }


def _view(
    platform: Platform,
    fleet: VirtualFleet,
    latest: dict[str, dict[str, Any]],
    elapsed: float,
    duration: float,
) -> Group:
    h = platform.historian.stats if platform.historian else None
    faults = ", ".join(f"{a}: {f.value}" for a, f in fleet.active_faults()) or "none"
    header = Table.grid(padding=(0, 2))
    header.add_row("elapsed", f"{elapsed:.0f} / {duration:.0f} s")
    header.add_row("published", f"{fleet.stats.messages} messages, {fleet.stats.values} values")
    header.add_row("committed", f"{h.values if h else 0} values")
    header.add_row("dead letters", f"{h.dead_letters if h else 0} (flaky sensors send 'ERR')")
    header.add_row("active faults", faults)
    motors = Table(title="latest values", expand=False)
    for column in (
        "asset",
        "vibration mm/s",
        "temperature degC",
        "current A",
        "sound dB",
        "temp level",  # temperature-anomaly: warming-up for its first readings, then ok/...
        "failure p",
        "warning",
    ):
        motors.add_column(column)
    for asset, values in latest.items():
        motors.add_row(
            asset,
            *(
                str(values.get(k, {}).get("value", ""))
                for k in (
                    "vibration",
                    "temperature",
                    "current",
                    "sound_level",
                    "temperature_warning",
                    "failure_probability",
                    "failure_warning",
                )
            ),
        )
    return Group(Panel(header, title="Fogline demo"), motors)


async def _wait_committed(platform: Platform, fleet: VirtualFleet, timeout: float = 20.0) -> None:

    async def committed() -> bool:
        h = platform.historian.stats if platform.historian else None
        return h is not None and h.values + h.dead_letters >= fleet.stats.values

    await wait_until(committed, timeout, interval_s=0.2)  # the summary shows what made it


def _summary(
    console: Console, platform: Platform, api: FoglineClient, fleet: VirtualFleet, faulty: str
) -> None:
    t = DEFAULT_TENANT
    stats = api.get(f"/tenants/{t}/ingest/stats")
    history = api.get(
        f"/tenants/{t}/assets/{faulty}/telemetry/history",
        keys="vibration",
        bucket="10s",
        **{"from": "-10m"},
    )
    table = Table(title=f"{faulty}: vibration, 10 s buckets (a bearing fault was injected)")
    for column in ("bucket", "avg", "max", "count"):
        table.add_column(column)
    for b in history["series"].get("vibration", {}).get("buckets", [])[-12:]:
        table.add_row(
            time.strftime("%H:%M:%S", time.localtime(b["ts"] / 1000)),
            f"{b['avg']:.2f}",
            f"{b['max']:.2f}",
            str(b["count"]),
        )
    console.print(table)
    warnings = api.get(
        f"/tenants/{t}/assets/{faulty}/telemetry/history",
        keys="failure_warning,failure_probability",
        **{"from": "-10m"},
    )["series"]
    raised = [p for p in warnings.get("failure_warning", {}).get("points", []) if p[1] != "ok"]
    console.print(
        f"motor-failure on {faulty}: {len(raised)} warning/alarm outputs"
        + (
            f", first at {time.strftime('%H:%M:%S', time.localtime(raised[0][0] / 1000))}"
            if raised
            else ""
        )
    )
    s = platform.settings
    console.print(
        Panel.fit(
            "\n".join(
                [
                    f"published {fleet.stats.messages} messages ({fleet.stats.values} values) "
                    f"from {len(fleet.devices)} devices over MQTT",
                    f"committed {stats['values']} values from {stats['messages']} messages",
                    f"dead letters {stats['dead_letters']}: {stats['dead_letters_by_reason']}",
                    f"faults (ground truth in {s.data_dir / 'ground-truth.jsonl'}): "
                    + (", ".join(f"{e.asset} {e.fault.value}" for e in fleet.episodes()) or "none"),
                    "",
                    "Where to look:",
                    f"  data dir        {s.data_dir}",
                    f"  run it again    fogline up --data-dir {s.data_dir}",
                    f"  then            fogline --data-dir {s.data_dir} telemetry history "
                    f"{faulty} --bucket 10s",
                    f"                  fogline --data-dir {s.data_dir} dead-letters",
                    f"  API docs        {platform.http_url}/api/v1/docs (while it runs)",
                ]
            ),
            title="summary",
        )
    )
