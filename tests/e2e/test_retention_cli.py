"""`fogline retention` and its API as a user meets them: show, set per tenant and asset type,
bad input refused with a clear message, and the job's counters in `fogline status`."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.conftest import MOTOR_TYPE, wait_for
from tests.e2e.conftest import RunningPlatform


def _json(p: RunningPlatform, *args: str) -> Any:
    r = p.cli("--json", *args)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_retention_show_set_and_bad_input(platform_process: RunningPlatform) -> None:
    p = platform_process
    api = httpx.Client(
        base_url=f"{p.url}/api/v1", headers={"Authorization": f"Bearer {p.api_key()}"}
    )
    r = api.put("/tenants/default/asset-types/motor", json=MOTOR_TYPE)
    assert r.status_code == 201, r.text

    shown = _json(p, "retention", "show")
    assert shown["platform"]["history"] == "90d" and shown["platform"]["aggregates"] == "none"
    assert shown["override"] == {"history": None, "aggregates": None}
    assert [t["asset_type"] for t in shown["asset_types"]] == ["motor"]
    assert shown["asset_types"][0]["effective"]["history_from"] == "platform"

    _json(p, "retention", "set", "--history", "30d")
    _json(p, "retention", "set", "--asset-type", "motor", "--aggregates", "365d")
    motor = _json(p, "retention", "show", "--asset-type", "motor")
    assert motor["override"] == {"history": None, "aggregates": "365d"}
    assert motor["effective"] == {
        "history": "30d",
        "aggregates": "365d",
        "history_from": "tenant",
        "aggregates_from": "asset-type",
    }
    human = p.cli("retention", "show")
    assert human.returncode == 0 and "history 30d (from tenant)" in human.stdout, human.stdout

    # Bad input: a clear message, a non-zero exit, and the stored policy unchanged.
    for args, code, fragment in [
        (["--history", "10m"], 2, "shorter than the shortest retention, 1h"),
        (["--history", "banana"], 2, "'banana' is not a duration"),
        (["--aggregates", "10d", "--asset-type", "motor"], 2, "expire before the readings"),
        # The tenant's history past motor's own aggregates: motor's resolved policy would break.
        (["--history", "400d"], 2, "asset type 'motor': aggregates kept 365d"),
        (["--asset-type", "motor", "--history", "forever", "--aggregates", "1d"], 2, "nothing"),
        (["--asset-type", "nope", "--history", "1d"], 3, "'nope' does not exist"),
        ([], 2, "give --history, --aggregates or both"),
    ]:
        r = p.cli("retention", "set", *args)
        assert r.returncode == code, (args, r.returncode, r.stderr)
        assert fragment in r.stderr, (args, r.stderr)
    assert _json(p, "retention", "show", "--asset-type", "motor")["override"] == motor["override"]
    assert _json(p, "retention", "show")["override"]["history"] == "30d"
    _json(p, "retention", "set", "--history", "inherit")
    assert _json(p, "retention", "show")["effective"]["history_from"] == "platform"

    # The API says the same as problem+json.
    for body, fragment in [({"history": "1x"}, "not a duration"), ({"history": 5}, "")]:
        r = api.put("/tenants/default/retention", json=body)
        assert r.status_code == 422, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        problem = r.json()
        assert problem["errors"][0]["field"].endswith("history"), problem
        assert fragment in problem["errors"][0]["reason"], problem

    history = api.get("/tenants/default/assets/none/telemetry/history")
    assert history.status_code == 404  # an asset is needed; with one, the resolution is said
    r = api.post(
        "/tenants/default/assets",
        json={"id": "m1", "asset_type": "motor", "attributes": {"power_kw": 1.0}},
    )
    assert r.status_code == 201, r.text
    raw = api.get("/tenants/default/assets/m1/telemetry/history").json()
    hourly = api.get("/tenants/default/assets/m1/telemetry/history", params={"bucket": "1h"})
    assert (raw["resolution"], hourly.json()["resolution"]) == ("raw", "raw")

    # The job ran once at start; its counters are in /system and `fogline status`.
    wait_for(lambda: p.system()["retention"]["runs"] >= 1, what="the first retention run")
    status = p.cli("status")
    assert status.returncode == 0 and "retention: 0 readings deleted" in status.stdout, status
    # A summary, a line per part, not the API's JSON (that is `fogline --json status`).
    lines = status.stdout.splitlines()
    assert lines[0].startswith("ready") and "{" not in status.stdout, status.stdout
    assert [line.split()[0] for line in lines[1:6]] == [
        "broker",
        "database",
        "historian",
        "models",
        "disk",
    ], status.stdout
    assert any(line.startswith("ingest (default): ") for line in lines), status.stdout
    api.close()
