"""Nothing refused is silent: a device publishing or subscribing outside its own topics, a
wrong password and an unknown user name become security events, counted per device (or per
user name) and shown by the API, `fogline device show`, `fogline status` and the metrics."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import threading
from typing import Any

import paho.mqtt.client as mqtt_client
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.conftest import Api, async_wait_for, setup_motor
from tests.mqtt_client import Device

OTHER_TOPIC = "fogline/default/devices/d2/telemetry"


def mqtt(platform: Any, username: str, password: str, client_id: str) -> Device:
    host, port = platform.nats.mqtt_address
    return Device(host, port, username, password, client_id)


def cli(platform: Any, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "fogline.cli.main", "--url", platform.http_url]
    command += ["--api-key", platform.bootstrap.admin_key, *args]
    env = {**os.environ, "FOGLINE_DATA_DIR": "/nonexistent"}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)


async def security_of(api: Api, device: str) -> dict[str, dict[str, Any]]:
    r = await api.http.get(f"/tenants/default/devices/{device}/security-events")
    assert r.status_code == 200, r.text
    return {e["kind"]: e for e in r.json()}


async def two_devices(api: Api) -> dict[str, Any]:
    creds = await setup_motor(api)
    r = await api.http.post("/tenants/default/devices", json={"id": "d2"})
    assert r.status_code == 201, r.text
    return creds


def subscribe_refused(device: Device, topic: str) -> list[str]:
    """Subscribe and return the SUBACK's reason codes."""
    done = threading.Event()
    codes: list[str] = []

    def on_subscribe(_c: Any, _u: Any, _mid: Any, reasons: Any, _p: Any) -> None:
        codes.extend(str(r) for r in reasons)
        done.set()

    device.client.on_subscribe = on_subscribe
    device.client.subscribe(topic, qos=1)
    assert done.wait(10), "no SUBACK"
    return codes


async def test_a_device_outside_its_topics_and_a_wrong_password_are_security_events(
    platform: Any, api: Api
) -> None:
    creds = await two_devices(api)
    d1 = mqtt(platform, creds["username"], creds["password"], "d1")
    assert not (await asyncio.to_thread(d1.connect)).is_failure
    # What the device sees: nats-server acknowledges the refused QoS 1 publish (PUBACK) and
    # answers the refused subscription with a failure code in its SUBACK.
    await asyncio.to_thread(d1.publish, OTHER_TOPIC, {"asset": "m1", "values": {"rpm": 6}})
    codes = await asyncio.to_thread(subscribe_refused, d1, "fogline/default/devices/d2/#")
    assert codes and all("error" in c.lower() or "fail" in c.lower() for c in codes), codes
    d1.close()
    wrong = mqtt(platform, creds["username"], "not-the-password-at-all", "w1")
    assert (await asyncio.to_thread(wrong.connect)).is_failure
    wrong.close()

    async def all_three() -> dict[str, dict[str, Any]] | None:
        found = await security_of(api, "d1")
        return found if len(found) == 3 else None

    events = await async_wait_for(all_three, what="d1's three kinds of security event")
    published = events["publish_denied"]
    assert published["count"] == 1 and published["username"] == "default.d1"
    assert published["last_subject"] == "fogline.default.devices.d2.telemetry"
    assert published["last_address"].startswith("127.0.0.1:")
    assert events["subscribe_denied"]["last_subject"] == "fogline.default.devices.d2.>"
    assert events["login_failed"]["count"] == 1
    assert await security_of(api, "d2") == {}  # the victim's topic is not the victim's fault

    device = (await api.http.get("/tenants/default/devices/d1")).json()
    assert {e["kind"] for e in device["security_events"]} == set(events)
    shown = await asyncio.to_thread(cli, platform, "device", "show", "d1")
    assert shown.returncode == 0, shown.stderr
    assert {e["kind"]: e["count"] for e in json.loads(shown.stdout)["security_events"]} == {
        "login_failed": 1,
        "publish_denied": 1,
        "subscribe_denied": 1,
    }
    assert "security: 1 publish denied" in shown.stderr
    assert "subject fogline.default.devices.d2.telemetry" in shown.stderr
    as_json = await asyncio.to_thread(cli, platform, "--json", "device", "show", "d1")
    assert as_json.returncode == 0 and "security:" not in as_json.stderr
    assert len(json.loads(as_json.stdout)["security_events"]) == 3

    metrics = (await api.http.get("/metrics")).text
    assert 'fogline_security_events_total{kind="publish_denied"} 1.0' in metrics
    assert 'fogline_security_events_total{kind="login_failed"} 1.0' in metrics
    r = await api.http.get("/tenants/default/devices/nope/security-events")
    assert r.status_code == 404

    # A deleted device's counts stay, under its user name; registered again, it has none.
    assert (await api.http.delete("/tenants/default/devices/d1")).status_code == 204
    assert (await api.http.post("/tenants/default/devices", json={"id": "d1"})).status_code == 201
    assert await security_of(api, "d1") == {}
    security = (await api.http.get("/system")).json()["security"]
    assert security["unknown_users"] == [{"username": "default.d1", "total": 3}]


