"""The same platform on the machine's own servers: NATS (FOGLINE_NATS_URL), PostgreSQL
(FOGLINE_DATABASE_URL) and Mosquitto bridged in (FOGLINE_MQTT_URL). These servers must be up:
a missing one fails the test."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import nats

from fogline.app.platform import Platform
from tests.conftest import Api, async_wait_for, setup_motor
from tests.mqtt_client import Device

MACHINE_NATS = "nats://127.0.0.1:4222"
MACHINE_MOSQUITTO = "mqtt://127.0.0.1:1883"


async def test_external_nats_postgres_and_mosquitto_bridge(
    platform_settings: Callable[..., Any], postgres_url: str
) -> None:
    # A subject root of its own keeps this run's streams apart from anything else on that NATS.
    root = f"fgt{uuid.uuid4().hex[:8]}"
    settings = platform_settings(
        nats_url=MACHINE_NATS,
        database_url=postgres_url,
        mqtt_url=MACHINE_MOSQUITTO,
        subject_root=root,
    )
    platform = Platform(settings)
    await platform.start()
    api = Api(platform.http_url, platform.bootstrap.admin_key)
    try:
        assert platform.nats is None  # no embedded server in this mode
        info = (await api.http.get("/system")).json()
        assert info["database"] == "postgresql"
        assert info["mqtt"] == MACHINE_MOSQUITTO
        creds = await setup_motor(api)
        assert creds["enforced_by_broker"] is False
        assert creds["topic"] == f"{root}/default/devices/d1/telemetry"

        # A device on Mosquitto (anonymous there), bridged into the platform's stream.
        device = Device("127.0.0.1", 1883, "", "", f"dev-{root}")
        device.client.username_pw_set(None)
        assert not (await asyncio.to_thread(device.connect)).is_failure
        t0 = int(time.time() * 1000) - 5000
        readings = [{"asset": "m1", "ts": t0 + i, "values": {"rpm": i}} for i in range(50)]
        await asyncio.to_thread(device.publish, creds["topic"], readings)
        await asyncio.to_thread(device.publish, creds["topic"], b"garbage")
        device.close()

        async def all_in() -> bool:
            s = (await api.http.get("/tenants/default/ingest/stats")).json()
            return bool(s["values"] == 50 and s["dead_letters"] == 1)

        await async_wait_for(all_in, timeout=30, what="bridged readings in PostgreSQL")
        history = (
            await api.http.get(
                "/tenants/default/assets/m1/telemetry/history",
                params={"keys": "rpm", "from": str(t0), "to": str(t0 + 100)},
            )
        ).json()
        assert [p[1] for p in history["series"]["rpm"]["points"]] == list(range(50))
        assert (await api.http.get("/system")).json()["bridge"]["forwarded"] == 2

        # HTTP ingest goes through the machine's NATS too.
        r = await api.http.post(
            "/tenants/default/devices/d1/telemetry",
            json={"asset": "m1", "ts": t0 + 500, "values": {"rpm": 500}},
        )
        assert r.status_code == 202
        latest = await async_wait_for(lambda: _latest_rpm(api, 500), what="HTTP reading")
        assert latest == 500
    finally:
        await api.close()
        await platform.stop()
        nc = await nats.connect(MACHINE_NATS)
        await nc.jetstream().delete_stream(f"{root.upper()}_TELEMETRY")
        await nc.close()


async def _latest_rpm(api: Api, expected: int) -> int | None:
    r = await api.http.get("/tenants/default/assets/m1/telemetry/latest")
    value = r.json()["values"].get("rpm", {}).get("value")
    return value if value == expected else None
