"""Issue 14, point 4: TIME_WINDOW windows follow the readings' own timestamps. History
replayed an hour late and out of order is windowed exactly as the same readings sent live; a
reading past the allowed lateness is dead-lettered as `late`; `model backfill` runs a deployed
model over stored history and writes its outputs at the original times."""

from __future__ import annotations

import time
from typing import Any

from tests import model_kit as k
from tests.conftest import Api, async_wait_for

HOUR = 3_600_000
WINDOW = 10_000
TRIGGER = {
    "type": "TIME_WINDOW",
    "frequency": WINDOW,
    "timeWindowSize": WINDOW,
    "allowedLateness": 5000,
    "idleTimeout": 1500,
}

# Per asset and window: the mean and how many readings, at the time of its last reading, and
# the window's start as the call gave it.
WINDOW_STATS = """
import statistics
from fogline.sdk import Model, serve

class Stats(Model):
    def score_window(self, readings, window):
        by_asset = {}
        for r in readings:
            by_asset.setdefault(r.asset, []).append(r)
        start = window["start"]
        return [
            {"asset": a, "ts": rs[-1].ts,
             "values": {"mean": statistics.fmean(r.values["temperature"] for r in rs),
                        "count": len(rs), "start": start,
                        "ordered": float([r.ts for r in rs] == sorted(r.ts for r in rs))}}
            for a, rs in by_asset.items()
        ]

serve(Stats())
"""

OUTPUTS = [
    {"dataColumnName": "mean"},
    {"dataColumnName": "count"},
    {"dataColumnName": "start"},
    {"dataColumnName": "ordered"},
]


