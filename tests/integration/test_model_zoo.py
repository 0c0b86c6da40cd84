"""Misbehaving models, deployed through the API against a real platform (issue 12): each test
checks that every reading the companion accepted is accounted for (accepted = scored +
dead-lettered + queued + in flight, and each dead-lettered reading has its dead letter), and
that the model's state, reason and events say what happened."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from tests import model_kit as k
from tests.conftest import Api, async_wait_for

# Exits (as a crash would) at every third call.
CRASHER = """
import os
from fogline.sdk import serve

calls = 0

def score(readings):
    global calls
    calls += 1
    if calls % 3 == 0:
        os._exit(3)
    return [{"doubled": r.values["temperature"] * 2} for r in readings]

serve(score=score)
"""

# Never answers; says in its log each call it starts, and in which process (the sandbox gives
# every process the same pid, so each names itself).
HANGER = """
import sys, time, uuid
from fogline.sdk import serve

PROCESS = uuid.uuid4().hex

def score(readings):
    print(f"call-in-{PROCESS}", file=sys.stderr, flush=True)
    time.sleep(3600)

serve(score=score)
"""

# Returns one result more than it got readings: the SDK answers 500 at every call.
TOO_MANY = """
from fogline.sdk import serve

def score(readings):
    return [{"doubled": 1.0} for _ in range(len(readings) + 1)]

serve(score=score)
"""

# A stateful window model that echoes every reading it gets.
ECHO = """
from fogline.sdk import serve

def score(readings):
    return [{"mean": r.values["temperature"]} for r in readings]

serve(score=score)
"""

# Slow: two seconds per call, so readings queue up behind it.
SLOW = """
import time
from fogline.sdk import serve

def score(readings):
    time.sleep(2)
    return [{"doubled": r.values["temperature"] * 2} for r in readings]

serve(score=score)
"""


@contextlib.asynccontextmanager
async def running(
    platform_settings: Callable[..., Any], **settings: Any
) -> AsyncIterator[tuple[Any, Api]]:
    """A platform with these settings, and an admin client of it; both gone afterwards."""
    from fogline.app.platform import Platform

    p = Platform(platform_settings(**settings))
    await p.start()
    api = Api(p.http_url, p.bootstrap.admin_key)
    try:
        yield p, api
    finally:
        await api.close()
        await p.stop()


def accounted(companion: dict[str, Any]) -> dict[str, Any]:
    """The companion's per-reading figures, checked to add up."""
    r = companion["readings"]
    assert r["accepted"] == r["scored"] + r["dead_lettered"] + r["queued"] + r["in_flight"], r
    assert r["dead_lettered"] == sum(r["dead_lettered_by_reason"].values()), r
    assert companion["received"] - companion["incomplete"] == r["accepted"], companion
    return dict(r)


async def dead_letters(api: Api, name: str) -> list[dict[str, Any]]:
    r = await api.http.get(f"/tenants/default/models/{name}/1.0.0/dead-letters")
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


async def events_of(api: Api, name: str, kind: str) -> list[dict[str, Any]]:
    r = await api.http.get("/tenants/default/events", params={"type": kind, "limit": 1000})
    assert r.status_code == 200, r.text
    return [e for e in r.json()["events"] if e["event"].get("model") == name]


async def deploy(api: Api, name: str) -> None:
    await k.map_type(api, name)
    r = await api.http.post(f"/tenants/default/models/{name}/1.0.0/deploy")
    assert r.status_code == 202, r.text
    await k.wait_state(api, name, "active")


