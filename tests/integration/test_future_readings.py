"""Issue 11: a reading stamped ahead of the server's clock (accepted up to 24 h ahead) is kept
and can be found (`to=+24h`), but `latest` is the newest reading not in the future."""

from __future__ import annotations

import time
from typing import Any

from tests.conftest import Api, async_wait_for, setup_motor

URL = "/tenants/default/devices/d1/telemetry"
HISTORY = "/tenants/default/assets/m1/telemetry/history"


async def test_a_reading_from_the_future_is_kept_but_not_latest(platform: Any, api: Api) -> None:
    await setup_motor(api)
    now = int(time.time() * 1000)
    ahead = now + 2 * 3_600_000
    body = [
        {"asset": "m1", "ts": ahead, "values": {"rpm": 999, "state": "later"}},
        {"asset": "m1", "ts": now - 2000, "values": {"rpm": 1}},
        {"asset": "m1", "ts": now - 1000, "values": {"rpm": 2}},
    ]
    r = await api.http.post(URL, json=body)
    assert r.status_code == 202 and not r.json()["rejected"], r.text

    async def committed() -> bool:
        stats = (await api.http.get("/tenants/default/ingest/stats")).json()
        return bool(stats["values"] == 4)

    await async_wait_for(committed, what="the readings to be committed")
    latest = (await api.http.get("/tenants/default/assets/m1/telemetry/latest")).json()
    assert latest["values"]["rpm"]["value"] == 2
    assert "state" not in latest["values"]  # its only reading is still to come

    # The default window ends now; `+24h` reaches the reading ahead, in each spelling.
    r = await api.http.get(HISTORY, params={"keys": "rpm"})
    assert [p[1] for p in r.json()["series"]["rpm"]["points"]] == [1, 2]
    r = await api.http.get(HISTORY, params={"keys": "rpm", "from": "-1h", "to": "+24h"})
    assert r.status_code == 200, r.text
    assert [p[1] for p in r.json()["series"]["rpm"]["points"]] == [1, 2, 999]
    # Typed into a URL unencoded, '+' reads as a space: taken as meant.
    raw = await api.http.get(f"{HISTORY}?keys=rpm&from=-1h&to=+24h")
    assert raw.status_code == 200, raw.text
    assert [p[1] for p in raw.json()["series"]["rpm"]["points"]] == [1, 2, 999]


async def test_bad_relative_bounds_are_422_problems(platform: Any, api: Api) -> None:
    await setup_motor(api)
    for params in ({"to": "+banana"}, {"from": "+"}, {"to": "24h"}, {"from": "-0s"}):
        r = await api.http.get(HISTORY, params=params)
        assert r.status_code == 422, (params, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        problem = r.json()
        assert problem["errors"][0]["field"] == next(iter(params))
    r = await api.http.get(HISTORY, params={"to": "+banana"})
    assert "'banana' is not a duration" in r.json()["errors"][0]["reason"]
