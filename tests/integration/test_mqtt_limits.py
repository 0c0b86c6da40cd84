"""Issue 9, S7 and S13 over real MQTT: client ids are a tenant's own namespace; messages over the
limit end as `too-large` dead letters (with a PUBACK, or with the connection closed when
nats-server cannot take them, never silently); a non-finite number refuses only its value; one
message gives at most 101 dead letters. Through the embedded nats-server and through the
machine's Mosquitto bridged in."""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson

from fogline.app.platform import Platform
from tests.conftest import Api, async_wait_for, setup_motor
from tests.integration.test_security import make_tenant
from tests.mqtt_client import Device

MACHINE_MOSQUITTO = "mqtt://127.0.0.1:1883"
MiB = 1024 * 1024


def device_of(platform: Any, creds: dict[str, Any], client_id: str) -> Device:
    host, port = platform.nats.mqtt_address
    return Device(host, port, creds["username"], creds["password"], client_id)


async def ingest_stats(api: Api, tenant: str = "default") -> dict[str, Any]:
    body: dict[str, Any] = (await api.http.get(f"/tenants/{tenant}/ingest/stats")).json()
    return body


async def published(device: Device, topic: str, payload: bytes, timeout: float = 15) -> bool:
    """Publish with QoS 1 and say whether the PUBACK came."""
    info = device.client.publish(topic, payload, qos=1)
    await asyncio.to_thread(info.wait_for_publish, timeout)
    return bool(info.is_published())


async def test_one_client_id_in_two_tenants_never_displaces_a_session(
    platform: Any, api: Api
) -> None:
    acme = await make_tenant(api, "acme")
    beta = await make_tenant(api, "beta")
    a_creds = await setup_motor(acme, tenant="acme", asset="m1", device="gw1")
    b_creds = await setup_motor(beta, tenant="beta", asset="m1", device="gw1")
    a = device_of(platform, a_creds, "gw1")
    b = device_of(platform, b_creds, "gw1")  # the same client id, in another tenant
    assert not (await asyncio.to_thread(a.connect)).is_failure
    assert not (await asyncio.to_thread(b.connect)).is_failure
    t0 = int(time.time() * 1000) - 1000
    for n in range(5):  # alternating, each on its first and only connection
        for device, creds in ((b, b_creds), (a, a_creds)):
            reading = {"asset": "m1", "ts": t0 + n, "values": {"rpm": n}}
            assert await published(device, creds["topic"], orjson.dumps(reading))
    assert a.disconnects == [] and b.disconnects == []
    assert a.client.is_connected() and b.client.is_connected()
    a.close()
    b.close()
    for tenant_api, tenant in ((acme, "acme"), (beta, "beta")):

        async def stored(tenant_api: Api = tenant_api, tenant: str = tenant) -> bool:
            return (await ingest_stats(tenant_api, tenant))["values"] == 5

        await async_wait_for(stored, what=f"{tenant}'s five readings")
    await acme.close()
    await beta.close()


async def test_mqtt_message_over_the_limit_is_acked_and_dead_lettered(
    platform: Any, api: Api
) -> None:
    creds = await setup_motor(api)
    device = device_of(platform, creds, "d1")
    assert not (await asyncio.to_thread(device.connect)).is_failure
    big = b'{"asset": "m1", "values": {"state": "' + b"x" * (2 * MiB) + b'"}}'
    assert await published(device, creds["topic"], big)  # a PUBACK, not a closed connection
    ok = orjson.dumps({"asset": "m1", "ts": int(time.time() * 1000) - 10, "values": {"rpm": 1}})
    assert await published(device, creds["topic"], ok)
    assert device.disconnects == []
    device.close()

    async def settled() -> dict[str, Any] | None:
        s = await ingest_stats(api)
        return s if s["values"] == 1 and s["dead_letters"] == 1 else None

    s = await async_wait_for(settled, what="the big message refused, the next one stored")
    assert s["dead_letters_by_reason"] == {"too-large": 1}
    letter = (await api.http.get("/tenants/default/dead-letters")).json()["items"][0]
    assert letter["reason"].startswith(f"message is {len(big)} bytes")
    assert len(letter["payload"]) <= 2049