async def test_a_crash_loop_backs_off_is_told_and_ends_in_draft_with_every_reading_counted(
    platform_settings: Callable[..., Any],
) -> None:
    settings = {"model_restart_limit": 3, "model_health_interval": 0.3}
    async with running(platform_settings, **settings) as (_platform, api):
        await k.sensors(api, "s1")
        name = await k.submit(api, k.manifest("crasher"), {"model.py": CRASHER})
        await deploy(api, name)
        sent = 0
        while await k.state_of(api, name) != "draft":  # readings until the monitor gives up
            await k.send(api, "s1", int(time.time() * 1000) + sent, 1.0)
            sent += 1
            assert sent < 5000, "the crash loop never ended"
        model = (await api.http.get(f"/tenants/default/models/{name}/1.0.0")).json()
        assert "restarted 3 times within 600 s" in model["state_reason"]
        assert "the model process exited" in model["state_reason"]

        status = await k.deployment(api, name)
        companion = status["companion"]
        assert companion["stopped"].startswith("the model went to draft")
        figures = accounted(companion)
        assert (figures["queued"], figures["in_flight"]) == (0, 0)
        assert figures["scored"] > 0 and figures["dead_lettered"] > 0
        assert 0 < figures["accepted"] <= sent
        # Each lost reading has its dead letter, with the reason.
        letters = await dead_letters(api, name)
        assert sum(d["readings"] for d in letters) == figures["dead_lettered"]
        by_reason = {
            reason: counts["readings"] for reason, counts in status["dead_letters"].items()
        }
        assert by_reason == figures["dead_lettered_by_reason"]
        assert set(by_reason) <= {"model-down", "discarded-at-stop"}

        # Restarts are events, and wait longer each time.
        restarts = await events_of(api, name, "model.restarted")
        assert [e["event"]["attempt"] for e in restarts] == [1, 2, 3]
        waits = [e["event"]["backoff_s"] for e in restarts]
        assert waits == sorted(waits) and waits[0] < waits[-1]
        moves = [e["event"]["event"] for e in await events_of(api, name, "model.transitioned")]
        assert "degrade" in moves and moves[-1] == "unhealthy"
        # The metrics keep what it did once it is gone.
        metrics = (await api.http.get("/metrics")).text
        labels = f'model="{name}",tenant="default",version="1.0.0"'
        assert f"fogline_model_restarts_total{{{labels}}} 3.0" in metrics
        assert f"fogline_model_degraded{{{labels}}} 0.0" in metrics
        scored = f'fogline_model_readings_total{{model="{name}",outcome="scored",'
        assert scored in metrics


async def test_a_call_that_times_out_is_never_sent_again_while_the_model_works_on_it(
    platform_settings: Callable[..., Any],
) -> None:
    async with running(platform_settings, model_health_interval=0.3) as (p, api):
        await k.sensors(api, "s1")
        manifest = k.manifest("hanger", [{"dataColumnName": "doubled"}], timeoutMs=1000)
        name = await k.submit(api, manifest, {"model.py": HANGER})
        await deploy(api, name)
        await k.send(api, "s1", int(time.time() * 1000), 1.0)

        async def given_up_on() -> bool:
            status = await k.deployment(api, name)
            # Timed out, restarted, sent once more, timed out again: restarted once more so
            # that the next call finds a process that is not stuck.
            return bool(status["health"]["restarts"] == 2 and status["dead_letters"])

        await async_wait_for(given_up_on, 30, "two restarts and a dead letter")
        model = (await api.http.get(f"/tenants/default/models/{name}/1.0.0")).json()
        assert model["state"] == "degraded"
        assert "no answer within 1 s" in model["state_reason"]
        figures = accounted((await k.deployment(api, name))["companion"])
        assert figures == {
            **figures,
            "accepted": 1,
            "scored": 0,
            "dead_lettered": 1,
            "dead_lettered_by_reason": {"timeout": 1},
        }
        [letter] = await dead_letters(api, name)
        assert letter["reason_code"] == "timeout" and letter["readings"] == 1
        assert letter["ts"] is not None and '"temperature":1.0' in letter["payload"]
        # The call went to the first process, was timed out, the model restarted, and the
        # call sent once more to the new process: never twice to one that was working on it.
        logs = Path(p.settings.runtime_dir).rglob("model.log")
        pids = [w for f in logs for w in f.read_text().split() if w.startswith("call-in-")]
        assert len(pids) == 2 and len(set(pids)) == 2, pids
        status = await k.deployment(api, name)
        assert status["companion"]["timeouts"] == 2
        assert "no answer within 1 s" in status["health"]["problem"]


