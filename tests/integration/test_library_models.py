"""Library models imported in one call, mapped to the virtual fleet's motor type, deployed."""

from __future__ import annotations

import time
from typing import Any

from fogline.sim.motors import MOTOR_TELEMETRY
from tests import model_kit as k
from tests.conftest import Api, async_wait_for


async def test_library_models_import_deploy_and_score(platform: Any, api: Api) -> None:
    listed = (await api.http.get("/library")).json()
    assert {m["name"] for m in listed} == {"temperature-anomaly", "motor-anomaly", "motor-failure"}
    r = await api.http.post("/tenants/default/library/nothing/import")
    assert r.status_code == 404 and "motor-failure" in r.json()["detail"]

    motor = {"name": "Motor", "telemetry": MOTOR_TELEMETRY}
    assert (await api.http.put("/tenants/default/asset-types/motor", json=motor)).status_code == 201
    r = await api.http.post("/tenants/default/assets", json={"id": "m1", "asset_type": "motor"})
    assert r.status_code == 201
    assert (await api.http.post("/tenants/default/devices", json={"id": "gw"})).status_code == 201
    for name in ("temperature-anomaly", "motor-failure"):
        r = await api.http.post(f"/tenants/default/library/{name}/import")
        assert r.status_code == 201, r.text
        r = await api.http.put(
            f"/tenants/default/models/{name}/1.0.0/mappings", json={"asset_types": ["motor"]}
        )
        assert r.status_code == 200, r.text
        assert (
            await api.http.post(f"/tenants/default/models/{name}/1.0.0/deploy")
        ).status_code == 202
    for name in ("temperature-anomaly", "motor-failure"):
        await k.wait_state(api, name, "active", timeout=90)

    now = int(time.time() * 1000)
    readings = [
        {
            "asset": "m1",
            "ts": now - 10_000 + i * 1000,
            # a worn bearing: vibration far out of line with the current
            "values": {"vibration": 7.5, "temperature": 60.0, "current": 9.6, "sound_level": 87.0},
        }
        for i in range(10)
    ]
    r = await api.http.post("/tenants/default/devices/gw/telemetry", json={"readings": readings})
    assert r.status_code == 202

    async def scored(telemetry: str) -> list[Any]:
        return await k.history(api, "m1", telemetry)

    assert len(await async_wait_for(lambda: scored("temperature_score"), 30, "z")) == 10
    warnings = await async_wait_for(lambda: scored("failure_warning"), 30, "failure warning")
    assert warnings[-1][1] in ("warning", "alarm")


async def test_a_library_model_runs_with_the_parameters_given_at_import(
    platform: Any, api: Api
) -> None:
    """The manifest's parameters reach the model process: warm-up set to 10 readings, the
    detector scores from the 11th (with its default of 60 it would score none of 15)."""
    shown = (await api.http.get("/library/temperature-anomaly")).json()
    assert shown["parameters"]["warm_up"]["default"] == 60
    assert shown["parameters"]["warm_up"]["minimum"] == 10

    path = "/tenants/default/library/temperature-anomaly/import"
    bad = {"parameters": {"warm_up": 5, "alarm_z": "high", "nope": 1}}
    r = await api.http.post(path, json=bad)
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    assert [e["field"] for e in r.json()["errors"]] == ["parameters.nope"]
    r = await api.http.post(path, json={"parameters": {"warm_up": 5, "alarm_z": "high"}})
    assert r.status_code == 422
    assert {e["field"] for e in r.json()["errors"]} == {
        "manifest.parameters.warm_up.value",
        "manifest.parameters.alarm_z.value",
    }
    assert (await api.http.get("/tenants/default/models")).json() == []  # nothing half-made

    r = await api.http.post(path, json={"parameters": {"warm_up": 10}, "version": "1.0.1"})
    assert r.status_code == 201, r.text
    model = (await api.http.get("/tenants/default/models/temperature-anomaly/1.0.1")).json()
    assert model["manifest"]["manifest"]["parameters"]["warm_up"]["value"] == 10

    motor = {"name": "Motor", "telemetry": MOTOR_TELEMETRY}
    assert (await api.http.put("/tenants/default/asset-types/motor", json=motor)).status_code == 201
    r = await api.http.post("/tenants/default/assets", json={"id": "m1", "asset_type": "motor"})
    assert r.status_code == 201
    assert (await api.http.post("/tenants/default/devices", json={"id": "gw"})).status_code == 201
    base = "/tenants/default/models/temperature-anomaly/1.0.1"
    r = await api.http.put(f"{base}/mappings", json={"asset_types": ["motor"]})
    assert r.status_code == 200, r.text
    assert (await api.http.post(f"{base}/deploy")).status_code == 202
    await k.wait_state(api, "temperature-anomaly", "active", timeout=90, version="1.0.1")

    now = int(time.time() * 1000)
    readings = [
        {"asset": "m1", "ts": now - 20_000 + i * 1000, "values": {"temperature": 60.0 + i % 2}}
        for i in range(15)
    ]
    r = await api.http.post("/tenants/default/devices/gw/telemetry", json={"readings": readings})
    assert r.status_code == 202
    scores = await async_wait_for(
        lambda: _when(k.history(api, "m1", "temperature_score"), 15), 30, "15 scores"
    )
    assert [v for _, v in scores[:10]] == [0.0] * 10
    assert all(v > 0 for _, v in scores[10:]), scores


async def _when(points: Any, count: int) -> list[Any] | None:
    found = await points
    return found if len(found) >= count else None
