"""Library models imported in one call, mapped to the virtual fleet's motor type, deployed."""

from __future__ import annotations

import time
from typing import Any

from fogline.sim.motors import MOTOR_TELEMETRY
from tests import model_kit as k
from tests.conftest import Api, async_wait_for


async def test_library_models_import_deploy_and_score(platform: Any, api: Api) -> None:
    listed = (await api.http.get("/library")).json()
    assert {m["name"] for m in listed} == {
        "temperature-anomaly",
        "robust-anomaly",
        "forecast-anomaly",
        "discord-anomaly",
        "motor-anomaly",
        "motor-failure",
    }
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
    # a detector of any signal: its `value` column read from the current, its outputs
    # written to telemetry the motor type has
    r = await api.http.post("/tenants/default/library/robust-anomaly/import")
    assert r.status_code == 201, r.text
    mapping = {
        "inputs": {"value": "current"},
        "outputs": {"value_score": "anomaly_score", "value_level": "anomaly_warning"},
    }
    r = await api.http.put(
        "/tenants/default/models/robust-anomaly/1.0.0/mappings", json={"assets": {"m1": mapping}}
    )
    assert r.status_code == 200, r.text
    r = await api.http.post("/tenants/default/models/robust-anomaly/1.0.0/deploy")
    assert r.status_code == 202, r.text
    for name in ("temperature-anomaly", "motor-failure", "robust-anomaly"):
        await k.wait_state(api, name, "active", timeout=90)

    # Replayed history from an hour ago: windowed on the readings' own times, as if live.
    start = int(time.time() * 1000) - 3_600_000
    readings = [
        {
            "asset": "m1",
            "ts": start + i * 1000,
            # a worn bearing: vibration far out of line with the current
            "values": {"vibration": 7.5, "temperature": 60.0, "current": 9.6, "sound_level": 87.0},
        }
        for i in range(10)
    ]
    r = await api.http.post("/tenants/default/devices/gw/telemetry", json={"readings": readings})
    assert r.status_code == 202

    async def scored(telemetry: str) -> list[Any]:
        return await k.history(api, "m1", telemetry)

    # ten readings are the detector's warm-up: it says so rather than scoring 0.0
    levels = await async_wait_for(lambda: scored("temperature_warning"), 30, "level")
    assert len(levels) == 10 and {v for _, v in levels} == {"warming-up"}
    assert await scored("temperature_score") == []
    levels = await async_wait_for(lambda: scored("anomaly_warning"), 30, "robust level")
    assert len(levels) == 10 and {v for _, v in levels} == {"warming-up"}
    warnings = await async_wait_for(lambda: scored("failure_warning"), 45, "failure warning")
    assert warnings[-1][1] in ("warning", "alarm")
    assert start <= warnings[-1][0] < start + 10_000  # at the time of a replayed reading


async def test_a_library_model_runs_with_the_parameters_given_at_import(
    platform: Any, api: Api
) -> None:
    """The manifest's parameters reach the model process: a median over 10 readings and 20
    residuals of calibration, the detector scores from the 23rd reading (with its defaults,
    1440 and 240, it would still be warming up at the 30th)."""
    shown = (await api.http.get("/library/temperature-anomaly")).json()
    assert shown["parameters"]["warm_up"]["default"] == 240
    assert shown["parameters"]["warm_up"]["minimum"] == 20

    path = "/tenants/default/library/temperature-anomaly/import"
    bad = {"parameters": {"warm_up": 5, "alarm": "high", "nope": 1}}
    r = await api.http.post(path, json=bad)
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    assert [e["field"] for e in r.json()["errors"]] == [
        "parameters.warm_up",
        "parameters.alarm",
        "parameters.nope",
    ]
    # The outside review's values: one answer names them all, and the cross check runs with
    # those that passed (alarm 1.1), the defaults standing in for the refused (warning 1.3).
    reviewed = {
        "nope": 1,
        "period_s": -5,
        "window": "abc",
        "bins": 1e9,  # a whole number: judged by its value
        "warning": "nan",
        "alarm": 1.1,
    }
    r = await api.http.post(
        "/tenants/default/library/robust-anomaly/import", json={"parameters": reviewed}
    )
    assert r.status_code == 422
    errors = {e["field"]: e["reason"] for e in r.json()["errors"]}
    assert sorted(errors) == [
        "parameters",
        "parameters.bins",
        "parameters.nope",
        "parameters.period_s",
        "parameters.warning",
        "parameters.window",
    ], errors
    assert "1000000000 is above the maximum 1440" in errors["parameters.bins"]
    assert "need 0 < warning <= alarm, got 1.3 and 1.1" in errors["parameters"]
    # What types and bounds cannot say is checked by building the detector, at import.
    discord = {"parameters": {"m": 1000, "history": 1500}}
    r = await api.http.post("/tenants/default/library/discord-anomaly/import", json=discord)
    assert r.status_code == 422 and "history (1500) must be at least 2 x m" in r.text
    assert (await api.http.get("/tenants/default/models")).json() == []  # nothing half-made

    settings = {"window": 10, "warm_up": 20, "calibration": 50}
    r = await api.http.post(path, json={"parameters": settings, "version": "1.0.1"})
    assert r.status_code == 201, r.text
    model = (await api.http.get("/tenants/default/models/temperature-anomaly/1.0.1")).json()
    assert model["manifest"]["manifest"]["parameters"]["warm_up"]["value"] == 20

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
        for i in range(30)
    ]
    r = await api.http.post("/tenants/default/devices/gw/telemetry", json={"readings": readings})
    assert r.status_code == 202
    levels = await async_wait_for(
        lambda: _when(k.history(api, "m1", "temperature_warning"), 30), 30, "30 levels"
    )
    assert [v for _, v in levels[:22]] == ["warming-up"] * 22
    assert "warming-up" not in [v for _, v in levels[22:]], levels
    scores = await k.history(api, "m1", "temperature_score")
    assert [ts for ts, _ in scores] == [ts for ts, _ in levels[22:]]


async def _when(points: Any, count: int) -> list[Any] | None:
    found = await points
    return found if len(found) >= count else None
