"""Tenant isolation through the API, and device credentials enforced by nats-server itself."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from tests.conftest import Api, async_wait_for, setup_motor
from tests.mqtt_client import Device


async def make_tenant(api: Api, tenant: str) -> Api:
    r = await api.http.post("/tenants", json={"id": tenant, "name": tenant.title()})
    assert r.status_code == 201, r.text
    return api.as_key(r.json()["api_key"])


async def test_no_key_and_bad_keys_are_refused(api: Api) -> None:
    anonymous = api.as_key(None)
    for key_api in (anonymous, api.as_key("fgl_nope_nope"), api.as_key("garbage")):
        r = await key_api.http.get("/tenants/default/assets")
        assert r.status_code == 401
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["status"] == 401
        await key_api.close()
    await anonymous.close()


async def test_a_tenant_key_never_reaches_another_tenant(api: Api) -> None:
    acme = await make_tenant(api, "acme")
    globex = await make_tenant(api, "globex")
    await setup_motor(globex, tenant="globex", asset="g1", device="gd1")
    # acme's key, aimed at every kind of globex route, reading and writing.
    attempts = [
        ("GET", "/tenants/globex/asset-types", None),
        ("GET", "/tenants/globex/asset-types/motor", None),
        ("PUT", "/tenants/globex/asset-types/motor", {"telemetry": []}),
        ("DELETE", "/tenants/globex/asset-types/motor", None),
        ("GET", "/tenants/globex/assets", None),
        ("GET", "/tenants/globex/assets/g1", None),
        ("POST", "/tenants/globex/assets", {"id": "x", "asset_type": "motor"}),
        ("PATCH", "/tenants/globex/assets/g1", {"name": "mine"}),
        ("DELETE", "/tenants/globex/assets/g1", None),
        ("GET", "/tenants/globex/devices", None),
        ("GET", "/tenants/globex/devices/gd1", None),
        ("POST", "/tenants/globex/devices", {"id": "spy"}),
        ("POST", "/tenants/globex/devices/gd1/credentials", None),
        ("DELETE", "/tenants/globex/devices/gd1", None),
        ("GET", "/tenants/globex/assets/g1/telemetry/latest", None),
        ("GET", "/tenants/globex/assets/g1/telemetry/history", None),
        ("GET", "/tenants/globex/assets/g1/telemetry/live", None),
        ("POST", "/tenants/globex/devices/gd1/telemetry", {"asset": "g1", "values": {"rpm": 1}}),
        ("GET", "/tenants/globex/dead-letters", None),
        ("GET", "/tenants/globex/models/press/0.1.0/logs", None),
        ("GET", "/tenants/globex/models/press/0.1.0/logs/stream", None),
        ("GET", "/tenants/globex/ingest/stats", None),
        ("GET", "/tenants/globex/api-keys", None),
        ("POST", "/tenants/globex/api-keys", {"name": "backdoor"}),
        ("GET", "/tenants/globex/retention", None),
        ("PUT", "/tenants/globex/retention", {"history": "1h"}),
        ("GET", "/tenants/globex/asset-types/motor/retention", None),
        ("PUT", "/tenants/globex/asset-types/motor/retention", {"history": "1h"}),
        ("GET", "/metrics", None),
        ("POST", "/tenants", {"id": "evil"}),
    ]
    for method, path, body in attempts:
        r = await acme.http.request(method, path, json=body)
        assert r.status_code == 403, (method, path, r.status_code, r.text)
        assert r.headers["content-type"] == "application/problem+json"
    # Nothing changed in globex, and acme sees only itself.
    r = await globex.http.get("/tenants/globex/assets/g1")
    assert r.status_code == 200 and r.json()["name"] == "g1"
    r = await globex.http.get("/tenants/globex/devices")
    assert [d["id"] for d in r.json()] == ["gd1"]
    r = await globex.http.get("/tenants/globex/retention")
    assert r.status_code == 200 and "1h" not in r.text
    assert [t["id"] for t in (await acme.http.get("/tenants")).json()] == ["acme"]
    # The same ids in two tenants are two different things.
    await setup_motor(acme, tenant="acme", asset="g1", device="gd1")
    r = await acme.http.get("/tenants/acme/assets/g1")
    assert r.status_code == 200
    await acme.close()
    await globex.close()


async def test_revoked_key_stops_working(api: Api) -> None:
    acme = await make_tenant(api, "acme")
    r = await acme.http.post("/tenants/acme/api-keys", json={"name": "temp"})
    temp = api.as_key(r.json()["api_key"])
    assert (await temp.http.get("/tenants/acme/assets")).status_code == 200
    key_id = r.json()["key"]["id"]
    assert (await acme.http.delete(f"/tenants/acme/api-keys/{key_id}")).status_code == 204
    assert (await temp.http.get("/tenants/acme/assets")).status_code == 401
    listed = (await acme.http.get("/tenants/acme/api-keys")).json()
    assert all("secret" not in json.dumps(k) for k in listed)
    await temp.close()
    await acme.close()


def mqtt(platform: Any, username: str, password: str, client_id: str) -> Device:
    host, port = platform.nats.mqtt_address
    return Device(host, port, username, password, client_id)


async def test_device_credentials_are_enforced_by_the_broker(platform: Any, api: Api) -> None:
    creds = await setup_motor(api)
    r = await api.http.post("/tenants/default/devices", json={"id": "d2"})
    other = r.json()["credentials"]

    wrong = mqtt(platform, creds["username"], "not-the-password", "w1")
    reason = await asyncio.to_thread(wrong.connect)
    assert reason.is_failure and "authori" in str(reason).lower()
    wrong.close()

    # d1 tries to publish as d2, then as itself; only its own message may arrive.
    d1 = mqtt(platform, creds["username"], creds["password"], "d1")
    assert not (await asyncio.to_thread(d1.connect)).is_failure
    t0 = int(time.time() * 1000) - 1000
    spoof = {"asset": "m1", "ts": t0, "values": {"rpm": 666}}
    await asyncio.to_thread(d1.publish, "fogline/default/devices/d2/telemetry", spoof)
    await asyncio.to_thread(d1.publish, "fogline/default/assets/m1/live", spoof)
    own = {"asset": "m1", "ts": t0 + 1, "values": {"rpm": 1}}
    await asyncio.to_thread(d1.publish, "fogline/default/devices/d1/telemetry", own)
    d1.close()

    async def own_arrived() -> bool:
        r = await api.http.get("/tenants/default/ingest/stats")
        return bool(r.json()["values"] >= 1)

    await async_wait_for(own_arrived, what="d1's own reading")
    stats = (await api.http.get("/tenants/default/ingest/stats")).json()
    assert [(d["device"], d["values"]) for d in stats["devices"]] == [("d1", 1)]
    history = (
        await api.http.get(
            "/tenants/default/assets/m1/telemetry/history",
            params={"from": str(t0 - 1), "keys": "rpm"},
        )
    ).json()
    assert [p[1] for p in history["series"]["rpm"]["points"]] == [1]
    log = (platform.settings.data_dir / "nats" / "nats-server.log").read_text()
    assert "Publish Violation" in log and "fogline.default.devices.d2.telemetry" in log
    assert other["username"] == "default.d2"


async def test_rotated_and_deleted_devices_lose_access(platform: Any, api: Api) -> None:
    creds = await setup_motor(api)
    r = await api.http.post("/tenants/default/devices/d1/credentials")
    new = r.json()
    old_login = mqtt(platform, creds["username"], creds["password"], "o1")
    assert (await asyncio.to_thread(old_login.connect)).is_failure
    old_login.close()
    new_login = mqtt(platform, new["username"], new["password"], "n1")
    assert not (await asyncio.to_thread(new_login.connect)).is_failure
    new_login.close()
    assert (await api.http.delete("/tenants/default/devices/d1")).status_code == 204
    gone = mqtt(platform, new["username"], new["password"], "n2")
    assert (await asyncio.to_thread(gone.connect)).is_failure
    gone.close()


async def test_secrets_never_come_back(platform: Any, api: Api) -> None:
    creds = await setup_motor(api)
    password = creds["password"]
    for path in ("/tenants/default/devices", "/tenants/default/devices/d1", "/system"):
        body = (await api.http.get(path)).text
        assert password not in body
        assert "$2a$" not in body  # nor its hash
    assert platform.nats.platform_password not in (await api.http.get("/system")).text


@pytest.mark.parametrize(
    ("path", "body", "fields"),
    [
        (
            "/tenants/default/asset-types",
            {
                "id": "Bad Id",
                "telemetry": [{"name": "t", "dtype": "complex"}, {"name": "u", "min": 5, "max": 1}],
            },
            {"telemetry.0.dtype"},
        ),
        # Both ids break the slug rule of the schema, so both are named at once.
        ("/tenants/default/assets", {"id": "a.b", "asset_type": "No/pe"}, {"id", "asset_type"}),
        ("/tenants/default/devices", {"id": "d/1", "password": "short"}, {"id", "password"}),
    ],
)
async def test_bad_input_gets_every_problem_at_once(
    api: Api, path: str, body: dict[str, Any], fields: set[str]
) -> None:
    r = await api.http.post(path, json=body)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert fields <= {e["field"] for e in problem["errors"]}
    assert (await api.http.get("/tenants/default/assets")).json() == []
    assert (await api.http.get("/tenants/default/devices")).json() == []
