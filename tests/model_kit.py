"""Model packages and helpers for the tests that deploy real model servers."""

from __future__ import annotations

import io
import tarfile
import textwrap
from typing import Any

import yaml

from tests.conftest import Api, async_wait_for

SENSOR_TYPE = {
    "name": "Sensor",
    "telemetry": [
        {"name": "temperature", "dtype": "float", "unit": "degC"},
        {"name": "doubled", "dtype": "float"},
        {"name": "level", "dtype": "string"},
        {"name": "mean", "dtype": "float"},
    ],
}

DOUBLER = """
import os, pathlib
from fogline.sdk import Model, serve

class Doubler(Model):
    def score(self, readings):
        return [
            {"doubled": r.values["temperature"] * 2,
             "level": "high" if r.values["temperature"] > 50 else "ok"}
            for r in readings
        ]

    def health(self):
        # The tests make a model unhealthy by dropping this file in its package (the
        # working directory; the sandbox mounts it read-only, the platform can write it).
        return not pathlib.Path("unhealthy").exists()

if __name__ == "__main__":
    serve(Doubler())
"""

WINDOW_MEAN = """
import statistics, time, os
from fogline.sdk import serve

def score(readings):
    time.sleep(float(os.environ.get("SLOW_S", "0")))
    by_asset = {}
    for r in readings:
        by_asset.setdefault(r.asset, []).append(r)
    return [
        {"asset": a, "ts": rs[-1].ts,
         "values": {"mean": statistics.fmean(r.values["temperature"] for r in rs)}}
        for a, rs in by_asset.items()
    ]

serve(score=score)
"""


def manifest(
    name: str,
    outputs: list[dict[str, Any]] | None = None,
    trigger: dict[str, Any] | None = None,
    version: str = "1.0.0",
    **model: Any,
) -> str:
    body = {
        "manifest": {
            "name": name,
            "version": version,
            "model": {
                "type": "http",
                "stateful": False,
                "local": {"command": ["python", "model.py"]},
                **model,
            },
            "trigger": trigger or {"type": "REAL_TIME"},
            "inputs": [{"dataColumnName": "temperature"}],
            "outputs": outputs
            or [{"dataColumnName": "doubled"}, {"dataColumnName": "level", "readAsString": True}],
        }
    }
    return yaml.safe_dump(body)


def package(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, text in files.items():
            data = textwrap.dedent(text).encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


async def sensors(api: Api, *assets: str, device: str = "gw") -> None:
    r = await api.http.put("/tenants/default/asset-types/sensor", json=SENSOR_TYPE)
    assert r.status_code in (200, 201), r.text
    for asset in assets:
        r = await api.http.post(
            "/tenants/default/assets", json={"id": asset, "asset_type": "sensor"}
        )
        assert r.status_code == 201, r.text
    r = await api.http.post("/tenants/default/devices", json={"id": device})
    assert r.status_code == 201, r.text


async def submit(api: Api, text: str, files: dict[str, str] | None = None) -> str:
    r = await api.http.post(
        "/tenants/default/models", content=text, headers={"Content-Type": "application/yaml"}
    )
    assert r.status_code == 201, r.text
    name, version = str(r.json()["name"]), str(r.json()["version"])
    if files is not None:
        r = await api.http.put(
            f"/tenants/default/models/{name}/{version}/package",
            content=package(files),
            headers={"Content-Type": "application/gzip"},
        )
        assert r.status_code == 200, r.text
    return name


async def map_type(api: Api, name: str, version: str = "1.0.0") -> None:
    r = await api.http.put(
        f"/tenants/default/models/{name}/{version}/mappings", json={"asset_types": ["sensor"]}
    )
    assert r.status_code == 200, r.text


async def state_of(api: Api, name: str, version: str = "1.0.0") -> str:
    r = await api.http.get(f"/tenants/default/models/{name}/{version}")
    return str(r.json()["state"])


async def wait_state(
    api: Api, name: str, state: str, timeout: float = 60, version: str = "1.0.0"
) -> None:
    async def reached() -> bool:
        return await state_of(api, name, version) == state

    try:
        await async_wait_for(reached, timeout, f"model {name} {version} {state}")
    except AssertionError as exc:
        model = (await api.http.get(f"/tenants/default/models/{name}/{version}")).json()
        status = (await api.http.get(f"/tenants/default/models/{name}/{version}/deployment")).json()
        raise AssertionError(
            f"{exc}; it is {model.get('state')}: {model.get('state_reason')}; "
            f"saga {status.get('saga')}"
        ) from None


async def deployment(api: Api, name: str, version: str = "1.0.0") -> dict[str, Any]:
    r = await api.http.get(f"/tenants/default/models/{name}/{version}/deployment")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def send(api: Api, asset: str, ts: int, temperature: float, device: str = "gw") -> None:
    r = await api.http.post(
        f"/tenants/default/devices/{device}/telemetry",
        json={"asset": asset, "ts": ts, "values": {"temperature": temperature}},
    )
    assert r.status_code == 202, r.text


async def history(api: Api, asset: str, telemetry: str) -> list[list[Any]]:
    """[[ts, value], ...] of one telemetry of an asset, oldest first."""
    r = await api.http.get(
        f"/tenants/default/assets/{asset}/telemetry/history",
        params={"keys": telemetry, "from": "0"},
    )
    assert r.status_code == 200, r.text
    series = r.json()["series"].get(telemetry)
    return [] if series is None else list(series["points"])
