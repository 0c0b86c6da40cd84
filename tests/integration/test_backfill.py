"""Issue 9, S16: no input stops the historian. A backfill of 500,000 readings of one asset, over
HTTP and over MQTT, ends up whole in history (every timestamp, every value), with its live
events under the payload limit; a message the database refuses is split out of its batch as a
dead letter; a historian that dies or stalls is restarted, and `/api/v1/ready` says so."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import time
from typing import Any

import httpx
import orjson

from tests.conftest import Api, async_wait_for, setup_motor
from tests.mqtt_client import Device

READINGS = 500_000
PER_MESSAGE = 4_000  # about 224 KB of JSON: under the 256 KiB message limit
TOPIC = "fogline/default/devices/d1/telemetry"


def backfill_start() -> int:
    """Whole seconds, so that 500,000 readings one second apart end before now."""
    return (int(time.time()) - READINGS - 3600) * 1000


def messages(t0: int) -> list[bytes]:
    return [
        orjson.dumps(
            [
                {"asset": "m1", "ts": t0 + i * 1000, "values": {"rpm": i}}
                for i in range(start, min(start + PER_MESSAGE, READINGS))
            ]
        )
        for start in range(0, READINGS, PER_MESSAGE)
    ]


class LiveCounter:
    """Every live event of m1, read straight from the bus: what companions and SSE get."""

    def __init__(self) -> None:
        self.readings = 0
        self.events = 0
        self.largest = 0

    async def on_event(self, msg: Any) -> None:
        self.events += 1
        self.largest = max(self.largest, len(msg.data))
        self.readings += len(orjson.loads(msg.data)["readings"])


async def listen_live(platform: Any) -> LiveCounter:
    counter = LiveCounter()
    await platform.bus.nc.subscribe(platform.subjects.live("default", "m1"), cb=counter.on_event)
    return counter


async def values_committed(api: Api) -> int:
    r = await api.http.get("/tenants/default/ingest/stats")
    return int(r.json()["values"])


async def historian_stats(api: Api, **at_least: int) -> dict[str, Any] | None:
    """The historian's own counters (reported every second) once they have caught up."""
    stats: dict[str, Any] = (await api.http.get("/system")).json()["historian"]
    return stats if all(stats[k] >= n for k, n in at_least.items()) else None


async def assert_all_in_history(api: Api, t0: int) -> None:
    """Every reading, read back page by page: each timestamp once, each with its own value."""
    seen: list[tuple[int, int]] = []
    start, end = t0, t0 + READINGS * 1000
    while start < end:
        r = await api.http.get(
            "/tenants/default/assets/m1/telemetry/history",
            params={"keys": "rpm", "from": str(start), "to": str(end), "limit": 100_000},
        )
        assert r.status_code == 200, r.text
        points = r.json()["series"]["rpm"]["points"]
        if not points:
            break
        seen.extend((ts, value) for ts, value in points)
        start = points[-1][0] + 1
    assert len(seen) == READINGS
    assert seen == [(t0 + i * 1000, i) for i in range(READINGS)]


async def wait_backfilled(platform: Any, api: Api, live: LiveCounter, t0: int) -> None:
    async def done() -> bool:
        return await values_committed(api) >= READINGS and live.readings >= READINGS

    await async_wait_for(done, timeout=240, what="500,000 readings committed and live")
    assert await values_committed(api) == READINGS
    assert live.readings == READINGS  # no live event lost, none sent twice
    assert live.largest <= 256 * 1024 < platform.bus.nc.max_payload
    await assert_all_in_history(api, t0)
    stats = await async_wait_for(lambda: historian_stats(api, values=READINGS), what="stats")
    assert stats["failures"] == 0 and stats["poison_messages"] == 0, stats
    assert (await api.http.get("/ready")).status_code == 200


async def test_backfill_of_500k_readings_over_http(platform: Any, api: Api) -> None:
    creds = await setup_motor(api)
    live = await listen_live(platform)
    t0 = backfill_start()
    url = "/tenants/default/devices/d1/telemetry"
    auth = httpx.BasicAuth(creds["username"], creds["password"])
    bodies = messages(t0)
    async with httpx.AsyncClient(base_url=api.base + "/api/v1", auth=auth, timeout=60) as device:

        async def post(chunk: list[bytes]) -> None:
            for body in chunk:
                r = await device.post(url, content=body)
                assert r.status_code == 202, r.text
                assert r.json()["accepted_values"] == PER_MESSAGE

        # Four requests in flight: faster than the historian commits, as in the review.
        await asyncio.gather(*(post(bodies[k::4]) for k in range(4)))
    await wait_backfilled(platform, api, live, t0)