async def test_mqtt_message_over_the_broker_limit_closes_the_connection_with_a_dead_letter(
    platform: Any, api: Api
) -> None:
    creds = await setup_motor(api)
    device = device_of(platform, creds, "d1")
    assert not (await asyncio.to_thread(device.connect)).is_failure
    huge = b"[" + b" " * (9 * MiB) + b"]"  # over nats-server's 8 MiB
    device.client.publish(creds["topic"], huge, qos=1)

    async def refused() -> dict[str, Any] | None:
        s = await ingest_stats(api)
        return s if s["dead_letters"] >= 1 else None

    s = await async_wait_for(refused, what="a too-large dead letter for the closed connection")
    assert s["dead_letters_by_reason"] == {"too-large": 1}
    letter = (await api.http.get("/tenants/default/dead-letters")).json()["items"][0]
    assert "over the broker's limit of 8388608 bytes" in letter["reason"]
    assert "closed the connection" in letter["reason"] and letter["device"] == "d1"
    # MQTT 3.1.1 has no other refusal: paho sends it again on each reconnect, and each time the
    # connection is closed; within a minute the repeats are counted, not more dead letters.
    await async_wait_for(lambda: len(device.disconnects) >= 3, what="two more attempts")
    device.close()
    await async_wait_for(lambda: platform.oversize.repeats_pending() >= 2, what="the repeats")
    assert (await ingest_stats(api))["dead_letters"] == 1


async def test_non_finite_values_and_floods_of_refusals_over_mqtt(platform: Any, api: Api) -> None:
    creds = await setup_motor(api)
    device = device_of(platform, creds, "d1")
    assert not (await asyncio.to_thread(device.connect)).is_failure
    t0 = int(time.time() * 1000) - 60_000
    # A device library that writes NaN: only that value is refused.
    with_nan = (
        b'[{"asset": "m1", "ts": %d, "values": {"temperature": NaN, "rpm": 7}},'
        b' {"asset": "m1", "ts": %d, "values": {"temperature": 21.5}}]' % (t0, t0 + 1)
    )
    assert await published(device, creds["topic"], with_nan)
    # The review's 230 KB message: 3,000 readings, each with two bad values and a good one.
    flood = orjson.dumps(
        [
            {"asset": "m1", "ts": t0 + 10 + i, "values": {"temperature": "hot", "x": 1, "rpm": i}}
            for i in range(3000)
        ]
    )
    assert len(flood) < 256 * 1024
    assert await published(device, creds["topic"], flood)
    device.close()

    async def settled() -> dict[str, Any] | None:
        s = await ingest_stats(api)
        return s if s["values"] == 3002 else None

    s = await async_wait_for(settled, what="every valid value")
    assert s["dead_letters_by_reason"] == {"wrong-type": 51, "unknown-telemetry": 50, "capped": 1}
    items = (await api.http.get("/tenants/default/dead-letters", params={"limit": 500})).json()
    capped = next(i for i in items["items"] if i["reason_code"] == "capped")
    assert capped["reason"].startswith("5900 more refusals")
    nan = next(i for i in items["items"] if i["payload"] == '{"temperature":"NaN"}')
    assert (nan["reason_code"], nan["item"]) == ("wrong-type", 0)
    latest = (await api.http.get("/tenants/default/assets/m1/telemetry/latest")).json()
    assert latest["values"]["temperature"]["value"] == 21.5


async def test_bridged_messages_over_the_limit_are_refused_not_redelivered_forever(
    platform_settings: Callable[..., Any],
) -> None:
    root = f"fgt{uuid.uuid4().hex[:8]}"
    platform = Platform(platform_settings(mqtt_url=MACHINE_MOSQUITTO, subject_root=root))
    await platform.start()
    api = Api(platform.http_url, platform.bootstrap.admin_key)
    try:
        assert platform.bridge is not None
        creds = await setup_motor(api)
        device = Device("127.0.0.1", 1883, "", "", f"dev-{root}")
        device.client.username_pw_set(None)
        assert not (await asyncio.to_thread(device.connect)).is_failure
        t0 = int(time.time() * 1000) - 5000
        big = b"[" + b" " * (300 * 1024) + b"]"  # over max_message_bytes
        huge = b"[" + b" " * (9 * MiB) + b"]"  # over the platform NATS's max_payload too
        after = orjson.dumps({"asset": "m1", "ts": t0, "values": {"rpm": 42}})
        for payload in (big, huge, after):
            assert await published(device, creds["topic"], payload)
        device.close()

        async def settled() -> dict[str, Any] | None:
            s = await ingest_stats(api)
            return s if s["values"] == 1 and s["dead_letters"] == 2 else None

        s = await async_wait_for(settled, what="two refusals and the reading after them")
        assert s["dead_letters_by_reason"] == {"too-large": 2}
        assert (platform.bridge.too_large, platform.bridge.forwarded) == (2, 1)
        letters = (await api.http.get("/tenants/default/dead-letters")).json()["items"]
        sizes = sorted(int(i["reason"].split()[2]) for i in letters)
        assert sizes == [len(big), len(huge)]
        assert all("bridged from 127.0.0.1:1883" in i["reason"] for i in letters)
        # Not the guessable id of before: no device can take the bridge's session over.
        assert platform.bridge.client_id.startswith(f"fogline-bridge-{root}-")
        assert len(platform.bridge.client_id) > len(f"fogline-bridge-{root}-") + 16
    finally:
        await api.close()
        await platform.stop()


