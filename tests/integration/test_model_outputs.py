"""Issue 12, safe outputs: real SDK models deployed through the API on a real platform answer
what careless and hostile authors write (NaN, Infinity, dicts, numbers for text, a 5 MB
string, hundreds of 4,000-character strings, outputs at a foreign time); every valid value is
stored, each bad one is refused alone. Outputs may not be mapped onto the model's own inputs or
onto telemetry devices write, and a model never overwrites a device's reading."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson

from fogline.bus.connection import Bus
from fogline.bus.subjects import Subjects
from fogline.models.manifest import parse_manifest
from fogline.models.mappings import ResolvedAsset
from fogline.models.outputs import OutputWriter
from fogline.models.runtimes.base import ModelSpec
from tests import model_kit as k
from tests.conftest import Api, async_wait_for

# A stateful TIME_WINDOW model: readings of one 10-minute window come in one call, once the
# asset has been quiet for half a second.
ONCE = {
    "type": "TIME_WINDOW",
    "frequency": 600_000,
    "timeWindowSize": 600_000,
    "idleTimeout": 500,
}

CARELESS = """
import math
from fogline.sdk import serve

def score(readings):
    outputs = []
    for r in readings:
        n = int(r.values["temperature"])
        doubled, level = n * 2.0, f"ok-{n}"
        if n == 1: doubled = math.nan
        if n == 2: doubled = -math.inf
        if n == 3: doubled, level = "6.0", 3
        if n == 4: level = {"a": 1}
        if n == 5: level = None
        if n == 6: level = "x" * 5_000_000
        outputs.append({"doubled": doubled, "level": level})
    return outputs

serve(score=score)
"""

WORDY = """
from fogline.sdk import serve

def score(readings):
    return [
        {"doubled": r.values["temperature"] * 2,
         "level": f"{int(r.values['temperature']):04d}" + "y" * 3996}
        for r in readings
    ]

serve(score=score)
"""

TIME_TRAVELLER = """
from fogline.sdk import serve

def score(readings):
    outputs = []
    for r in readings:
        outputs.append({"asset": r.asset, "ts": r.ts, "values": {"mean": 1.0}})
        outputs.append({"asset": r.asset, "ts": r.ts - 86_400_000, "values": {"mean": 2.0}})
        outputs.append({"asset": "s2", "ts": r.ts, "values": {"mean": 3.0}})
    return outputs

