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

    assert len(await async_wait_for(lambda: scored("temperature_score"), 30, "z")) == 10
    warnings = await async_wait_for(lambda: scored("failure_warning"), 45, "failure warning")
    assert warnings[-1][1] in ("warning", "alarm")
    assert start <= warnings[-1][0] < start + 10_000  # at the time of a replayed reading
