"""Fixtures shared by every test: free ports, fresh data dirs, fresh PostgreSQL schemas, and a
running platform on real servers (the bundled nats-server, SQLite or PostgreSQL)."""

from __future__ import annotations

import itertools
import os
import random
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

POSTGRES_ADMIN_URL = os.environ.get(
    "FOGLINE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)


# Ports for the tests' own servers come from below Linux's ephemeral range (32768-60999: no
# outgoing connection can take one between its choice and its bind) and from a range of their
# own per test process (pytest-xdist worker), so two test processes never choose the same one;
# each is checked free when chosen (a port a service holds, e.g. RabbitMQ's 25672, is skipped).
_PORT_BASE = 20_000
_PORTS_PER_WORKER = 2_500
# Each test process starts at a random place in its range: two test runs at once on one
# machine (a developer's two terminals) seldom pick the same port between check and bind.
_port_turn = itertools.count(random.randrange(_PORTS_PER_WORKER))


def free_port() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:]
    slot = int(worker) % 5 if worker.isdigit() else 0  # five ranges fit below 32768
    first = _PORT_BASE + slot * _PORTS_PER_WORKER
    for _ in range(_PORTS_PER_WORKER):
        port = first + next(_port_turn) % _PORTS_PER_WORKER
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {first}-{first + _PORTS_PER_WORKER - 1}")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purpose: it only waits for its parent to reap it.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def wait_for(condition: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll a condition until it holds or the deadline passes: no blind sleeps."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


async def async_wait_for(
    condition: Callable[[], Any], timeout: float = 30.0, what: str = "condition"
) -> Any:
    import asyncio
    import inspect

    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh schema in the machine's PostgreSQL, dropped afterwards. PostgreSQL must be up:
    a missing server fails the test, it does not skip it."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    yield f"{POSTGRES_ADMIN_URL}?options=-csearch_path%3D{schema}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


class Api:
    """A thin async HTTP client for tests, with the platform's admin key."""

    def __init__(self, base: str, key: str | None) -> None:
        self.base = base
        self.key = key
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.AsyncClient(base_url=base + "/api/v1", headers=headers, timeout=30)

    def as_key(self, key: str | None) -> Api:
        return Api(self.base, key)

    async def close(self) -> None:
        await self.http.aclose()


async def stored_numbers(api: Api, t0: int, count: int) -> list[int]:
    """The rpm values of asset m1 stored from t0 on, for `count` ms: tests number each reading
    by its rpm (and its ts, t0 + the number)."""
    r = await api.http.get(
        "/tenants/default/assets/m1/telemetry/history",
        params={"keys": "rpm", "from": str(t0), "to": str(t0 + count), "limit": 100_000},
    )
    assert r.status_code == 200, r.text
    return [int(p[1]) for p in r.json()["series"]["rpm"]["points"]]


@pytest.fixture
def platform_settings(tmp_path: Path) -> Callable[..., Any]:
    from fogline.app.settings import load_settings

    def make(**overrides: Any) -> Any:
        values: dict[str, Any] = {
            "data_dir": tmp_path / "data",
            "http_port": free_port(),
            "nats_port": free_port(),
            "mqtt_port": free_port(),
            "log_level": "warning",
            # The default reserve (5% of the disk, up to 2 GiB) would make a test machine with
            # a nearly full disk refuse data; the tests of the reserve set their own.
            "disk_reserve": "64MiB",
        }
        values.update(overrides)
        return load_settings(**values)

    return make


@pytest.fixture
async def platform(platform_settings: Callable[..., Any]) -> AsyncIterator[Any]:
    from fogline.app.platform import Platform

    p = Platform(platform_settings())
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


@pytest.fixture
async def api(platform: Any) -> AsyncIterator[Api]:
    client = Api(platform.http_url, platform.bootstrap.admin_key)
    yield client
    await client.close()


MOTOR_TYPE = {
    "name": "Induction motor",
    "telemetry": [
        {"name": "temperature", "dtype": "float", "unit": "degC", "min": -40, "max": 200},
        {"name": "vibration", "dtype": "float", "unit": "mm/s", "min": 0},
        {"name": "rpm", "dtype": "int"},
        {"name": "running", "dtype": "bool"},
        {"name": "state", "dtype": "string"},
    ],
    "attributes": [{"name": "power_kw", "dtype": "float", "required": True}],
}


async def setup_motor(
    api: Api, tenant: str = "default", asset: str = "m1", device: str = "d1"
) -> dict[str, Any]:
    """An asset type, one asset and one device; returns the device's credentials."""
    r = await api.http.put(f"/tenants/{tenant}/asset-types/motor", json=MOTOR_TYPE)
    assert r.status_code in (200, 201), r.text
    r = await api.http.post(
        f"/tenants/{tenant}/assets",
        json={"id": asset, "asset_type": "motor", "attributes": {"power_kw": 7.5}},
    )
    assert r.status_code == 201, r.text
    r = await api.http.post(f"/tenants/{tenant}/devices", json={"id": device})
    assert r.status_code == 201, r.text
    creds: dict[str, Any] = r.json()["credentials"]
    return creds
