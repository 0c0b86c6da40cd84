"""Issue 11: HTTP ingest answers are true. A 202 means the hot store keeps the body; a 503
(always with Retry-After) means it was not stored, or says that this could not be learned;
a retry with the same Idempotency-Key stores it once, at the time of its first receipt."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
from nats.js.api import DiscardPolicy

import fogline.bus.connection as connection
from tests.conftest import Api, async_wait_for, setup_motor

URL = "/tenants/default/devices/d1/telemetry"
NO_TS = {"asset": "m1", "values": {"rpm": 7}}  # stored at the time the stream received it


@pytest.fixture
def quick_tries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tries of half a second, given up after two: a stalled broker is seen in a test's time."""
    monkeypatch.setattr(connection, "TELEMETRY_PUBLISH_TRY_S", 0.5)
    monkeypatch.setattr(connection, "TELEMETRY_PUBLISH_DEADLINE_S", 2.0)


class StoppedBroker:
    """The platform's nats-server frozen (SIGSTOP): requests reach its socket, no answer
    comes. Always let go again, whatever the test did."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.stopped = False

    def stop(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)
        self.stopped = True

    def resume(self) -> None:
        if self.stopped:
            os.kill(self.pid, signal.SIGCONT)
            self.stopped = False


@pytest.fixture
def broker(platform: Any) -> Iterator[StoppedBroker]:
    frozen = StoppedBroker(platform.nats.pid)
    yield frozen
    frozen.resume()


async def stream_messages(platform: Any) -> int:
    state = await platform.bus.telemetry_stream_state()
    return int(state["messages"])


async def rpm_points(api: Api, since: int) -> list[list[Any]]:
    r = await api.http.get(
        "/tenants/default/assets/m1/telemetry/history",
        params={"keys": "rpm", "from": str(since), "to": "now"},
    )
    assert r.status_code == 200, r.text
    points: list[list[Any]] = r.json()["series"].get("rpm", {}).get("points", [])
    return points


def unanswered(caplog: pytest.LogCaptureFixture) -> bool:
    return any(r.msg == "bus.telemetry_publish_unanswered" for r in caplog.records)


async def test_a_publish_unanswered_at_first_is_learned_stored_and_answered_202(
    platform: Any,
    api: Api,
    broker: StoppedBroker,
    quick_tries: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The broker stalls through the first try (the 'nats: timeout' of the review) and comes
    back before the deadline: the same message id is tried again, and the answer is 202, with
    the body stored once, though the client sent no Idempotency-Key."""
    await setup_motor(api)
    before = await stream_messages(platform)
    since = int(time.time() * 1000)
    broker.stop()
    with caplog.at_level(logging.WARNING, logger="fogline.bus.connection"):
        request = asyncio.create_task(api.http.post(URL, json=NO_TS))
        await async_wait_for(lambda: unanswered(caplog), timeout=10, what="a try to time out")
        broker.resume()
        r = await request
    assert r.status_code == 202, r.text
    assert await stream_messages(platform) == before + 1  # kept once, whichever try it was

    async def stored() -> list[list[Any]]:
        return await rpm_points(api, since)

    points = await async_wait_for(stored, what="the reading in history")
    assert [p[1] for p in points] == [7]


async def test_an_unknown_fate_is_said_and_a_retry_with_the_key_stores_it_once(
    platform: Any,
    api: Api,
    broker: StoppedBroker,
    quick_tries: None,
) -> None:
    """The broker stays frozen past the deadline: 503 with Retry-After, `stored: null` and
    what to do. The tries it then finds in its socket are kept once; the client's retry with
    the same Idempotency-Key is a duplicate, and the reading keeps the first receipt's time."""
    await setup_motor(api)
    before = await stream_messages(platform)
    since = int(time.time() * 1000)
    headers = {"Idempotency-Key": "reading-42"}
    broker.stop()
    r = await api.http.post(URL, json=NO_TS, headers=headers)
    broker.resume()
    assert r.status_code == 503, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert int(r.headers["Retry-After"]) > 0
    problem = r.json()
    assert problem["stored"] is None
    assert "not known whether" in problem["detail"]
    assert "same Idempotency-Key" in problem["detail"]

    async def first_receipt() -> list[list[Any]]:
        return await rpm_points(api, since)

    # The frozen tries reach the stream once the broker runs: one of them is kept.
    points = await async_wait_for(first_receipt, what="the first tries to be stored")
    retried_at = int(time.time() * 1000)
    again = await api.http.post(URL, json=NO_TS, headers=headers)
    assert again.status_code == 202, again.text
    assert again.json()["duplicate"] is True
    assert await stream_messages(platform) == before + 1

    async def settled() -> bool:
        stats = (await api.http.get("/tenants/default/ingest/stats")).json()
        return bool(stats["messages"] == 1)

    await async_wait_for(settled, what="the historian to commit the stream")
    assert await rpm_points(api, since) == points  # one reading, at its first receipt
    assert len(points) == 1 and points[0][0] < retried_at