def window_start_in_the_past(windows_back: int) -> int:
    now = int(time.time() * 1000)
    return (now // WINDOW - windows_back) * WINDOW


def readings(asset: str, base: int, count: int = 30) -> list[dict[str, Any]]:
    """One a second, half a second into each second; temperature i."""
    return [
        {"asset": asset, "ts": base + 500 + i * 1000, "values": {"temperature": float(i)}}
        for i in range(count)
    ]


async def post(api: Api, batch: list[dict[str, Any]]) -> None:
    r = await api.http.post("/tenants/default/devices/gw/telemetry", json={"readings": batch})
    assert r.status_code == 202, r.text


async def outputs(api: Api, asset: str, count: int) -> dict[str, list[list[Any]]]:
    async def all_there() -> dict[str, list[list[Any]]] | None:
        got = {
            o["dataColumnName"]: await k.history(api, asset, o["dataColumnName"]) for o in OUTPUTS
        }
        return got if all(len(v) >= count for v in got.values()) else None

    return await async_wait_for(all_there, 30, f"{count} windows of {asset} scored")


async def sensors(api: Api, *assets: str) -> None:
    """The kit's sensors, their type with this test's outputs too."""
    await k.sensors(api, *assets)
    extra = [{"name": n, "dtype": "float"} for n in ("count", "start", "ordered", "total")]
    sensor = {**k.SENSOR_TYPE, "telemetry": [*k.SENSOR_TYPE["telemetry"], *extra]}
    r = await api.http.put("/tenants/default/asset-types/sensor", json=sensor)
    assert r.status_code == 200, r.text


async def deploy(api: Api, name: str, script: str, outputs: list[dict[str, Any]]) -> None:
    text = k.manifest(name, outputs, TRIGGER)
    await k.submit(api, text, {"model.py": script})
    await k.map_type(api, name)
    r = await api.http.post(f"/tenants/default/models/{name}/1.0.0/deploy")
    assert r.status_code == 202, r.text
    await k.wait_state(api, name, "active", timeout=60)


def accounted(companion: dict[str, Any]) -> None:
    r = companion["readings"]
    assert r["accepted"] == r["scored"] + r["dead_lettered"] + r["queued"] + r["in_flight"], r


async def test_history_replayed_late_and_out_of_order_is_windowed_as_live(
    platform: Any, api: Api
) -> None:
    await sensors(api, "live", "replay")
    await deploy(api, "stats", WINDOW_STATS, OUTPUTS)

    # `live`: the last three whole windows, in order, as a device sends them.
    live_base = window_start_in_the_past(3)
    for chunk in range(0, 30, 5):
        await post(api, readings("live", live_base)[chunk : chunk + 5])
    # `replay`: the same readings an hour earlier, each message in reverse order (out of order
    # by up to 4 s, within the 5 s allowed lateness).
    replay_base = live_base - HOUR
    for chunk in range(0, 30, 5):
        await post(api, readings("replay", replay_base)[chunk : chunk + 5][::-1])

    live = await outputs(api, "live", 3)
    replay = await outputs(api, "replay", 3)
    assert live["count"] == [
        [live_base + w * WINDOW + 9500, 10.0] for w in range(3)
    ]  # each window whole, its output at its last reading
    assert live["mean"] == [[live_base + w * WINDOW + 9500, 10.0 * w + 4.5] for w in range(3)]
    assert live["start"] == [
        [live_base + w * WINDOW + 9500, live_base + w * WINDOW] for w in range(3)
    ]
    assert [v for _, v in replay["ordered"]] == [1.0, 1.0, 1.0]  # sorted by event time
    for column in ("mean", "count", "ordered"):
        assert [[ts + HOUR, v] for ts, v in replay[column]] == live[column], column
    assert [[ts + HOUR, v + HOUR] for ts, v in replay["start"]] == live["start"]

    # A reading for a window closed long ago: dead-lettered as late, not dropped unseen.
    await post(api, [{"asset": "replay", "ts": replay_base + 1234, "values": {"temperature": 99}}])

    async def late_letter() -> list[dict[str, Any]]:
        r = await api.http.get("/tenants/default/models/stats/1.0.0/dead-letters")
        return [d for d in r.json()["items"] if d["reason_code"] == "late"]

    [letter] = await async_wait_for(late_letter, 15, "the late reading dead-lettered")
    assert (letter["asset"], letter["ts"], letter["readings"]) == ("replay", replay_base + 1234, 1)
    companion = (await k.deployment(api, "stats"))["companion"]
    assert companion["late"] == 1 and companion["windows"] == 6
    assert companion["readings"]["dead_lettered_by_reason"] == {"late": 1}
    assert companion["windowing"]["allowed_lateness_ms"] == 5000
    accounted(companion)
    assert len(await k.history(api, "replay", "count")) == 3  # no window scored again


WINDOW_SUM = """
from fogline.sdk import serve

def score(readings):
    by_asset = {}
    for r in readings:
        by_asset.setdefault(r.asset, []).append(r)
    return [{"asset": a, "ts": rs[-1].ts,
             "values": {"total": sum(r.values["temperature"] for r in rs)}}
            for a, rs in by_asset.items()]

serve(score=score)
"""


async def test_backfill_runs_a_deployed_model_over_stored_history(platform: Any, api: Api) -> None:
    await sensors(api, "s1")
    base = window_start_in_the_past(6) - 2 * HOUR
    await post(api, readings("s1", base, 40))  # before the model exists: stored only

    async def stored() -> bool:
        return len(await k.history(api, "s1", "temperature")) == 40

    await async_wait_for(stored, 20, "the history stored")
    await deploy(api, "summer", WINDOW_SUM, [{"dataColumnName": "total"}])
    assert await k.history(api, "s1", "total") == []  # history is not fed live

    path = "/tenants/default/models/summer/1.0.0/backfills"
    # From the middle of the second window: that window is scored whole, the first is not.
    body = {"asset": "s1", "from": str(base + WINDOW + 3000), "to": str(base + 4 * WINDOW)}
    r = await api.http.post(path, json=body)
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["readings_read"] == 27 and report["windows"] == 3 and report["calls"] == 3
    assert report["scored"] == 30 and report["outputs_written"] == 3
    assert report["dead_lettered"] == 0 and report["refused_outputs"] == 0
    expected = [[base + w * WINDOW + 9500, sum(range(10 * w, 10 * w + 10))] for w in (1, 2, 3)]

    async def stored() -> bool:  # written to the stream: the historian stores them next
        return await k.history(api, "s1", "total") == expected

    await async_wait_for(stored, timeout=30, what="the backfill's outputs in the history")

    # Refused, clearly.
    inverted = {**body, "from": body["to"], "to": body["from"]}
    r = await api.http.post(path, json=inverted)
    assert r.status_code == 422 and "empty or inverted" in r.text
    r = await api.http.post(path, json={**body, "from": "-3d", "to": "now"})
    assert r.status_code == 422 and "24 h per backfill" in r.text
    r = await api.http.post(path, json={**body, "asset": "nowhere"})
    assert r.status_code == 422 and "not mapped" in r.text
    r = await api.http.post(path, json={**body, "from": "yesterday-ish"})
    assert r.status_code == 422
    r = await api.http.post(path, json={**body, "from": "+1h", "to": "+2h"})
    assert r.status_code == 422 and "in the future" in r.text
    await k.submit(
        api, k.manifest("summer", None, TRIGGER, version="2.0.0"), {"model.py": WINDOW_SUM}
    )
    r = await api.http.post("/tenants/default/models/summer/2.0.0/backfills", json=body)
    assert r.status_code == 409 and "deploy it first" in r.text


SLIDING = {**TRIGGER, "frequency": 2000}  # 10 s windows every 2 s


async def test_sliding_windows_a_clock_ahead_and_late_readings_en_masse(
    platform: Any, api: Api
) -> None:
    """Point 4 reviewed: trailing sliding windows never overwrite a full window's output; a
    reading from a clock 23 h ahead is dead-lettered as `future` and does not make the next
    readings late; a stream dead-lettered as late en masse makes the model degraded."""
    await sensors(api, "slide", "ahead")
    text = k.manifest("slider", OUTPUTS, SLIDING)
    await k.submit(api, text, {"model.py": WINDOW_STATS})
    await k.map_type(api, "slider")
    r = await api.http.post("/tenants/default/models/slider/1.0.0/deploy")
    assert r.status_code == 202, r.text
    await k.wait_state(api, "slider", "active", timeout=60)

    # 30 readings a second apart, an hour ago: 19 windows hold them, the last 4 of which only
    # hold readings of earlier windows (they would all end at the last reading).
    base = window_start_in_the_past(6) - HOUR
    await post(api, readings("slide", base))
    got = await outputs(api, "slide", 15)
    last = base + 29_500
    assert [ts for ts, _ in got["count"]] == [
        min(base - 8000 + 2000 * w + 9500, last) for w in range(15)
    ]
    assert got["count"][-1] == [last, 10.0]  # the full window [base + 20 s, base + 30 s)

    async def quiet() -> dict[str, Any] | None:
        c = (await k.deployment(api, "slider"))["companion"]
        return c if c["windowing"]["open_windows"] == 0 and c["windows"] == 15 else None

    companion = await async_wait_for(quiet, 15, "every window of slide closed")
    assert companion["covered_windows"] == 4 and companion["outputs_overwritten"] == 0
    assert companion["window_memberships"] == 130  # 5 windows a reading, less the 4 covered
    assert companion["readings"]["accepted"] == 30 and companion["readings"]["scored"] == 30
    accounted(companion)
    assert len(await k.history(api, "slide", "count")) == 15

    # One reading from a clock 23 h ahead, then 15 right ones: only the first is lost.
    now = int(time.time() * 1000)
    await post(api, [{"asset": "ahead", "ts": now + 23 * HOUR, "values": {"temperature": 1.0}}])
    await post(api, readings("ahead", now - 16_000, 15))

    async def scored() -> dict[str, Any] | None:
        c = (await k.deployment(api, "slider"))["companion"]
        return c if c["readings"]["scored"] == 45 else None

    companion = await async_wait_for(scored, 20, "the 15 right readings of ahead scored")
    assert companion["future"] == 1 and companion["late"] == 0
    assert companion["readings"]["dead_lettered_by_reason"] == {"future": 1}
    accounted(companion)

    async def letters(reason: str) -> list[dict[str, Any]]:
        r = await api.http.get("/tenants/default/models/slider/1.0.0/dead-letters")
        return [d for d in r.json()["items"] if d["reason_code"] == reason]

    [letter] = await async_wait_for(lambda: letters("future"), 15, "the future one")
    assert letter["ts"] == now + 23 * HOUR and "ahead of the platform's clock" in letter["reason"]
    assert await k.state_of(api, "slider") == "active"

    # 60 readings for windows of slide that closed long ago: late, and the model says so.
    await post(
        api,
        [
            {"asset": "slide", "ts": base + 100 + i * 400, "values": {"temperature": 0.0}}
            for i in range(60)
        ],
    )
    await k.wait_state(api, "slider", "degraded", timeout=20)
    model = (await api.http.get("/tenants/default/models/slider/1.0.0")).json()
    assert "dead-lettered as late or future" in model["state_reason"], model
    companion = (await k.deployment(api, "slider"))["companion"]
    assert companion["late"] == 60
    accounted(companion)


async def test_backfill_of_a_stateful_model_is_refused_unless_acknowledged(
    platform: Any, api: Api
) -> None:
    """Its state would learn the old readings in the middle of the live stream, and the past
    outputs would come from today's state: 409 unless `stateful_ok`."""
    await k.sensors(api, "t1")
    base = window_start_in_the_past(2) - HOUR
    await post(api, readings("t1", base, 5))

    async def stored() -> bool:
        return len(await k.history(api, "t1", "temperature")) == 5

    await async_wait_for(stored, 20, "the history stored")
    await k.submit(api, k.manifest("keeper", stateful=True), {"model.py": k.DOUBLER})
    await k.map_type(api, "keeper")
    r = await api.http.post("/tenants/default/models/keeper/1.0.0/deploy")
    assert r.status_code == 202, r.text
    await k.wait_state(api, "keeper", "active", timeout=60)

    path = "/tenants/default/models/keeper/1.0.0/backfills"
    body = {"asset": "t1", "from": str(base), "to": str(base + WINDOW)}
    r = await api.http.post(path, json=body)
    assert r.status_code == 409 and "stateful" in r.text and "stateful_ok" in r.text, r.text
    assert await k.history(api, "t1", "doubled") == []
    r = await api.http.post(path, json={**body, "stateful_ok": True})
    assert r.status_code == 200, r.text
    assert r.json()["scored"] == 5 and r.json()["outputs_written"] == 10