async def test_a_hung_asynchronous_model_is_restarted(
    platform_settings: Callable[..., Any],
) -> None:
    async with running(platform_settings, model_health_interval=0.3) as (_platform, api):
        await k.sensors(api, "s1")
        manifest = k.manifest(
            "async-hanger", [{"dataColumnName": "doubled"}], timeoutMs=1000, **{"async": True}
        )
        name = await k.submit(api, manifest, {"model.py": HANGER})
        await deploy(api, name)
        await k.send(api, "s1", int(time.time() * 1000), 1.0)

        async def restarted() -> bool:
            status = await k.deployment(api, name)
            return bool(status["health"]["restarts"] == 1 and status["dead_letters"])

        await async_wait_for(restarted, 30, "a restart after the request went stale")
        status = await k.deployment(api, name)
        assert status["dead_letters"] == {"timeout": {"records": 1, "readings": 1}}
        companion = status["companion"]
        assert (companion["stale"], companion["timeouts"]) == (1, 1)
        accounted(companion)
        assert await k.state_of(api, name) == "degraded"


async def test_a_model_that_answers_errors_is_degraded_and_its_readings_dead_lettered(
    platform: Any, api: Api
) -> None:
    await k.sensors(api, "s1")
    name = await k.submit(
        api, k.manifest("too-many", [{"dataColumnName": "doubled"}]), {"model.py": TOO_MANY}
    )
    await deploy(api, name)
    now = int(time.time() * 1000)
    for i in range(5):
        await k.send(api, "s1", now + i, float(i))
    await k.wait_state(api, name, "degraded", timeout=20)
    model = (await api.http.get(f"/tenants/default/models/{name}/1.0.0")).json()
    assert "its last call failed: score answered 500" in model["state_reason"]

    async def all_lost() -> bool:
        companion = (await k.deployment(api, name))["companion"]
        return bool(companion["readings"]["dead_lettered"] == 5)

    await async_wait_for(all_lost, 20, "the five readings dead-lettered")
    status = await k.deployment(api, name)
    figures = accounted(status["companion"])
    assert figures["dead_lettered_by_reason"] == {"model-error": 5}
    assert status["health"]["problem"].startswith("its last call failed")

    async def written() -> bool:
        return sum(d["readings"] for d in await dead_letters(api, name)) == 5

    await async_wait_for(written, 10, "the dead letters written")
    assert await k.history(api, "s1", "doubled") == []  # nothing half-written
    # `fogline model status`'s data and the metrics show the same.
    metrics = (await api.http.get("/metrics")).text
    assert f'fogline_model_readings_total{{model="{name}",outcome="dead-lettered",' in metrics


