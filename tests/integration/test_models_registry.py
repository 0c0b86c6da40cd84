"""Submitting models by manifest: all problems at once, nothing stored on error, secrets
encrypted at rest and never shown."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import Api

MANIFEST = """
manifest:
  name: temperature-anomaly
  version: 1.0.0
  description: Detects anomalies in temperature values
  model:
    type: http
    scoreEndpoint: /score
    healthCheckEndpoint: /health
    hosted: internal
    stateful: true
    async: false
    container:
      image: temperaturemodel
      tag: latest
      customRegistry: {registry: imageregistry.example, username: user, password: s3cr3t-pw}
  trigger: {type: TIME_WINDOW, frequency: 5000, timeWindowSize: 10000}
  inputs:  [{dataColumnName: temperature, readAsString: false}]
  outputs: [{dataColumnName: anomaly_score}, {dataColumnName: warning_level, readAsString: true}]
"""


async def test_submit_yaml_and_json_then_remove(platform: Any, api: Api) -> None:
    r = await api.http.post(
        "/tenants/default/models", content=MANIFEST, headers={"Content-Type": "application/yaml"}
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["name"], body["version"], body["state"]) == (
        "temperature-anomaly",
        "1.0.0",
        "draft",
    )
    assert (body["inputs"], body["outputs"]) == (
        ["temperature"],
        ["anomaly_score", "warning_level"],
    )
    assert body["manifest"]["manifest"]["trigger"]["timeWindowSize"] == 10000
    v2 = yaml.safe_load(MANIFEST)
    v2["manifest"]["version"] = "1.1.0"
    r = await api.http.post(
        "/tenants/default/models",
        content=json.dumps(v2),
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 201
    again = await api.http.post("/tenants/default/models", content=json.dumps(v2))
    assert again.status_code == 409
    listed = (await api.http.get("/tenants/default/models")).json()
    assert [(m["name"], m["version"]) for m in listed] == [
        ("temperature-anomaly", "1.0.0"),
        ("temperature-anomaly", "1.1.0"),
    ]
    # A model never started here has no log, and says so (and one that does not exist, that).
    r = await api.http.get("/tenants/default/models/temperature-anomaly/1.1.0/logs")
    assert r.status_code == 404 and "never started here" in r.json()["detail"], r.text
    r = await api.http.get("/tenants/default/models/temperature-anomaly/1.1.0/logs/stream")
    assert r.status_code == 404 and "never started here" in r.json()["detail"], r.text
    r = await api.http.get("/tenants/default/models/no-such-model/1.0.0/logs")
    assert r.status_code == 404 and "never started" not in r.json()["detail"], r.text

    r = await api.http.delete("/tenants/default/models/temperature-anomaly/1.0.0")
    assert r.status_code == 200 and r.json()["state"] == "removed"
    r = await api.http.delete("/tenants/default/models/temperature-anomaly/1.0.0")
    assert r.status_code == 409
    assert "allowed from: draft" in r.json()["detail"]
    events = (await api.http.get("/tenants/default/models/temperature-anomaly/1.0.0/events")).json()
    assert [(e["event"], e["from"], e["to"]) for e in events] == [
        ("submit", None, "draft"),
        ("remove", "draft", "removed"),
    ]
    listed = (await api.http.get("/tenants/default/models")).json()
    assert [m["version"] for m in listed] == ["1.1.0"]


async def test_bad_manifest_lists_everything_and_stores_nothing(api: Api) -> None:
    bad = yaml.safe_load(MANIFEST)
    m = bad["manifest"]
    m["name"] = "Temperature Anomaly"
    m["version"] = "v1"
    m["model"]["hosted"] = "external"
    m["trigger"] = {"type": "TIME_WINDOW", "frequency": 0}
    m["outputs"] = []
    r = await api.http.post("/tenants/default/models", content=json.dumps(bad))
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"
    fields = {e["field"] for e in r.json()["errors"]}
    assert fields == {
        "manifest.name",
        "manifest.version",
        "manifest.model.url",
        "manifest.trigger.frequency",
        "manifest.trigger.timeWindowSize",
        "manifest.outputs",
    }
    assert "s3cr3t-pw" not in r.text
    r = await api.http.post("/tenants/default/models", content=b"{: nope")
    assert r.status_code == 422
    assert (await api.http.get("/tenants/default/models")).json() == []


async def test_registry_password_encrypted_at_rest_and_never_shown(
    platform: Any, api: Api, capfd: Any
) -> None:
    r = await api.http.post("/tenants/default/models", content=MANIFEST)
    assert r.status_code == 201
    outputs = [r.text]
    outputs.append((await api.http.get("/tenants/default/models")).text)
    outputs.append((await api.http.get("/tenants/default/models/temperature-anomaly/1.0.0")).text)
    outputs.append(
        (await api.http.get("/tenants/default/models/temperature-anomaly/1.0.0/events")).text
    )
    for text in outputs:
        assert "s3cr3t-pw" not in text
    shown = json.loads(outputs[2])["manifest"]["manifest"]["model"]["container"]
    assert shown["customRegistry"]["password"] == "***"
    database = Path(platform.settings.data_dir) / "fogline.db"
    with sqlite3.connect(database) as conn:
        dump = "\n".join(conn.iterdump())
    assert "s3cr3t-pw" not in dump
    sealed = platform.db.models.registry_credentials(
        platform.db.models.get_model("default", "temperature-anomaly", "1.0.0").id
    )
    box = _box(platform)
    assert box.open(sealed.password_sealed) == "s3cr3t-pw"
    captured = capfd.readouterr()
    assert "s3cr3t-pw" not in captured.out + captured.err


def _box(platform: Any) -> Any:
    from fogline.store.secrets import SecretBox

    return SecretBox.for_platform(platform.settings.data_dir, platform.settings.secret_key)


MAPPED = """
manifest:
  name: motor-anomaly
  version: 1.0.0
  model: {local: {command: [python, -m, model]}}
  trigger: {type: REAL_TIME}
  inputs:  [{dataColumnName: temperature}, {dataColumnName: vibration}]
  outputs: [{dataColumnName: anomaly_score}, {dataColumnName: state, readAsString: true}]