serve(score=score)
"""


async def history(api: Api, asset: str, telemetry: str) -> list[list[Any]]:
    r = await api.http.get(
        f"/tenants/default/assets/{asset}/telemetry/history",
        params={"keys": telemetry, "from": "0", "limit": 100_000},
    )
    assert r.status_code == 200, r.text
    series = r.json()["series"].get(telemetry)
    return [] if series is None else list(series["points"])


async def post(api: Api, readings: list[dict[str, Any]], device: str = "gw") -> None:
    r = await api.http.post(
        f"/tenants/default/devices/{device}/telemetry", json={"readings": readings}
    )
    assert r.status_code == 202, r.text


async def stored(api: Api, asset: str, telemetry: str, count: int) -> list[list[Any]]:
    async def enough() -> list[list[Any]] | None:
        points = await history(api, asset, telemetry)
        return points if len(points) >= count else None

    found: list[list[Any]] = await async_wait_for(enough, 60, f"{count} {telemetry} of {asset}")
    return found


async def companion_once(api: Api, name: str, done: Callable[[dict[str, Any]], bool]) -> Any:
    async def settled() -> dict[str, Any] | None:
        companion = (await k.deployment(api, name))["companion"]
        return companion if companion and done(companion) else None

    return await async_wait_for(settled, 60, f"the companion of {name}")


async def refused_outputs(api: Api, name: str, count: int) -> list[tuple[Any, ...]]:
    """The model's refused-output dead letters, oldest first, once there are `count`:
    (detail_code, asset, ts, column, payload)."""

    async def kept() -> list[dict[str, Any]] | None:
        r = await api.http.get(f"/tenants/default/models/{name}/1.0.0/dead-letters")
        assert r.status_code == 200, r.text
        items = [d for d in r.json()["items"] if d["reason_code"] == "refused-output"]
        return items if len(items) >= count else None

    items = await async_wait_for(kept, 30, f"{count} refused outputs of {name}")
    assert all(d["readings"] == 0 for d in items)  # values, not readings: those were scored
    rows = [(d["detail_code"], d["asset"], d["ts"], d["column"], d["payload"]) for d in items]
    return sorted(rows, key=lambda row: (row[2] or 0, row[3] or ""))


async def deploy_on_window(api: Api, name: str, script: str, count: int) -> int:
    """A stateful TIME_WINDOW model deployed on s1, then `count` readings of s1 (temperature
    0 .. count-1, a second apart, in one past 10-minute window) in one message: they reach the
    model in one call."""
    await k.sensors(api, "s1")
    text = k.manifest(name, None, ONCE, stateful=True)
    await k.submit(api, text, {"model.py": script})
    await k.map_type(api, name)
    r = await api.http.post(f"/tenants/default/models/{name}/1.0.0/deploy")
    assert r.status_code == 202, r.text
    await k.wait_state(api, name, "active")
    t0 = (int(time.time() * 1000) // 600_000 - 1) * 600_000 + 1000
    await post(
        api,
        [{"asset": "s1", "ts": t0 + i * 1000, "values": {"temperature": i}} for i in range(count)],
    )
    return t0


async def test_each_bad_value_is_refused_alone_and_every_valid_one_stored(
    platform: Any, api: Api
) -> None:
    """140 readings in one call; one answer holds NaN, -Infinity, a number as text, a number
    for text, a dict, null and a 5 MB string: those 7 values are refused, the 273 others are
    stored (before: all 280 were lost with the 5 MB string)."""
    t0 = await deploy_on_window(api, "careless", CARELESS, 140)
    doubled = await stored(api, "s1", "doubled", 137)
    level = await stored(api, "s1", "level", 136)
    companion = await companion_once(api, "careless", lambda c: c["outputs"] >= 273)
    assert doubled == [[t0 + n * 1000, n * 2.0] for n in range(140) if n not in (1, 2, 3)]
    assert level == [[t0 + n * 1000, f"ok-{n}"] for n in range(140) if n not in (3, 4, 5, 6)]
    assert (companion["outputs"], companion["refused_outputs"]) == (273, 7)
    assert companion["scored"] == 140 and companion["calls"] == 1
    letters = await refused_outputs(api, "careless", 7)
    assert [row[:4] for row in letters] == [
        ("not-finite", "s1", t0 + 1000, "doubled"),
        ("not-finite", "s1", t0 + 2000, "doubled"),
        ("wrong-type", "s1", t0 + 3000, "doubled"),
        ("wrong-type", "s1", t0 + 3000, "level"),
        ("wrong-type", "s1", t0 + 4000, "level"),
        ("wrong-type", "s1", t0 + 5000, "level"),
        ("too-large", "s1", t0 + 6000, "level"),
    ]
    # Each kept as it was: no null for NaN, no repr, the number as text stays text.
    assert [row[4] for row in letters[:6]] == ["NaN", "-Infinity", '"6.0"', "3", '{"a": 1}', "null"]
    assert letters[6][4].startswith('"xxxx') and len(letters[6][4]) <= 2049
    # Nothing the companion published was refused by the historian.
    r = await api.http.get("/tenants/default/dead-letters")
    assert [d for d in r.json()["items"] if d["device"].startswith("model:")] == []


async def test_hundreds_of_long_texts_are_all_stored(platform: Any, api: Api) -> None:
    """300 valid 4,000-character texts (1.2 MB in one answer, over max_message_bytes) are
    published in chunks under it: all stored (before: every one of them was lost)."""
    t0 = await deploy_on_window(api, "wordy", WORDY, 300)
    level = await stored(api, "s1", "level", 300)
    assert level == [[t0 + n * 1000, f"{n:04d}" + "y" * 3996] for n in range(300)]
    assert await stored(api, "s1", "doubled", 300) == [[t0 + n * 1000, n * 2.0] for n in range(300)]
    companion = await companion_once(api, "wordy", lambda c: c["outputs"] >= 600)
    assert (companion["outputs"], companion["refused_outputs"]) == (600, 0)


async def test_a_callback_writes_only_at_the_times_of_its_requests_readings(
    platform: Any, api: Api
) -> None:
    await k.sensors(api, "s1", "s2")
    text = k.manifest("traveller", [{"dataColumnName": "mean"}], None, **{"async": True})
    name = await k.submit(api, text, {"model.py": TIME_TRAVELLER})
    await k.map_type(api, name)
    await api.http.post(f"/tenants/default/models/{name}/1.0.0/deploy")
    await k.wait_state(api, name, "active")
    now = int(time.time() * 1000)
    await k.send(api, "s1", now, 5.0)
    companion = await companion_once(api, name, lambda c: c["refused_outputs"] >= 2)
    # A day back, and on s2 that had no reading in the request: both refused.
    assert (companion["outputs"], companion["refused_outputs"]) == (1, 2)
    assert await refused_outputs(api, name, 2) == [
        ("bad-timestamp", "s1", now - 86_400_000, None, '{"mean": 2.0}'),
        ("bad-timestamp", "s2", now, None, '{"mean": 3.0}'),
    ]
    assert await history(api, "s1", "mean") == [[now, 1.0]]
    assert await history(api, "s2", "mean") == []


async def test_outputs_onto_inputs_or_device_telemetry_are_refused_at_mapping(
    platform: Any, api: Api
) -> None:
    await k.sensors(api, "s1", "s2")
    now = int(time.time() * 1000)
    await post(
        api,
        [
            {"asset": "s1", "ts": now, "values": {"temperature": 1.0, "level": "a"}},
            {"asset": "s2", "ts": now, "values": {"doubled": 2.0}},
        ],
    )
    await stored(api, "s2", "doubled", 1)
    await stored(api, "s1", "level", 1)
    name = await k.submit(api, k.manifest("selfish"))
    base = f"/tenants/default/models/{name}/1.0.0/mappings"
    r = await api.http.put(
        base,
        json={
            "assets": {"s1": {"outputs": {"doubled": "temperature"}}},
            "asset_types": ["sensor"],  # s2 now (s1 has a mapping of its own)
        },
    )
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    problems = sorted((e["field"], e["reason"]) for e in r.json()["errors"])
    assert [field for field, _ in problems] == [
        "asset_types.sensor.outputs.doubled",
        "assets.s1.outputs.doubled",
        "assets.s1.outputs.doubled",
        "assets.s1.outputs.level",
    ]
    reasons = "\n".join(reason for _, reason in problems)
    assert "devices write 'doubled' on asset 's2'" in reasons
    assert "writes 'temperature', which this model reads" in reasons
    assert "devices write 'temperature' on asset 's1'" in reasons
    assert "devices write 'level' on asset 's1'" in reasons
    assert (await api.http.get(base)).json()["resolved"] == []  # nothing was mapped
    # Outputs onto telemetry nobody else writes are fine.
    r = await api.http.put(base, json={"assets": {"s1": {"outputs": {"level": "mean"}}}})
    assert r.status_code == 422  # 'mean' is a float; 'level' is read as text
    r = await api.http.put(base, json={"assets": {"s2": {"outputs": {"doubled": "mean"}}}})
    assert r.status_code == 200, r.text


async def test_a_model_never_overwrites_what_a_device_writes(platform: Any, api: Api) -> None:
    """Mapped while no device wrote `doubled`; then a device does. From then on the model's
    `doubled` is refused by the historian (a dead letter that names the model's version), its
    other outputs are stored, and the device's values stay as the device wrote them."""
    await k.sensors(api, "s1")
    name = await k.submit(api, k.manifest("doubler"), {"model.py": k.DOUBLER})
    await k.map_type(api, name)
    await api.http.post(f"/tenants/default/models/{name}/1.0.0/deploy")
    await k.wait_state(api, name, "active")
    now = int(time.time() * 1000)
    await k.send(api, "s1", now, 10.0)
    assert await stored(api, "s1", "doubled", 1) == [[now, 20.0]]
    # A device writes doubled: alone, then in the same reading as the model's input.
    await post(api, [{"asset": "s1", "ts": now + 1, "values": {"doubled": 100.0}}])
    await stored(api, "s1", "doubled", 2)
    await post(
        api, [{"asset": "s1", "ts": now + 2, "values": {"temperature": 60.0, "doubled": 7.0}}]
    )
    await k.send(api, "s1", now + 3, 30.0)
    level = await stored(api, "s1", "level", 3)
    assert level == [[now, "ok"], [now + 2, "high"], [now + 3, "ok"]]

    async def refused() -> list[dict[str, Any]] | None:
        items = (await api.http.get("/tenants/default/dead-letters")).json()["items"]
        found = [d for d in items if d["reason_code"] == "device-telemetry"]
        return found if len(found) >= 2 else None

    letters = await async_wait_for(refused, 30, "the model's refused outputs")
    assert {(d["device"], d["asset"], d["telemetry"]) for d in letters} == {
        (f"model:{name}@1.0.0", "s1", "doubled")
    }
    assert sorted(orjson.loads(d["payload"])["doubled"] for d in letters) == [60.0, 120.0]
    assert await history(api, "s1", "doubled") == [[now, 20.0], [now + 1, 100.0], [now + 2, 7.0]]
    r = await api.http.get("/tenants/default/assets/s1/telemetry/latest")
    assert r.json()["values"]["doubled"]["value"] == 7.0
    # The model's own view says so too, and the dead letters can be asked for by its label.
    status = await k.deployment(api, name)
    assert status["outputs_refused_by_historian"] == {"device-telemetry": 2}
    r = await api.http.get(
        "/tenants/default/dead-letters", params={"device": f"model:{name}@1.0.0"}
    )
    assert r.status_code == 200 and len(r.json()["items"]) == 2


async def test_the_writer_chunks_under_max_message_bytes_and_gives_back_what_failed(
    platform_settings: Callable[..., Any],
) -> None:
    """The writer on its own, against the platform's bus and historian: a small
    max_message_bytes, 140 valid values and one too large for any message; then a bus on which
    no stream takes the outputs: every value comes back `publish-failed`, none counted."""
    from fogline.app.platform import Platform

    p = Platform(platform_settings(max_message_bytes=4096))
    await p.start()
    api = Api(p.http_url, p.bootstrap.admin_key)
    try:
        await k.sensors(api, "s1")
        outputs = [{"dataColumnName": "doubled"}, {"dataColumnName": "level", "readAsString": True}]
        manifest = parse_manifest(k.manifest("direct", outputs)).manifest
        spec = ModelSpec(0, "default", "direct", "2.1.0", manifest, None)
        columns = {"doubled": "doubled", "level": "level"}
        mapping = ResolvedAsset("s1", "asset", {"temperature": "temperature"}, columns)
        t0 = int(time.time() * 1000) - 10_000
        allowed = {"s1": {t0 + i for i in range(140)}}
        answer = {
            "outputs": [
                {"asset": "s1", "ts": t0 + i, "values": {"doubled": float(i), "level": "z" * 40}}
                for i in range(140)
            ]
        }
        answer["outputs"][70]["values"]["level"] = "é" * 4000  # 8 KB written: no message holds it
        writer = OutputWriter(spec, p.bus, p.settings.max_message_bytes)
        result = await writer.write(answer, allowed, {"s1": mapping})
        assert result.written == 279
        [refusal] = result.refused
        assert (refusal.reason_code, refusal.ts, refusal.column) == ("too-large", t0 + 70, "level")
        assert await stored(api, "s1", "doubled", 140) == [[t0 + i, float(i)] for i in range(140)]
        assert len(await stored(api, "s1", "level", 139)) == 139
        r = await api.http.get("/tenants/default/dead-letters")
        assert r.json()["items"] == []  # every message was under the historian's limit

        nowhere = Bus(p.bus.nc, Subjects("nostream"))
        lost = OutputWriter(spec, nowhere, 4096, publish_deadline_s=0.5)
        result = await lost.write(answer, allowed, {"s1": mapping})
        assert result.written == 0
        codes = [r.reason_code for r in result.refused]
        assert codes.count("publish-failed") == 279 and codes.count("too-large") == 1
        failed = next(r for r in result.refused if r.reason_code == "publish-failed")
        assert "publishing the outputs failed" in failed.reason
    finally:
        await api.close()
        await p.stop()
