"""The platform on real servers: MQTT devices to queryable history, live, and dead letters."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import httpx
import orjson

from tests.conftest import Api, async_wait_for, setup_motor
from tests.mqtt_client import Device

TOPIC = "fogline/default/devices/d1/telemetry"


async def connect_device(platform: Any, creds: dict[str, Any], client_id: str = "d1") -> Device:
    host, port = platform.nats.mqtt_address
    device = Device(host, port, creds["username"], creds["password"], client_id)
    reason = await asyncio.to_thread(device.connect)
    assert not reason.is_failure, reason
    return device


async def stats(api: Api) -> dict[str, Any]:
    r = await api.http.get("/tenants/default/ingest/stats")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_mqtt_readings_reach_latest_and_history(platform: Any, api: Api) -> None:
    creds = await setup_motor(api)
    assert creds["topic"] == TOPIC and creds["enforced_by_broker"] is True
    device = await connect_device(platform, creds)
    t0 = int(time.time() * 1000) - 60_000
    batch = [
        {
            "asset": "m1",
            "ts": t0 + i * 1000,
            "values": {
                "temperature": 20.0 + i,
                "rpm": 1000 + i,
                "running": i % 2 == 0,
                "state": f"s{i}",
            },
        }
        for i in range(30)
    ]
    await asyncio.to_thread(device.publish, TOPIC, batch)
    await asyncio.to_thread(device.publish, TOPIC, {"asset": "m1", "values": {"rpm": 7}})
    device.close()

    async def latest_rpm() -> Any:
        r = await api.http.get("/tenants/default/assets/m1/telemetry/latest")
        return r.json()["values"].get("rpm", {}).get("value") == 7 and r.json()

    latest = await async_wait_for(latest_rpm, what="latest rpm")
    assert latest["values"]["temperature"]["value"] == 49.0
    assert latest["values"]["running"]["value"] is False
    assert latest["values"]["state"]["value"] == "s29"

    r = await api.http.get(
        "/tenants/default/assets/m1/telemetry/history",
        params={"keys": "temperature,running", "from": str(t0), "to": str(t0 + 30_000)},
    )
    series = r.json()["series"]
    assert [p[1] for p in series["temperature"]["points"]] == [20.0 + i for i in range(30)]
    assert series["temperature"]["unit"] == "degC"
    assert series["running"]["points"][0] == [t0, True]

    r = await api.http.get(
        "/tenants/default/assets/m1/telemetry/history",
        params={"keys": "temperature", "from": str(t0), "to": str(t0 + 30_000), "bucket": "10s"},
    )
    buckets = r.json()["series"]["temperature"]["buckets"]
    assert sum(b["count"] for b in buckets) == 30
    assert {b["min"] for b in buckets} <= {20.0 + i for i in range(30)}
    assert max(b["max"] for b in buckets) == 49.0


async def test_bad_messages_become_dead_letters_and_nothing_valid_is_lost(
    platform: Any, api: Api
) -> None:
    creds = await setup_motor(api)
    device = await connect_device(platform, creds)
    t0 = int(time.time() * 1000) - 10_000
    await asyncio.to_thread(device.publish, TOPIC, b"\x00not json")
    await asyncio.to_thread(
        device.publish,
        TOPIC,
        [
            {"asset": "m1", "ts": t0, "values": {"temperature": 21.0}},
            {"asset": "m1", "ts": t0 + 1, "values": {"temperature": "hot", "rpm": 5}},
            {"asset": "ghost", "ts": t0 + 2, "values": {"rpm": 1}},
            {"asset": "m1", "ts": t0 + 3, "values": {"temperature": 999.0, "bogus": 1}},
            {"asset": "m1", "ts": t0 + 4, "values": {"temperature": 23.0}},
        ],
    )
    await asyncio.to_thread(device.publish, TOPIC, "x" * (300 * 1024))
    device.close()
    # The two counters are read one after the other: wait for both to settle.
    s = await async_wait_for(lambda: _dead(api, 6, values=3), what="six dead letters, 3 values")
    reasons = s["dead_letters_by_reason"]
    assert reasons == {
        "not-json": 1,
        "wrong-type": 1,
        "unknown-asset": 1,
        "out-of-range": 1,
        "unknown-telemetry": 1,
        "too-large": 1,
    }
    assert s["values"] == 3  # 21.0, rpm=5, 23.0
    r = await api.http.get("/tenants/default/dead-letters", params={"device": "d1"})
    items = r.json()["items"]
    assert {i["reason_code"] for i in items} == set(reasons)
    wrong = next(i for i in items if i["reason_code"] == "wrong-type")
    assert (wrong["asset"], wrong["telemetry"], wrong["item"]) == ("m1", "temperature", 1)
    assert "hot" in wrong["payload"]
    r = await api.http.get(
        "/tenants/default/assets/m1/telemetry/history",
        params={"from": str(t0), "to": str(t0 + 10)},
    )
    series = r.json()["series"]
    assert [p[1] for p in series["temperature"]["points"]] == [21.0, 23.0]
    assert [p[1] for p in series["rpm"]["points"]] == [5]


async def _dead(api: Api, count: int, values: int = 0) -> dict[str, Any] | None:
    s = await stats(api)
    return s if s["dead_letters"] >= count and s["values"] >= values else None


async def _values(api: Api, count: int) -> bool:
    return bool((await stats(api))["values"] >= count)


async def test_http_ingest_with_device_credentials_or_api_key(platform: Any, api: Api) -> None:
    creds = await setup_motor(api)
    url = "/tenants/default/devices/d1/telemetry"
    basic = base64.b64encode(f"{creds['username']}:{creds['password']}".encode()).decode()
    t0 = int(time.time() * 1000) - 5_000
    async with httpx.AsyncClient(base_url=api.base + "/api/v1") as anon:
        r = await anon.post(
            url,
            content=json.dumps({"asset": "m1", "ts": t0, "values": {"rpm": 1}}),
            headers={"Authorization": f"Basic {basic}"},
        )
        assert r.status_code == 202, r.text
        assert r.json()["accepted_values"] == 1
        wrong = base64.b64encode(f"{creds['username']}:nope".encode()).decode()
        r = await anon.post(url, content=b"{}", headers={"Authorization": f"Basic {wrong}"})
        assert r.status_code == 401
        assert r.headers["content-type"] == "application/problem+json"
    body = json.dumps({"asset": "m1", "ts": t0 + 1, "values": {"rpm": 2, "temperature": "x"}})
    first = await api.http.post(url, content=body, headers={"Idempotency-Key": "k-1"})
    again = await api.http.post(url, content=body, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == again.status_code == 202
    assert first.json()["rejected"][0]["reason_code"] == "wrong-type"
    assert (first.json()["duplicate"], again.json()["duplicate"]) == (False, True)
    big = await api.http.post(url, content=b"[" + b" " * (300 * 1024) + b"]")
    assert big.status_code == 413
    assert big.headers["content-type"] == "application/problem+json"
    s = await async_wait_for(lambda: _dead(api, 2), what="dead letters")
    await async_wait_for(lambda: _values(api, 2), what="two values")
    s = await stats(api)
    assert s["values"] == 2
    # The retried request (same Idempotency-Key) was stored, and refused in part, once.
    assert s["dead_letters_by_reason"] == {"wrong-type": 1, "too-large": 1}
    # Two readings without a time in one message land on one (asset, ts): one value is stored,
    # and that is what the answer and the counters say.
    twice = [{"asset": "m1", "values": {"rpm": 5}}, {"asset": "m1", "values": {"rpm": 6}}]
    r = await api.http.post(url, content=json.dumps(twice))
    assert (r.json()["accepted_values"], r.json()["merged_values"]) == (1, 1)
    await async_wait_for(lambda: _values(api, 3), what="one more value")
    assert (await stats(api))["values"] == 3


async def test_live_stream_delivers_committed_readings(platform: Any, api: Api) -> None:
    creds = await setup_motor(api)
    device = await connect_device(platform, creds)
    t0 = int(time.time() * 1000)
    events: list[dict[str, Any]] = []
    async with api.http.stream("GET", "/tenants/default/assets/m1/telemetry/live") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.aiter_lines()
        async for line in lines:
            if line.startswith("event: subscribed"):
                break
        await asyncio.to_thread(
            device.publish, TOPIC, {"asset": "m1", "ts": t0, "values": {"temperature": 42.5}}
        )
        async with asyncio.timeout(15):
            async for line in lines:
                if line.startswith("data:") and "readings" in line:
                    events.append(orjson.loads(line[5:]))
                    break
    device.close()
    assert events[0]["asset"] == "m1"
    assert events[0]["readings"] == [{"ts": t0, "values": {"temperature": 42.5}}]