async def test_streams_of_a_data_dir_from_before_tenant_accounts_are_kept(
    platform_settings: Callable[..., Any],
) -> None:
    """Before per-tenant accounts the platform's streams lived in nats-server's global account;
    the hot store (and the historian's offset in it) must survive the upgrade."""
    settings = platform_settings()
    first = Platform(settings)
    await first.start()
    api = Api(first.http_url, first.bootstrap.admin_key)
    await setup_motor(api)
    t0 = int(time.time() * 1000) - 5000
    for n in range(3):
        r = await api.http.post(
            "/tenants/default/devices/d1/telemetry",
            json={"asset": "m1", "ts": t0 + n, "values": {"rpm": n}},
        )
        assert r.status_code == 202
    await async_wait_for(lambda: _values(api, 3), what="three readings")
    await api.close()
    await first.stop()
    accounts = settings.data_dir / "nats" / "jetstream" / "jetstream"
    shutil.move(accounts / "FOGLINE", accounts / "$G")  # the layout of an older Fogline

    second = Platform(settings)
    await second.start()
    api = Api(second.http_url, _admin_key(settings))
    try:
        hot = await second.hot_store_state()
        assert (hot["first_seq"], hot["last_seq"]) == (1, 3)
        assert not (accounts / "$G" / "streams" / "FOGLINE_TELEMETRY").exists()
        r = await api.http.post(
            "/tenants/default/devices/d1/telemetry",
            json={"asset": "m1", "ts": t0 + 3, "values": {"rpm": 3}},
        )
        assert r.status_code == 202 and r.json()["stream_seq"] == 4
        await async_wait_for(lambda: _values(api, 4), what="the fourth reading")
        assert (await ingest_stats(api))["values"] == 4  # nothing stored twice
    finally:
        await api.close()
        await second.stop()


async def _values(api: Api, n: int) -> bool:
    return bool((await ingest_stats(api))["values"] >= n)


def _admin_key(settings: Any) -> str:
    key: str = orjson.loads((settings.data_dir / "client.json").read_bytes())["api_key"]
    return key


async def test_nothing_is_lost_while_devices_and_tenants_come_and_go(
    platform: Any, api: Api
) -> None:
    """Each device change reloads nats-server's accounts (a new tenant adds an account and an
    import to the platform's): telemetry arriving meanwhile must all be kept."""
    creds = await setup_motor(api)
    device = device_of(platform, creds, "d1")
    device.client.max_inflight_messages_set(100)
    assert not (await asyncio.to_thread(device.connect)).is_failure
    t0 = int(time.time() * 1000) - 600_000
    sent = 3000

    def publish_all() -> None:
        infos = []
        for n in range(sent):
            reading = {"asset": "m1", "ts": t0 + n, "values": {"rpm": n}}
            infos.append(device.client.publish(creds["topic"], orjson.dumps(reading), qos=1))
            time.sleep(0.001)
        for info in infos:
            info.wait_for_publish(30)
            assert info.is_published()

    async def churn() -> None:
        for k in range(3):
            tenant = await make_tenant(api, f"churn{k}")
            r = await tenant.http.post(f"/tenants/churn{k}/devices", json={"id": "gw"})
            assert r.status_code == 201
            r = await api.http.post("/tenants/default/devices", json={"id": f"extra{k}"})
            assert r.status_code == 201
            assert (await api.http.delete(f"/tenants/default/devices/extra{k}")).status_code == 204
            await tenant.close()

    await asyncio.gather(asyncio.to_thread(publish_all), churn())
    assert device.disconnects == []
    device.close()

    async def all_in() -> bool:
        return (await ingest_stats(api))["values"] >= sent

    await async_wait_for(all_in, what="every reading sent during the reloads")
    history = (
        await api.http.get(
            "/tenants/default/assets/m1/telemetry/history",
            params={"keys": "rpm", "from": str(t0), "to": str(t0 + sent)},
        )
    ).json()
    assert [p[1] for p in history["series"]["rpm"]["points"]] == list(range(sent))
