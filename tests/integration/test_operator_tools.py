"""The operator's bulk tools over the API: importing devices (all or nothing, every problem at
once, the created devices log in over MQTT) and exporting an asset's history as CSV."""

from __future__ import annotations

import asyncio
import csv
import io
from typing import Any

from fogline.domain.timeseries import now_ms
from tests.conftest import Api, async_wait_for, setup_motor
from tests.mqtt_client import Device

IMPORT = "/tenants/default/device-imports"


async def device_ids(api: Api) -> list[str]:
    r = await api.http.get("/tenants/default/devices")
    assert r.status_code == 200, r.text
    return [d["id"] for d in r.json()]


async def test_a_batch_with_bad_rows_reports_every_problem_and_creates_nothing(
    platform: Any, api: Api
) -> None:
    r = await api.http.post("/tenants/default/devices", json={"id": "taken"})
    assert r.status_code == 201, r.text
    rows = [
        {"id": "ok-1", "name": "fine"},
        {"id": "Bad Id"},
        {"id": "ok-2", "hardware": {"cpu_cores": 0}},
        {"id": "taken"},
        {"id": "ok-1"},
        {"name": "no id"},
        {"id": "ok-3", "colour": "red"},
    ]
    r = await api.http.post(IMPORT, json={"devices": rows})
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    found = [(e["field"], e["reason"]) for e in r.json()["errors"]]
    fields = [f for f, _ in found]
    assert fields == [
        "devices.1.id",
        "devices.2.hardware.cpu_cores",
        "devices.3.id",
        "devices.4.id",
        "devices.5.id",
        "devices.6.colour",
    ], found
    assert "not a slug" in found[0][1]
    assert found[2][1] == "device 'taken' already exists"
    assert found[3][1] == "'ok-1' is also the id of devices.0"
    assert await device_ids(api) == ["taken"]

    # Only conflicts: 409, each listed.
    r = await api.http.post(IMPORT, json={"devices": [{"id": "new"}, {"id": "taken"}]})
    assert r.status_code == 409, r.text
    assert r.json()["errors"] == [
        {"field": "devices.1.id", "reason": "device 'taken' already exists"}
    ]
    assert await device_ids(api) == ["taken"]


async def test_imported_devices_connect_with_their_passwords(platform: Any, api: Api) -> None:
    rows = [{"id": f"sensor-{i}", "labels": {"site": "north"}} for i in range(5)]
    r = await api.http.post(IMPORT, json={"devices": rows, "dry_run": True})
    assert r.status_code == 200, r.text
    assert r.json()["created"] == 0 and await device_ids(api) == []

    r = await api.http.post(IMPORT, json={"devices": rows})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["created"] == 5
    created = {d["id"]: d for d in body["devices"]}
    assert sorted(created) == sorted(await device_ids(api))
    r = await api.http.get("/tenants/default/devices/sensor-3")
    assert r.json()["labels"] == {"site": "north"}

    host, port = platform.nats.mqtt_address
    for device_id in ("sensor-0", "sensor-4"):
        creds = created[device_id]
        device = Device(host, port, creds["username"], creds["password"], f"c-{device_id}")
        try:
            reason = await asyncio.to_thread(device.connect)
            assert not reason.is_failure, reason
        finally:
            device.close()
    wrong = Device(host, port, created["sensor-1"]["username"], "x" * 20, "c-wrong")
    try:
        assert (await asyncio.to_thread(wrong.connect)).is_failure
    finally:
        wrong.close()


async def test_export_streams_csv_and_refuses_bad_requests(platform: Any, api: Api) -> None:
    await setup_motor(api)
    t0 = now_ms() - 60_000
    readings = [
        {"asset": "m1", "ts": t0 + i, "values": {"rpm": i, **({"state": 'on, "a"'} if i else {})}}
        for i in range(3)
    ]
    r = await api.http.post("/tenants/default/devices/d1/telemetry", json=readings)
    assert r.status_code == 202, r.text
    export = "/tenants/default/assets/m1/telemetry/export"
    params = {"keys": "rpm,state", "from": str(t0), "to": str(t0 + 10)}

    async def rows() -> list[list[str]]:
        r = await api.http.get(export, params=params)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("text/csv")
        return list(csv.reader(io.StringIO(r.text)))

    got = await async_wait_for(lambda: _when_complete(rows, 4), what="the readings stored")
    assert [r[0] for r in got] == ["ts", str(t0), str(t0 + 1), str(t0 + 2)]
    assert got[0] == ["ts", "time", "rpm", "state"]
    assert got[1][2:] == ["0", ""]  # no state in that reading
    assert got[2][2:] == ["1", 'on, "a"']

    for bad, status, field in [
        ({"keys": "rpm,nope"}, 422, "keys"),
        ({"from": str(t0 + 10), "to": str(t0)}, 422, "to"),
        ({"from": "yesterday-ish"}, 422, "from"),
        ({"format": "xlsx"}, 422, "query.format"),
    ]:
        r = await api.http.get(export, params={**params, **bad})
        assert r.status_code == status, (bad, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        assert field in [e["field"] for e in r.json()["errors"]], r.text
    r = await api.http.get("/tenants/default/assets/nope/telemetry/export")
    assert r.status_code == 404, r.text


async def _when_complete(rows: Any, count: int) -> list[list[str]] | None:
    got: list[list[str]] = await rows()
    return got if len(got) == count else None
