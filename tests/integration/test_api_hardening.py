"""Tenant code must never own the platform (issue 9): passwords of any length, time bounds of
any size, revoked keys on open streams, what a tenant's key sees of the platform, and an OpenAPI
schema that says what the API does."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from typing import Any

import httpx

from fogline.client.http import ApiError, FoglineClient
from fogline.domain.errors import ErrorKind
from tests.conftest import Api, async_wait_for, setup_motor
from tests.integration.test_security import make_tenant

PROBLEM = "application/problem+json"


def basic(username: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def assert_problem(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    body: dict[str, Any] = r.json()
    assert body["status"] == status
    return body


async def test_device_passwords_of_any_length(api: Api) -> None:
    """S8: bcrypt reads 72 bytes and the bcrypt package raises on more; no length may give a
    500, and HTTP Basic answers an unknown device as it answers a wrong password."""
    for password, why in (
        ("x" * 73, "at most 72"),
        ("é" * 40, "printable ascii"),  # 40 characters, 80 bytes
        ("short", "at least 16"),
    ):
        r = await api.http.post("/tenants/default/devices", json={"id": "d9", "password": password})
        body = assert_problem(r, 422)
        assert [e["field"] for e in body["errors"]] == ["password"], body
        assert why in body["errors"][0]["reason"].lower(), body
        assert password not in json.dumps(body)  # a refused password is never echoed
    r = await api.http.post("/tenants/default/devices", json={"id": "d9", "password": "~" * 72})
    assert r.status_code == 201, r.text

    creds = await setup_motor(api)
    url = "/tenants/default/devices/{device}/telemetry"
    reading = json.dumps({"asset": "m1", "values": {"rpm": 1}})
    answers = []
    async with httpx.AsyncClient(base_url=api.base + "/api/v1") as anonymous:
        for device, username, password in (
            ("d1", creds["username"], "wrong-but-long-enough"),
            ("d1", creds["username"], "p" * 100),  # over bcrypt's limit: a 500 before
            ("d1", creds["username"], "ü" * 70),
            ("ghost", "default.ghost", "p" * 100),  # no such device
            ("ghost", "default.ghost", creds["password"]),
        ):
            r = await anonymous.post(
                url.format(device=device), content=reading, headers=basic(username, password)
            )
            answers.append(assert_problem(r, 401)["detail"])
        r = await anonymous.post(
            url.format(device="d1"),
            content=reading,
            headers=basic(creds["username"], creds["password"]),
        )
        assert r.status_code == 202, r.text
    assert len(set(answers)) == 1, answers


HUGE_BOUNDS = [
    ("/telemetry/history", {"from": "-999999999999d"}),
    ("/telemetry/history", {"from": "0", "to": "99999999999999999999"}),
    ("/telemetry/history", {"from": "0", "bucket": "99999999999999w"}),
    ("/telemetry/history", {"from": "0001-01-01T00:00:00+05:00"}),
    ("/telemetry/history", {"limit": "99999999999999999999"}),
    ("dead-letters", {"since": "-99999999999999999999w"}),
    ("dead-letters", {"since": "99999999999999999999"}),
]


async def test_huge_time_bounds_are_invalid_input(api: Api) -> None:
    """S11: bounds no store can hold were a 500 (OverflowError into SQLite)."""
    await setup_motor(api)
    for path, params in HUGE_BOUNDS:
        where = (
            "/tenants/default/dead-letters"
            if path == "dead-letters"
            else f"/tenants/default/assets/m1{path}"
        )
        r = await api.http.get(where, params=params)
        body = assert_problem(r, 422)
        assert body["errors"], (path, params, body)


async def live_events(
    client: Api, path: str, events: list[tuple[str, str]], subscribed: asyncio.Event
) -> None:
    async with client.http.stream("GET", path, timeout=30) as response:
        assert response.status_code == 200
        event = ""
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                events.append((event, line[5:].strip()))
                if event == "subscribed":
                    subscribed.set()


async def test_a_revoked_key_ends_its_live_streams(api: Api) -> None:
    """S12: a stream opened with a key stopped delivering only when the client left."""
    acme = await make_tenant(api, "acme")
    await setup_motor(acme, tenant="acme")
    r = await acme.http.post("/tenants/acme/api-keys", json={"name": "watcher"})
    watcher = api.as_key(r.json()["api_key"])
    key_id = r.json()["key"]["id"]
    events: list[tuple[str, str]] = []
    subscribed = asyncio.Event()
    stream = asyncio.create_task(
        live_events(watcher, "/tenants/acme/assets/m1/telemetry/live", events, subscribed)
    )
    async with asyncio.timeout(15):
        await subscribed.wait()
    assert (await acme.http.delete(f"/tenants/acme/api-keys/{key_id}")).status_code == 204
    # The server ends the stream (the client would read on for ever): within the deadline.
    async with asyncio.timeout(10):
        await stream
    assert [e for e, _ in events] == ["subscribed", "error"]
    problem = json.loads(events[-1][1])
    assert problem["status"] == 401 and "revoked" in problem["detail"]

    # The CLI's client turns that end into the error it is (`fogline telemetry live` exits 5).
    r = await acme.http.post("/tenants/acme/api-keys", json={"name": "cli"})
    cli_key, cli_key_id = r.json()["api_key"], r.json()["key"]["id"]

    def follow() -> ApiError:
        with FoglineClient(api.base, cli_key) as client:
            try:
                for _event in client.live("acme", "m1"):
                    subscribed_cli.set()
            except ApiError as exc:
                return exc
        raise AssertionError("the live stream ended without an error")

    subscribed_cli = threading.Event()
    followed = asyncio.create_task(asyncio.to_thread(follow))
    await async_wait_for(subscribed_cli.is_set, timeout=15, what="the CLI's stream")
    assert (await acme.http.delete(f"/tenants/acme/api-keys/{cli_key_id}")).status_code == 204
    async with asyncio.timeout(10):
        error = await followed
    assert error.status == 401 and error.kind is ErrorKind.UNAUTHENTICATED
    await watcher.close()
    await acme.close()


async def test_a_tenant_key_sees_its_own_counters_not_the_platform(platform: Any, api: Api) -> None:
    """S15: /system gave any tenant's key every tenant's counters, process ids and memory."""
    acme = await make_tenant(api, "acme")
    creds = await setup_motor(acme, tenant="acme")
    await setup_motor(api, tenant="default", device="other")
    r = await acme.http.post(
        "/tenants/acme/devices/d1/telemetry",
        content=json.dumps({"asset": "m1", "values": {"rpm": "not a number"}}),
    )
    assert r.status_code == 202, r.text
    admin_view = (await api.http.get("/system")).json()
    assert admin_view["pid"] and admin_view["rss_mb"] and "hot_store" in admin_view

    async def counted() -> dict[str, Any] | None:
        body: dict[str, Any] = (await acme.http.get("/system")).json()
        return body if body["ingest"]["dead_letters"] >= 1 else None

    mine = await async_wait_for(counted, what="acme's dead letter counted")
    assert mine["tenant"] == "acme"
    assert mine["ingest"] == {"devices": 1, "messages": 1, "values": 0, "dead_letters": 1}
    text = json.dumps(mine)
    for leak in ("pid", "rss", "historian", "nats", "hot_store", "bridge", "database", "http"):
        assert leak not in text, (leak, mine)
    assert creds["password"] not in text
    await acme.close()


async def test_openapi_tells_the_truth(api: Api) -> None:
    """Point 9: every error a route answers is declared, as problem+json; the id and password
    rules are in the schema; 405 names what the resource allows."""
    schema = (await api.http.get("/openapi.json")).json()
    paths = schema["paths"]
    create_device = paths["/api/v1/tenants/{tenant}/devices"]["post"]
    assert {"201", "400", "401", "403", "404", "409", "413", "422", "503"} <= set(
        create_device["responses"]
    )
    for status, response in create_device["responses"].items():
        if status.startswith(("4", "5")):
            assert list(response["content"]) == [PROBLEM], status
    tenant = next(p for p in create_device["parameters"] if p["name"] == "tenant")
    assert tenant["schema"]["pattern"] == "^[a-z0-9][a-z0-9_-]*$"
    assert tenant["schema"]["maxLength"] == 64
    device_in = schema["components"]["schemas"]["DeviceIn"]["properties"]
    password = device_in["password"]["anyOf"][0]
    assert (password["minLength"], password["maxLength"]) == (16, 72)
    assert device_in["id"]["pattern"] == "^[a-z0-9][a-z0-9_-]*$"
    assert "Problem" in schema["components"]["schemas"]
    assert {"ApiKey", "ApiKeyHeader", "DeviceBasic"} <= set(schema["components"]["securitySchemes"])

    r = await api.http.request("OPTIONS", "/tenants/default/assets")
    assert_problem(r, 405)
    assert r.headers["allow"] == "GET, HEAD, POST"
    r = await api.http.get("/tenants/default/models/m/update")  # not a version: the update route
    assert_problem(r, 405)
    assert r.headers["allow"] == "POST"
    r = await api.http.delete("/tenants/default/models/m/1.0.0/mappings")
    assert_problem(r, 405)
    assert r.headers["allow"] == "GET, HEAD, PUT"