async def test_late_readings_are_dead_lettered_for_a_stateful_time_window_model(
    platform: Any, api: Api
) -> None:
    await k.sensors(api, "s1")
    window = {
        "type": "TIME_WINDOW",
        "frequency": 1000,
        "timeWindowSize": 1000,
        "allowedLateness": 0,
        "idleTimeout": 500,
    }
    text = k.manifest("echo", [{"dataColumnName": "mean"}], window, stateful=True)
    name = await k.submit(api, text, {"model.py": ECHO})
    await deploy(api, name)
    now = (int(time.time() * 1000) // 1000) * 1000 - 29_500
    await k.send(api, "s1", now, 1.0)

    async def scored(count: int) -> Callable[[], Any]:
        async def check() -> bool:
            companion = (await k.deployment(api, name))["companion"]
            return bool(companion["readings"]["scored"] == count)

        return check

    await async_wait_for(await scored(1), 20, "the first reading scored (its window idle)")
    # Readings from an hour and a minute ago: long after their windows closed. Counted and
    # dead-lettered as late, never dropped unseen; a later reading is scored.
    await k.send(api, "s1", now - 3_600_000, 2.0)
    await k.send(api, "s1", now - 60_000, 3.0)
    await k.send(api, "s1", now + 2000, 4.0)
    await async_wait_for(await scored(2), 20, "the next window scored")
    companion = (await k.deployment(api, name))["companion"]
    accounted(companion)
    assert companion["late"] == 2
    assert companion["readings"]["dead_lettered_by_reason"] == {"late": 2}

    async def letters() -> list[Any]:
        return [d for d in await dead_letters(api, name) if d["reason_code"] == "late"]

    found = await async_wait_for(letters, 10, "the late readings' dead letter")
    assert sum(d["readings"] for d in found) == 2
    assert await k.history(api, "s1", "mean") == [[now, 1.0], [now + 2000, 4.0]]


async def test_readings_queued_at_stop_are_dead_lettered_as_discarded(
    platform: Any, api: Api
) -> None:
    await k.sensors(api, "s1")
    text = k.manifest("slow", [{"dataColumnName": "doubled"}], stateful=True)
    name = await k.submit(api, text, {"model.py": SLOW})
    await deploy(api, name)
    now = int(time.time() * 1000)
    for i in range(40):
        await k.send(api, "s1", now + i, float(i))

    async def waiting() -> bool:
        r = (await k.deployment(api, name))["companion"]["readings"]
        return bool(r["accepted"] == 40 and r["queued"] + r["in_flight"] > 0)

    await async_wait_for(waiting, 20, "all accepted, some waiting")
    r = await api.http.post(f"/tenants/default/models/{name}/1.0.0/stop")
    assert r.status_code == 202, r.text
    await k.wait_state(api, name, "stopped")
    companion = (await k.deployment(api, name))["companion"]
    figures = accounted(companion)
    assert (figures["queued"], figures["in_flight"]) == (0, 0)
    assert figures["accepted"] == 40
    discarded = figures["dead_lettered_by_reason"]["discarded-at-stop"]
    assert discarded > 0 and discarded == 40 - figures["scored"]
    letters = await dead_letters(api, name)
    assert sum(d["readings"] for d in letters) == discarded
    assert all(d["reason"].startswith("the model was stopped") for d in letters)


# An asynchronous window model whose answer is large: 4,000 characters per reading.
LONG_TEXT = """
from fogline.sdk import serve

def score(readings):
    return [{"level": "x" * 4000} for r in readings]

serve(score=score)
"""


async def test_a_large_asynchronous_answer_is_taken_whole(platform: Any, api: Api) -> None:
    """An answer on the callback may be as large as a direct one (here 1.2 MB, over the API's
    1 MiB default for documents); a callback to an address no companion gave out is refused
    before its body is read."""
    await k.sensors(api, "s1")
    window = {
        "type": "TIME_WINDOW",
        "frequency": 600_000,
        "timeWindowSize": 600_000,
        "idleTimeout": 500,
    }
    outputs = [{"dataColumnName": "level", "readAsString": True}]
    text = k.manifest("long-text", outputs, window, **{"async": True})
    name = await k.submit(api, text, {"model.py": LONG_TEXT})
    await deploy(api, name)
    # 300 readings in one 10-minute window: one call, one answer of 1.2 MB.
    start = (int(time.time() * 1000) // 600_000 - 1) * 600_000
    readings = [
        {"asset": "s1", "ts": start + 1000 + i, "values": {"temperature": 1.0}} for i in range(300)
    ]
    r = await api.http.post("/tenants/default/devices/gw/telemetry", json=readings)
    assert r.status_code == 202, r.text

    async def written() -> bool:
        return len(await k.history(api, "s1", "level")) == 300

    await async_wait_for(written, 30, "every long text written")
    companion = (await k.deployment(api, name))["companion"]
    accounted(companion)
    assert companion["refused_outputs"] == 0 and companion["stale"] == 0

    body = b'{"outputs": []}' + b" " * (2 * 1024 * 1024)
    r = await api.http.post(f"/model-callbacks/{'0' * 64}/r1", content=body)
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