async def test_backfill_of_500k_readings_over_mqtt(platform: Any, api: Api) -> None:
    creds = await setup_motor(api)
    live = await listen_live(platform)
    t0 = backfill_start()
    host, port = platform.nats.mqtt_address
    device = Device(host, port, creds["username"], creds["password"], "d1")
    device.client.max_inflight_messages_set(200)
    assert not (await asyncio.to_thread(device.connect)).is_failure

    def publish_all() -> None:
        # QoS 1, all in flight at once; each PUBACK is awaited.
        infos = [device.client.publish(TOPIC, body, qos=1) for body in messages(t0)]
        for info in infos:
            info.wait_for_publish(60)
            assert info.is_published()

    await asyncio.to_thread(publish_all)
    device.close()
    await wait_backfilled(platform, api, live, t0)


def refuse_in_sqlite(platform: Any, rpm: int) -> None:
    """A database that refuses one row: a real trigger in the platform's own SQLite, the kind of
    failure no validation can foresee (a constraint, a storage limit)."""
    path = platform.settings.data_dir / "fogline.db"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TRIGGER refuse_one BEFORE INSERT ON readings "
            f"WHEN json_extract(NEW.values_json, '$.rpm') = {rpm} "
            "BEGIN SELECT RAISE(ABORT, 'refused by the database'); END"
        )


async def test_a_message_the_database_refuses_is_split_out_as_a_dead_letter(
    platform: Any, api: Api
) -> None:
    creds = await setup_motor(api)
    refuse_in_sqlite(platform, rpm=666_666)
    host, port = platform.nats.mqtt_address
    device = Device(host, port, creds["username"], creds["password"], "d1")
    device.client.max_inflight_messages_set(200)
    assert not (await asyncio.to_thread(device.connect)).is_failure
    t0 = int(time.time() * 1000) - 600_000
    # 200 messages in flight, so the historian fetches them as a few large batches; one in the
    # middle carries the reading the database refuses.
    payloads = [
        [{"asset": "m1", "ts": t0 + m * 10 + i, "values": {"rpm": m * 10 + i}} for i in range(10)]
        for m in range(200)
    ]
    payloads[137][3]["values"]["rpm"] = 666_666

    def publish_all() -> None:
        infos = [device.client.publish(TOPIC, orjson.dumps(p), qos=1) for p in payloads]
        for info in infos:
            info.wait_for_publish(30)

    await asyncio.to_thread(publish_all)
    device.close()

    async def settled() -> dict[str, Any] | None:
        s = (await api.http.get("/tenants/default/ingest/stats")).json()
        return s if s["messages"] == 200 else None

    s = await async_wait_for(settled, timeout=60, what="all 200 messages handled")
    # Only the message with the refused reading is lost, and it is kept as a dead letter.
    assert s["values"] == 199 * 10
    assert s["dead_letters_by_reason"] == {"unprocessable": 1}
    letter = (await api.http.get("/tenants/default/dead-letters")).json()["items"][0]
    assert "refused by the database" in letter["reason"]
    assert '"rpm":666666' in letter["payload"].replace(" ", "")
    history = (
        await api.http.get(
            "/tenants/default/assets/m1/telemetry/history",
            params={"keys": "rpm", "from": str(t0), "to": str(t0 + 2000)},
        )
    ).json()
    rpms = [p[1] for p in history["series"]["rpm"]["points"]]
    assert rpms == [n for n in range(2000) if not 1370 <= n < 1380]
    # Counted and shown (the historian reports every second): the failures, the poison
    # message, and what failed.
    stats = await async_wait_for(lambda: historian_stats(api, messages=200), what="stats")
    assert stats["poison_messages"] == 1 and stats["failures"] >= 2, stats
    assert "refused by the database" in stats["last_failure"]
    ready = await api.http.get("/ready")
    assert ready.status_code == 200  # it recovered
    historian = ready.json()["checks"]["historian"]
    assert historian["poison_messages"] == 1 and historian["failures"] >= 2
    assert historian["last_failure"] == "commit: IntegrityError"