async def test_unknown_user_names_are_counted_in_the_status(platform: Any, api: Api) -> None:
    for username in ("default.nosuch", "stranger", "stranger"):
        login = mqtt(platform, username, "whatever-password-here", "u1")
        assert (await asyncio.to_thread(login.connect)).is_failure
        login.close()

    async def counted() -> dict[str, Any] | None:
        security = (await api.http.get("/system")).json()["security"]
        return security if security["totals"]["login_failed"] == 3 else None

    security = await async_wait_for(counted, what="three failed logins")
    assert security["unknown_users_count"] == 2
    assert {u["username"]: u["total"] for u in security["unknown_users"]} == {
        "stranger": 2,
        "default.nosuch": 1,
    }
    assert security["top_devices"] == []
    status = await asyncio.to_thread(cli, platform, "status")
    line = next(ln for ln in status.stdout.splitlines() if ln.startswith("security:"))
    assert "3 login failed" in line and "2 unknown user name(s)" in line, line


async def test_a_burst_of_violations_is_one_count_and_few_log_lines(
    platform: Any, api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    creds = await two_devices(api)
    caplog.set_level(logging.WARNING, logger="fogline.fleet.security")
    host, port = platform.nats.mqtt_address
    flooder = mqtt_client.Client(CallbackAPIVersion.VERSION2, client_id="flood")
    flooder.username_pw_set(creds["username"], creds["password"])

    def flood() -> None:
        flooder.connect(host, port)
        flooder.loop_start()
        infos = [flooder.publish(OTHER_TOPIC, b"{}", qos=1) for _ in range(200)]
        for info in infos:
            info.wait_for_publish(10)
        flooder.disconnect()
        flooder.loop_stop()

    await asyncio.to_thread(flood)

    async def all_counted() -> bool:
        found = await security_of(api, "d1")
        return found.get("publish_denied", {}).get("count") == 200

    await async_wait_for(all_counted, what="200 denied publishes counted")
    rows = platform.db.security.security_counts("default")
    assert [(c.device, c.kind, c.count) for c in rows] == [("d1", "publish_denied", 200)]
    lines = [r for r in caplog.records if r.getMessage() == "security.refused"]
    assert 1 <= len(lines) <= 2, len(lines)  # one a minute per device and kind
    ledger = platform.running.fleet.security
    assert ledger.recorded < 20  # the bus counted them: a few events, not 200


async def test_a_connection_made_before_its_advisory_was_seen_is_asked_of_nats_server(
    platform: Any, api: Api
) -> None:
    """The log names a violating MQTT connection by number only; when the connect advisory
    was missed (the system connection was away), the watcher asks nats-server (CONNZ)."""
    creds = await two_devices(api)
    watcher = platform.running.backbone.security

    def d1_connections() -> int:  # the platform's own logins as d1 (its checks) count too
        return list(watcher._users.values()).count(creds["username"])

    before = d1_connections()
    d1 = mqtt(platform, creds["username"], creds["password"], "d1")
    assert not (await asyncio.to_thread(d1.connect)).is_failure
    await async_wait_for(lambda: d1_connections() > before, what="d1's connect advisory")
    watcher._users.clear()  # as if the advisory of d1's connection had never come
    await asyncio.to_thread(d1.publish, OTHER_TOPIC, b"{}")
    d1.close()

    async def counted() -> bool:
        return "publish_denied" in await security_of(api, "d1")

    await async_wait_for(counted, what="d1's denied publish, its user asked of nats-server")
    assert watcher.looked_up == 1
