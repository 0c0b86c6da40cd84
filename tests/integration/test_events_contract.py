"""The platform-events contract: each event published by its owner reaches a subscriber in
another process (`fogline events --follow`, a real user's path), survives a platform restart
and is replayable from a sequence."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from tests import model_kit as k
from tests.conftest import Api

EVERY_TYPE = {
    "registry.changed",
    "device.changed",
    "model.transitioned",
    "mappings.changed",
    "deployment.step",
}


@contextmanager
def follower(url: str, key: str, after: int = 0) -> Iterator[queue.Queue[dict[str, Any]]]:
    """`fogline events --follow --json` in its own process; its events arrive on the queue."""
    command = [sys.executable, "-m", "fogline.cli.main", "--url", url, "--api-key", key]
    command += ["--json", "events", "--follow", "--after", str(after)]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "FOGLINE_DATA_DIR": "/nonexistent"},
    )
    lines: queue.Queue[dict[str, Any]] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(json.loads(line))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        yield lines
    except AssertionError as failed:  # say what the follower said, if anything
        process.terminate()
        _, errors = process.communicate(timeout=10)
        raise AssertionError(f"{failed}; the follower's stderr: {errors[-2000:]!r}") from None
    finally:
        process.terminate()
        process.wait(10)
        reader.join(5)


def collect_until(
    lines: queue.Queue[dict[str, Any]],
    done: Callable[[list[dict[str, Any]]], bool],
    timeout: float = 60.0,
) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while not done(seen):
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"events seen: {[s['event']['type'] for s in seen]}"
        try:
            seen.append(lines.get(timeout=remaining))
        except queue.Empty:
            continue
    return seen


def types_of(stored: list[dict[str, Any]]) -> set[str]:
    return {s["event"]["type"] for s in stored}


async def test_events_reach_another_process_survive_a_restart_and_replay(
    platform_settings: Callable[..., Any],
) -> None:
    from fogline.app.platform import Platform

    settings = platform_settings(model_health_interval=0.5)
    p = Platform(settings)
    await p.start()
    key = p.bootstrap.admin_key
    assert key is not None
    api = Api(p.http_url, key)
    try:
        with follower(p.http_url, key) as lines:
            await k.sensors(api, "s1")  # an asset type, an asset, a device
            name = await k.submit(api, k.manifest("doubler"), {"model.py": k.DOUBLER})
            await k.map_type(api, name)
            assert (await api.http.post(f"/tenants/default/models/{name}/1.0.0/deploy")).is_success
            await k.wait_state(api, name, "active")
            assert (await api.http.post(f"/tenants/default/models/{name}/1.0.0/stop")).is_success
            await k.wait_state(api, name, "stopped")

            def stopped(seen: list[dict[str, Any]]) -> bool:
                return any(s["event"].get("to_state") == "stopped" for s in seen)

            # In a thread: the platform runs on this test's event loop and must go on serving.
            followed = await asyncio.to_thread(
                collect_until, lines, lambda seen: types_of(seen) >= EVERY_TYPE and stopped(seen)
            )
    finally:
        await api.close()
        await p.stop()

    by_type = {t: [s["event"] for s in followed if s["event"]["type"] == t] for t in EVERY_TYPE}
    assert {(e["kind"], e["target"], e["change"]) for e in by_type["registry.changed"]} >= {
        ("asset_type", "sensor", "created"),
        ("asset", "s1", "created"),
    }
    assert by_type["device.changed"][0]["device"] == "gw"
    moves = [(e["event"], e["from_state"], e["to_state"]) for e in by_type["model.transitioned"]]
    assert moves[:3] == [
        ("submit", None, "draft"),
        ("deploy", "draft", "deploying"),
        ("deployed", "deploying", "active"),
    ]
    assert by_type["mappings.changed"][0]["asset_types"] == ["sensor"]
    steps = {(e["saga"], e["step"], e["status"]) for e in by_type["deployment.step"]}
    assert ("deploy", "wait-healthy", "done") in steps
    sequences = [s["seq"] for s in followed]
    assert sequences == sorted(sequences) and len(set(sequences)) == len(sequences)

    # A new platform on the same data dir: every event is still there, in the same order,
    # and a reader resumes after any sequence.
    again = Platform(settings)
    await again.start()
    api = Api(again.http_url, key)
    try:
        page = (await api.http.get("/tenants/default/events", params={"limit": 1000})).json()
        stored = [s for s in page["events"] if s["seq"] <= sequences[-1]]
        assert [(s["seq"], s["event"]["id"]) for s in stored] == [
            (s["seq"], s["event"]["id"]) for s in followed
        ]
        middle = sequences[len(sequences) // 2]
        r = await api.http.get(
            "/tenants/default/events",
            params={"after": middle, "type": "model.transitioned", "limit": 1000},
        )
        resumed = r.json()["events"]
        twice = {"type": ["model.transitioned", "model.transitioned"], "after": middle}
        r = await api.http.get("/tenants/default/events", params={**twice, "limit": 1000})
        assert r.json()["events"] == resumed  # a type asked for twice is asked for once
        assert resumed and all(s["seq"] > middle for s in resumed)
        assert {s["event"]["type"] for s in resumed} == {"model.transitioned"}
        with follower(again.http_url, key, after=middle) as lines:
            replayed = await asyncio.to_thread(
                collect_until,
                lines,
                lambda seen: len(seen) >= len(followed) - sequences.index(middle) - 1,
            )
        assert [s["seq"] for s in replayed][: len(followed)] == [q for q in sequences if q > middle]
        r = await api.http.post("/tenants", json={"id": "other", "name": "Other"})
        other = api.as_key(r.json()["api_key"])
        try:  # a tenant sees its own events only
            assert (await other.http.get("/tenants/other/events")).json()["events"] == []
            assert (await other.http.get("/tenants/default/events")).status_code == 403
        finally:
            await other.close()
    finally:
        await api.close()
        await again.stop()


async def test_a_revoked_key_ends_its_event_stream_and_bad_sequences_are_refused(
    platform: Any, api: Api
) -> None:
    r = await api.http.post("/tenants/default/api-keys", json={"name": "watcher"})
    watcher, key_id = api.as_key(r.json()["api_key"]), r.json()["key"]["id"]
    await k.sensors(api, "s1")  # something to replay first
    seen: list[str] = []
    replayed = asyncio.Event()

    async def follow() -> None:
        path = "/tenants/default/events/stream"
        async with watcher.http.stream("GET", path, timeout=30) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line.startswith("event:"):
                    seen.append(line[6:].strip())
                    if seen[-1] != "following":  # the replay's first event came
                        replayed.set()

    stream = asyncio.create_task(follow())
    try:
        async with asyncio.timeout(15):
            await replayed.wait()
        assert (await api.http.delete(f"/tenants/default/api-keys/{key_id}")).status_code == 204
        async with asyncio.timeout(10):  # the server ends the stream; the client would read on
            await stream
    finally:
        stream.cancel()
        await watcher.close()
    assert seen[:2] == ["following", "registry.changed"] and seen[-1] == "error"

    for query in ({"after": -1}, {"after": 2**64}, {"after": "abc"}, {"type": "nonsense"}):
        r = await api.http.get("/tenants/default/events", params=query)
        assert r.status_code == 422, (query, r.text)
        assert r.headers["content-type"] == "application/problem+json"
    r = await api.http.get("/tenants/default/events/stream", headers={"Last-Event-ID": "1e99"})
    assert r.status_code == 422