"""
MOTOR_WITH_OUTPUTS = {
    "telemetry": [
        {"name": "temperature", "dtype": "float"},
        {"name": "vibration", "dtype": "float"},
        {"name": "winding_temp", "dtype": "float"},
        {"name": "anomaly_score", "dtype": "float"},
        {"name": "state", "dtype": "string"},
    ]
}
BASE = "/tenants/default/models/motor-anomaly/1.0.0/mappings"


async def test_mappings_to_assets_and_types_follow_the_fleet(api: Api) -> None:
    assert (
        await api.http.put("/tenants/default/asset-types/motor", json=MOTOR_WITH_OUTPUTS)
    ).status_code == 201
    for asset in ("m1", "m2"):
        r = await api.http.post(
            "/tenants/default/assets", json={"id": asset, "asset_type": "motor"}
        )
        assert r.status_code == 201
    assert (await api.http.post("/tenants/default/models", content=MAPPED)).status_code == 201

    r = await api.http.put(
        BASE,
        json={
            "assets": {"m1": {"inputs": {"temperature": "winding_temp"}}},
            "asset_types": ["motor"],
        },
    )
    assert r.status_code == 200, r.text
    resolved = {a["asset"]: a for a in r.json()["resolved"]}
    assert resolved["m1"]["via"] == "asset"
    assert resolved["m1"]["inputs"] == {"temperature": "winding_temp", "vibration": "vibration"}
    assert resolved["m2"]["via"] == "asset-type:motor"
    assert resolved["m2"]["outputs"] == {"anomaly_score": "anomaly_score", "state": "state"}

    # The type mapping follows the fleet: a new motor is in, a deleted one is out.
    await api.http.post("/tenants/default/assets", json={"id": "m3", "asset_type": "motor"})
    await api.http.delete("/tenants/default/assets/m2")
    r = await api.http.get(BASE)
    assert [a["asset"] for a in r.json()["resolved"]] == ["m1", "m3"]
    assert r.json()["asset_types"] == {
        "motor": {
            "inputs": {"temperature": "temperature", "vibration": "vibration"},
            "outputs": {"anomaly_score": "anomaly_score", "state": "state"},
        }
    }


async def test_bad_mappings_list_every_problem_and_change_nothing(api: Api) -> None:
    await api.http.put("/tenants/default/asset-types/motor", json=MOTOR_WITH_OUTPUTS)
    await api.http.post("/tenants/default/assets", json={"id": "m1", "asset_type": "motor"})
    await api.http.post("/tenants/default/models", content=MAPPED)
    assert (await api.http.put(BASE, json={"assets": ["m1"]})).status_code == 200
    r = await api.http.put(
        BASE,
        json={
            "assets": {
                "ghost": {},
                "m1": {
                    "inputs": {"nope": "x", "vibration": "missing"},
                    "outputs": {"state": "anomaly_score"},
                },
            },
            "asset_types": ["no-type"],
            "extra": 1,
        },
    )
    assert r.status_code == 422
    fields = {e["field"] for e in r.json()["errors"]}
    assert fields == {
        "extra",
        "assets.ghost",
        "assets.m1.inputs.nope",
        "assets.m1.inputs.vibration",
        "assets.m1.outputs.state",
        "asset_types.no-type",
    }
    r = await api.http.get(BASE)
    assert [a["asset"] for a in r.json()["resolved"]] == ["m1"]  # the old mappings stand


async def test_the_short_models_path_acts_in_the_keys_own_tenant(platform: Any, api: Api) -> None:
    r = await api.http.post("/tenants", json={"id": "acme", "name": "Acme"})
    assert r.status_code == 201, r.text
    acme = api.as_key(r.json()["api_key"])
    try:
        yaml_headers = {"Content-Type": "application/yaml"}
        r = await acme.http.post("/models", content=MANIFEST, headers=yaml_headers)
        assert r.status_code == 201, r.text
        assert [m["name"] for m in (await acme.http.get("/models")).json()] == [
            "temperature-anomaly"
        ]
        assert [m["name"] for m in (await api.http.get("/tenants/acme/models")).json()] == [
            "temperature-anomaly"
        ]
        assert (await api.http.get("/models")).json() == []  # the admin key: tenant default
        r = await acme.http.get("/models", params={"tenant": "default"})
        assert r.status_code == 403
        r = await api.http.get("/models", params={"tenant": "nope"})
        assert r.status_code == 404
        r = await acme.http.post("/models", content=b"manifest: {name: Bad}", headers=yaml_headers)
        assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    finally:
        await acme.close()