async def test_a_refused_publish_is_503_not_stored_and_stores_nothing(
    platform: Any, api: Api, quick_tries: None
) -> None:
    """JetStream refuses the message (here: a stream full with discard-new, as a full store
    refuses): 503 with Retry-After and `stored: false`, and nothing of it is kept."""
    await setup_motor(api)
    r = await api.http.post(URL, json=NO_TS)
    assert r.status_code == 202, r.text
    js = platform.bus.js
    name = platform.subjects.telemetry_stream
    config = (await js.stream_info(name)).config
    config.discard = DiscardPolicy.NEW
    config.max_msgs = await stream_messages(platform)
    await js.update_stream(config)
    refused = await api.http.post(URL, json=NO_TS, headers={"Idempotency-Key": "k1"})
    assert refused.status_code == 503, refused.text
    assert int(refused.headers["Retry-After"]) > 0
    assert refused.json()["stored"] is False
    assert "was not stored" in refused.json()["detail"]
    assert await stream_messages(platform) == 1
    # Room again: the same key is not taken for a duplicate of what was never stored.
    config.max_msgs = -1
    await js.update_stream(config)
    again = await api.http.post(URL, json=NO_TS, headers={"Idempotency-Key": "k1"})
    assert again.status_code == 202 and again.json()["duplicate"] is False
    assert await stream_messages(platform) == 2


async def test_every_503_of_the_api_carries_retry_after(platform: Any, api: Api) -> None:
    """The OpenAPI schema says so for every 503 it documents, and tells how to retry."""
    schema = (await api.http.get("/openapi.json")).json()
    documented = [
        op["responses"]["503"]
        for item in schema["paths"].values()
        for op in item.values()
        if isinstance(op, dict) and "503" in op.get("responses", {})
    ]
    assert documented
    assert all("Retry-After" in r.get("headers", {}) for r in documented)
    described = schema["paths"]["/api/v1/tenants/{tenant}/devices/{device}/telemetry"]["post"]
    key = next(p for p in described["parameters"] if p["name"] == "idempotency-key")
    assert "retry safe" in key["description"]


async def test_the_same_key_with_another_body_is_another_request(platform: Any, api: Api) -> None:
    """A key names one body: a device whose key counter started over after a reboot sends the
    same key with new readings, and they are stored, not taken for a duplicate."""
    await setup_motor(api)
    t0 = int(time.time() * 1000) - 60_000
    headers = {"Idempotency-Key": "boot-1"}
    first = {"asset": "m1", "ts": t0, "values": {"rpm": 11}}
    second = {"asset": "m1", "ts": t0 + 1, "values": {"rpm": 55}}
    for body, duplicate in ((first, False), (second, False), (first, True)):
        r = await api.http.post(URL, json=body, headers=headers)
        assert r.status_code == 202, r.text
        assert r.json()["duplicate"] is duplicate

    async def both_stored() -> list[int] | None:
        r = await api.http.get(
            "/tenants/default/assets/m1/telemetry/history",
            params={"keys": "rpm", "from": str(t0), "to": str(t0 + 10)},
        )
        values = [p[1] for p in r.json()["series"]["rpm"]["points"]]
        return values if values == [11, 55] else None

    await async_wait_for(both_stored, what="both bodies stored")
