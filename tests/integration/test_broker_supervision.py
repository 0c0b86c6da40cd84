"""Issue 11, point 3: Fogline's own nats-server is supervised. Killed, it is brought back by
the platform (devices reconnect, nothing acknowledged is lost); frozen, it is killed and
restarted once it has not answered for the stall timeout; when it cannot be brought back,
`ready` says why, and it comes back once it can. Each restart is logged, counted and shown."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from collections.abc import Callable
from typing import Any

from fogline.app.platform import Platform
from tests.conftest import Api, async_wait_for, setup_motor, stored_numbers
from tests.mqtt_client import RecordingDevice


async def broker_check(api: Api) -> dict[str, Any]:
    body: dict[str, Any] = (await api.http.get("/ready")).json()
    return body.get("checks", {}).get("broker", {})


async def test_a_killed_broker_is_brought_back_and_nothing_acknowledged_is_lost(
    platform_settings: Callable[..., Any],
) -> None:
    platform = Platform(platform_settings())
    await platform.start()
    api = Api(platform.http_url, platform.bootstrap.admin_key)
    assert platform.nats is not None
    host, port = platform.nats.mqtt_address
    device = RecordingDevice(host, port, await setup_motor(api), rate=200, state_bytes=10)
    try:
        device.start()
        await async_wait_for(lambda: len(device.acked) > 100, what="readings flowing")
        killed = platform.nats.pid
        assert killed is not None
        os.kill(killed, signal.SIGKILL)

        async def restarted() -> dict[str, Any] | None:
            broker = await broker_check(api)
            return broker if broker.get("restarts") == 1 and broker.get("ok") else None

        broker = await async_wait_for(restarted, timeout=30, what="the broker brought back")
        assert broker["pid"] != killed and broker["last_restart"] == "was killed by SIGKILL"
        system = (await api.http.get("/system")).json()
        assert system["nats_restarts"] == 1 and system["nats_pid"] == broker["pid"]
        assert "fogline_broker_restarts_total 1.0" in (await api.http.get("/metrics")).text
        acked_then = len(device.acked)
        await async_wait_for(
            lambda: len(device.acked) > acked_then + 100, what="the device publishing again"
        )
        await _every_acknowledged_reading_stored(api, device)
    finally:
        device.close()
        await api.close()
        await platform.stop()


async def test_a_frozen_broker_is_told_then_replaced_and_nothing_acknowledged_is_lost(
    platform_settings: Callable[..., Any],
) -> None:
    platform = Platform(platform_settings(broker_stall_timeout=8))
    await platform.start()
    api = Api(platform.http_url, platform.bootstrap.admin_key)
    assert platform.nats is not None
    host, port = platform.nats.mqtt_address
    device = RecordingDevice(host, port, await setup_motor(api), rate=200, state_bytes=10)
    try:
        device.start()
        await async_wait_for(lambda: len(device.acked) > 100, what="readings flowing")
        frozen = platform.nats.pid
        assert frozen is not None
        os.kill(frozen, signal.SIGSTOP)

        async def told() -> dict[str, Any] | None:
            r = await api.http.get("/ready")
            broker = r.json().get("checks", {}).get("broker", {})
            return (
                broker if r.status_code == 503 and broker.get("state") == "not-answering" else None
            )

        broker = await async_wait_for(told, timeout=15, what="ready saying the broker is silent")
        assert "has not answered" in broker["problem"]

        async def replaced() -> dict[str, Any] | None:
            broker = await broker_check(api)
            return broker if broker.get("restarts") == 1 and broker.get("ok") else None

        broker = await async_wait_for(replaced, timeout=30, what="the frozen broker replaced")
        assert broker["pid"] != frozen
        assert broker["last_restart"].startswith("did not answer for")
        with contextlib.suppress(ProcessLookupError):
            os.kill(frozen, signal.SIGCONT)  # killed, not stopped: waking it changes nothing
        acked_then = len(device.acked)
        await async_wait_for(
            lambda: len(device.acked) > acked_then + 100, what="the device publishing again"
        )
        await _every_acknowledged_reading_stored(api, device)
    finally:
        device.close()
        await api.close()
        await platform.stop()


async def test_a_graceful_restart_under_load_loses_nothing(
    platform_settings: Callable[..., Any],
) -> None:
    """nats-server's MQTT listener acknowledges QoS 1 messages while it shuts down, which
    JetStream no longer writes: a restart (after a store failure) shuts the devices out first."""
    platform = Platform(platform_settings())
    await platform.start()
    api = Api(platform.http_url, platform.bootstrap.admin_key)
    assert platform.nats is not None
    host, port = platform.nats.mqtt_address
    device = RecordingDevice(host, port, await setup_motor(api), rate=300, state_bytes=10)
    try:
        device.start()
        for _ in range(2):
            acked_then = len(device.acked)
            await async_wait_for(
                lambda n=acked_then: len(device.acked) > n + 200, what="readings flowing"
            )
            await platform.nats.restart("a test")
        await async_wait_for(
            lambda: len(device.acked) > acked_then + 400, what="the device publishing again"
        )
        await _every_acknowledged_reading_stored(api, device)
        assert platform.nats.restarts == 2
    finally:
        device.close()
        await api.close()
        await platform.stop()


async def _every_acknowledged_reading_stored(api: Api, device: RecordingDevice) -> None:
    device.stop_publishing()
    await async_wait_for(lambda: device.unacked() == 0, what="every reading acked")
    acked = set(device.acked)

    async def all_stored() -> set[int] | None:
        stored = set(await stored_numbers(api, device.t0, device.sent))
        return stored if acked <= stored else None

    stored = await async_wait_for(all_stored, timeout=60, what="every acknowledged reading")
    assert acked <= stored


async def test_a_broker_that_cannot_be_brought_back_is_named_in_ready_until_it_is(
    platform_settings: Callable[..., Any],
) -> None:
    settings = platform_settings()
    platform = Platform(settings)
    await platform.start()
    api = Api(platform.http_url, platform.bootstrap.admin_key)
    squatter = socket.socket()
    try:
        assert platform.nats is not None
        killed = platform.nats.pid
        assert killed is not None
        # Another program takes the broker's port as it dies: it cannot start again there.
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        os.kill(killed, signal.SIGKILL)
        await asyncio.to_thread(os.waitid, os.P_PID, killed, os.WEXITED | os.WNOWAIT)
        squatter.bind(("127.0.0.1", settings.nats_port))
        squatter.listen(1)

        async def told() -> dict[str, Any] | None:
            r = await api.http.get("/ready")
            broker = r.json().get("checks", {}).get("broker", {})
            failed = r.status_code == 503 and broker.get("state") == "failed"
            return r.json() if failed else None

        state = await async_wait_for(told, timeout=30, what="ready naming the broker")
        assert "already in use" in state["detail"]
        squatter.close()  # the port is free again: the next attempt brings it back

        async def back() -> bool:
            return (await api.http.get("/ready")).status_code == 200

        await async_wait_for(back, timeout=60, what="the broker back")
        assert platform.nats.restarts >= 2
    finally:
        squatter.close()
        await api.close()
        await platform.stop()


async def test_metrics_are_for_an_admin_in_prometheus_text(platform: Any, api: Api) -> None:
    from tests.integration.test_security import make_tenant

    r = await api.http.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert "fogline_ready 1.0" in r.text
    for part in ("broker", "database", "historian", "disk"):
        assert f'fogline_part_ok{{part="{part}"}} 1.0' in r.text
    tenant = await make_tenant(api, "acme")
    try:
        r = await tenant.http.get("/metrics")
        assert r.status_code == 403 and r.headers["content-type"] == "application/problem+json"
    finally:
        await tenant.close()
    # The API's own requests: by route template (never the raw path), status and latency.
    for _ in range(3):
        assert (await api.http.get("/tenants/default/assets/no-such-asset")).status_code == 404
    unmatched = await api.http.get("/no/such/route")
    assert unmatched.status_code == 404
    assert unmatched.json()["detail"].startswith("nothing at GET /api/v1/no/such/route")
    text = (await api.http.get("/metrics")).text
    asset = 'method="GET",route="/tenants/{tenant}/assets/{asset_id}",status="404"'
    assert f"fogline_api_requests_total{{{asset}}} 3.0" in text
    assert 'route="/metrics",status="403"} 1.0' in text
    assert 'fogline_api_requests_total{method="GET",route="unmatched",status="404"} 1.0' in text
    assert "no-such-asset" not in text
    timed = 'fogline_api_request_duration_seconds_count{method="GET",route="/metrics"}'
    assert timed in text