async def test_a_dead_or_stalled_historian_is_restarted_and_shown(platform: Any, api: Api) -> None:
    await setup_motor(api)
    supervisor = platform.historian
    supervisor.not_reporting_s = 2.0
    supervisor.stalled_s = 4.0
    assert (await api.http.get("/ready")).status_code == 200

    async def ready_again() -> bool:
        return (await api.http.get("/ready")).status_code == 200

    # Stalled: the process is there but does nothing (SIGSTOP).
    pid = supervisor.pid
    os.kill(pid, signal.SIGSTOP)

    async def not_ready() -> dict[str, Any] | None:
        r = await api.http.get("/ready")
        return r.json() if r.status_code == 503 else None

    problem = await async_wait_for(not_ready, timeout=20, what="/ready to report the stall")
    assert problem["type"] and problem["status"] == 503
    assert problem["checks"]["historian"]["state"] in ("not-reporting", "stalled", "restarting")
    await async_wait_for(ready_again, timeout=60, what="the stalled historian to be restarted")
    assert supervisor.pid != pid and supervisor.restarts == 1
    assert supervisor.last_restart_reason.startswith("stalled")

    # Dead: SIGKILL.
    os.kill(supervisor.pid, signal.SIGKILL)
    await async_wait_for(not_ready, timeout=20, what="/ready to report the dead historian")
    await async_wait_for(ready_again, timeout=60, what="the historian to be restarted")
    assert supervisor.restarts == 2
    # And it makes progress.
    r = await api.http.post(
        "/tenants/default/devices/d1/telemetry",
        json={"asset": "m1", "ts": int(time.time() * 1000) - 1000, "values": {"rpm": 5}},
    )
    assert r.status_code == 202

    async def stored() -> bool:
        return await values_committed(api) == 1

    await async_wait_for(stored, timeout=30, what="a reading after the restarts")
    health = (await api.http.get("/ready")).json()["checks"]["historian"]
    assert health["restarts"] == 2 and health["state"] == "running"


async def test_what_postgresql_cannot_store_is_refused_precisely(
    platform_settings: Any, postgres_url: str
) -> None:
    """Inputs that validation let through and PostgreSQL refused (a NUL character, an asset
    name wider than the dead-letter column) stopped the historian for good on PostgreSQL; now
    each is a precise dead letter and its neighbours are stored."""
    from fogline.app.platform import Platform

    platform = Platform(platform_settings(database_url=postgres_url))
    await platform.start()
    api = Api(platform.http_url, platform.bootstrap.admin_key)
    try:
        await setup_motor(api)
        t0 = int(time.time() * 1000) - 60_000
        url = "/tenants/default/devices/d1/telemetry"
        bodies = [
            orjson.dumps(
                [
                    {"asset": "m1", "ts": t0, "values": {"state": "a\u0000b", "rpm": 1}},
                    {"asset": "x" * 300, "ts": t0 + 1, "values": {"rpm": 2}},
                    {"asset": "m1", "ts": t0 + 2, "values": {"rpm": 3, "\u0000": 1}},
                ]
            ),
            b"\x00 not json",
            orjson.dumps({"asset": "m1", "ts": t0 + 3, "values": {"rpm": 4}}),
        ]
        for body in bodies:
            r = await api.http.post(url, content=body)
            assert r.status_code == 202, r.text

        async def settled() -> dict[str, Any] | None:
            s = (await api.http.get("/tenants/default/ingest/stats")).json()
            # A message that is not JSON is a dead letter, not a stored message: wait for both
            # counts, as the letters and the messages are counted in different commits.
            letters = sum(s["dead_letters_by_reason"].values())
            return s if s["messages"] == 3 and letters == 4 else None

        s = await async_wait_for(settled, what="three messages and four letters on PostgreSQL")
        assert s["values"] == 3
        assert s["dead_letters_by_reason"] == {
            "out-of-range": 1,
            "unknown-asset": 1,
            "unknown-telemetry": 1,
            "not-json": 1,
        }
        items = (await api.http.get("/tenants/default/dead-letters")).json()["items"]
        assert {len(i["asset"] or "") for i in items} == {0, 2, 200}
        assert all("\u0000" not in (i["payload"] or "") for i in items)
        history = (
            await api.http.get(
                "/tenants/default/assets/m1/telemetry/history",
                params={"keys": "rpm", "from": str(t0), "to": str(t0 + 10)},
            )
        ).json()
        assert [p[1] for p in history["series"]["rpm"]["points"]] == [1, 3, 4]
        stats = await async_wait_for(lambda: historian_stats(api, messages=3), what="stats")
        assert stats["failures"] == 0 and stats["poison_messages"] == 0
    finally:
        await api.close()
        await platform.stop()
