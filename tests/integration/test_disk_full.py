"""Issue 11, point 1: nothing is acknowledged that is not stored when the disk fills.

The data dir lives on a small tmpfs (mounted here; the test needs root for that and is skipped,
saying so, where it cannot mount). A device publishes QoS 1 readings and every PUBACK is
recorded; the data (and a ballast file) fill the filesystem; the platform must refuse new data
before the disk is full (devices refused, HTTP 503 with Retry-After, `ready` false saying why),
take data again by itself once space is freed, and in the end every acknowledged reading must
be stored.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from fogline.app.platform import Platform
from tests.conftest import Api, async_wait_for, setup_motor, stored_numbers
from tests.mqtt_client import Device, RecordingDevice

MiB = 1024 * 1024
FS_SIZE = 160 * MiB
RESERVE = 16 * MiB


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "fs"
    mount_point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root; run as root to test a full disk")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={FS_SIZE}", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


@pytest.fixture
async def platform_on_small_fs(
    small_fs: Path, platform_settings: Any
) -> AsyncIterator[tuple[Platform, Api]]:
    platform = Platform(platform_settings(data_dir=small_fs / "data", disk_reserve="16MiB"))
    await platform.start()
    api = Api(platform.http_url, platform.bootstrap.admin_key)
    try:
        yield platform, api
    finally:
        await api.close()
        await platform.stop()


async def test_a_filling_disk_refuses_data_before_it_is_full_and_loses_nothing(
    small_fs: Path, platform_on_small_fs: tuple[Platform, Api]
) -> None:
    platform, api = platform_on_small_fs
    creds = await setup_motor(api)
    ballast = small_fs / "ballast"
    # Leave 30 MiB above the reserve; the readings take it from there.
    free = os.statvfs(small_fs).f_bavail * os.statvfs(small_fs).f_frsize
    subprocess.run(["fallocate", "-l", str(free - RESERVE - 30 * MiB), str(ballast)], check=True)

    assert platform.nats is not None
    host, port = platform.nats.mqtt_address
    device = RecordingDevice(host, port, creds, rate=400)
    try:
        device.start()

        async def refusing() -> dict[str, Any] | None:
            r = await api.http.get("/ready")
            disk = r.json().get("checks", {}).get("disk", {})
            return r.json() if r.status_code == 503 and disk.get("refusing") else None

        state = await async_wait_for(refusing, timeout=90, what="the platform refusing data")
        assert "reserve" in state["detail"]
        # HTTP ingest is refused as well, with a time to come back, and stores nothing.
        r = await api.http.post(
            "/tenants/default/devices/d1/telemetry",
            json={"asset": "m1", "ts": device.t0 - 1, "values": {"rpm": -1}},
        )
        assert r.status_code == 503, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert int(r.headers["retry-after"]) > 0
        # The device is refused (connections closed, logins refused): what it sends now waits
        # unacknowledged on the device.
        acked_at_refusal = len(device.acked)

        async def device_held_back() -> bool:
            return device.unacked() > 50 and device.refused_connects > 0

        await async_wait_for(device_held_back, timeout=30, what="the device held back")
        system = (await api.http.get("/system")).json()
        assert system["disk"]["refusing"] and system["disk"]["refusals"] == 1
        metrics = (await api.http.get("/metrics")).text
        assert "fogline_disk_refusing 1.0" in metrics
        assert 'fogline_part_ok{part="disk"} 0.0' in metrics
        assert "fogline_disk_refusals_total 1.0" in metrics

        ballast.unlink()  # room again: no restart, the platform takes data by itself

        async def taking_data() -> bool:
            return (await api.http.get("/ready")).status_code == 200

        await async_wait_for(taking_data, timeout=30, what="the platform taking data again")
        await async_wait_for(
            lambda: len(device.acked) > acked_at_refusal + 100,
            timeout=30,
            what="the device's held-back readings acknowledged",
        )
        device.stop_publishing()
        await async_wait_for(
            lambda: device.unacked() == 0, timeout=60, what="every reading acknowledged"
        )
        acked = set(device.acked)

        async def all_stored() -> list[int] | None:
            numbers = await stored_numbers(api, device.t0, device.sent)
            return numbers if acked <= set(numbers) else None

        numbers = await async_wait_for(all_stored, timeout=60, what="every acked reading stored")
        lost = acked - set(numbers)
        assert not lost, f"{len(lost)} acknowledged readings lost"
        assert len(numbers) == len(set(numbers)), "a reading stored twice"
        r = await api.http.get("/tenants/default/telemetry/latest", params={"keys": "rpm"})
        assert r.status_code in (200, 404)
        assert platform.nats.restarts == 0  # nothing was restarted to take data again
    finally:
        device.close()


async def test_a_disk_filled_at_once_is_noticed_and_recovered_without_a_restart(
    small_fs: Path, platform_on_small_fs: tuple[Platform, Api]
) -> None:
    """Something else takes the last byte at once: nats-server's writes fail (it keeps that
    error until it restarts). The platform notices from nats-server's log, refuses data, and
    once there is room restarts its broker and takes data again, with no one's help. (What
    nats-server acknowledged in the tenth of a second before the refusal is lost: its MQTT
    listener acknowledges before the write; `fogline bench faults` measures it.)"""
    platform, api = platform_on_small_fs
    creds = await setup_motor(api)
    assert platform.nats is not None
    host, port = platform.nats.mqtt_address
    device = RecordingDevice(host, port, creds, rate=200)
    ballast = small_fs / "ballast"
    try:
        device.start()
        await async_wait_for(lambda: len(device.acked) > 200, what="readings flowing")
        # Everything left, in one go (dd stops at the first "no space left").
        await asyncio.to_thread(
            subprocess.run,
            ["dd", "if=/dev/zero", f"of={ballast}", "bs=4M"],
            capture_output=True,
        )

        async def refusing() -> bool:
            return (await api.http.get("/ready")).status_code == 503

        await async_wait_for(refusing, timeout=30, what="the platform refusing data")
        ballast.unlink()

        async def recovered() -> dict[str, Any] | None:
            r = await api.http.get("/ready")
            return r.json() if r.status_code == 200 else None

        await async_wait_for(recovered, timeout=60, what="the platform taking data again")
        before = len(device.acked)
        await async_wait_for(
            lambda: len(device.acked) > before + 200, what="readings flowing again"
        )
        disk = (await api.http.get("/system")).json()["disk"]
        assert disk["refusals"] >= 1 and disk["store_failure"] is None
    finally:
        device.close()


async def test_the_bridge_leaves_its_broker_while_refusing_and_takes_what_it_kept(
    small_fs: Path, platform_settings: Any
) -> None:
    """With an external broker bridged in (the machine's Mosquitto), refusing data means
    leaving that broker: its persistent session keeps the bridge's QoS 1 messages, and they
    are all stored once the platform takes data again."""
    root = f"fgt{uuid.uuid4().hex[:8]}"
    settings = platform_settings(
        data_dir=small_fs / "data",
        disk_reserve="16MiB",
        mqtt_url="mqtt://127.0.0.1:1883",
        subject_root=root,
    )
    platform = Platform(settings)
    await platform.start()
    api = Api(platform.http_url, platform.bootstrap.admin_key)
    device = Device("127.0.0.1", 1883, "", "", f"dev-{root}")
    device.client.username_pw_set(None)
    try:
        creds = await setup_motor(api)
        assert not (await asyncio.to_thread(device.connect)).is_failure
        t0 = int(time.time() * 1000) - 60_000
        ballast = small_fs / "ballast"
        free = os.statvfs(small_fs).f_bavail * os.statvfs(small_fs).f_frsize
        subprocess.run(["fallocate", "-l", str(free - 8 * MiB), str(ballast)], check=True)

        async def paused() -> bool:
            system = (await api.http.get("/system")).json()
            return bool(system["bridge"]["paused"])

        await async_wait_for(paused, what="the bridge off its broker")
        for n in range(50):  # Mosquitto acknowledges them and keeps them for the bridge
            reading = {"asset": "m1", "ts": t0 + n, "values": {"rpm": n}}
            await asyncio.to_thread(device.publish, creds["topic"], orjson.dumps(reading))
        assert (await api.http.get("/system")).json()["bridge"]["forwarded"] == 0
        ballast.unlink()

        async def all_stored() -> bool:
            return sorted(await stored_numbers(api, t0, 50)) == list(range(50))

        await async_wait_for(all_stored, timeout=60, what="the kept messages stored")
        assert not (await api.http.get("/system")).json()["bridge"]["paused"]
    finally:
        device.close()
        await api.close()
        await platform.stop()
