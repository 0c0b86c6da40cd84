"""`fogline backup` and `fogline restore` as an operator runs them: a platform with history,
stopped, backed up, restored into a fresh data dir (and a fresh PostgreSQL schema), started
again with the same history, admin key and device logins; and the refusals."""

from __future__ import annotations

import gzip
import io
import json
import os
import signal
import stat
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from fogline.domain.timeseries import now_ms
from tests.conftest import MOTOR_TYPE, POSTGRES_ADMIN_URL, wait_for
from tests.e2e.conftest import FOGLINE, RunningPlatform, start_platform
from tests.mqtt_client import Device

READINGS = 600
HISTORIZED = 500  # the rest only in JetStream when the backup is made


@pytest.fixture
def database_urls(request: pytest.FixtureRequest) -> Iterator[tuple[str | None, str | None]]:
    """(source, target) database URLs: None for SQLite in the data dir; two fresh schemas of
    the machine's PostgreSQL otherwise, dropped afterwards."""
    if request.param == "sqlite":
        yield None, None
        return
    schemas = [f"t_{uuid.uuid4().hex[:12]}" for _ in range(2)]
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
        for schema in schemas:
            conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        source, target = (f"{POSTGRES_ADMIN_URL}?options=-csearch_path%3D{s}" for s in schemas)
        yield source, target
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
            for schema in schemas:
                conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def fogline(
    *args: str, data_dir: Path, database_url: str | None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FOGLINE_")}
    env["FOGLINE_DATA_DIR"] = str(data_dir)
    if database_url:
        env["FOGLINE_DATABASE_URL"] = database_url
    return subprocess.run(
        [FOGLINE, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def _api(p: RunningPlatform, key: str) -> httpx.Client:
    return httpx.Client(base_url=f"{p.url}/api/v1", headers={"Authorization": f"Bearer {key}"})


def _history(api: httpx.Client, t0: int) -> list[list[object]]:
    r = api.get(
        "/tenants/default/assets/m1/telemetry/history",
        params={"keys": "rpm", "from": str(t0), "to": str(t0 + READINGS * 1000), "limit": 10_000},
    )
    assert r.status_code == 200, r.text
    points: list[list[object]] = r.json()["series"]["rpm"]["points"]
    return points


@pytest.mark.parametrize("database_urls", ["sqlite", "postgresql"], indirect=True)
def test_backup_and_restore_a_whole_platform(
    tmp_path: Path, database_urls: tuple[str | None, str | None]
) -> None:
    source_url, target_url = database_urls
    source = tmp_path / "source"
    env = {"FOGLINE_HISTORIAN_PROGRESS_TIMEOUT": "600"}  # the frozen historian left frozen
    if source_url:
        env["FOGLINE_DATABASE_URL"] = source_url
    p = start_platform(source, extra_env=env)
    try:
        key = p.api_key()
        api = _api(p, key)
        assert api.put("/tenants/default/asset-types/motor", json=MOTOR_TYPE).status_code == 201
        asset = {"id": "m1", "asset_type": "motor", "attributes": {"power_kw": 7.5}}
        assert api.post("/tenants/default/assets", json=asset).status_code == 201
        r = api.post("/tenants/default/devices", json={"id": "d1"})
        assert r.status_code == 201, r.text
        creds = r.json()["credentials"]
        t0 = now_ms() - 3_600_000
        readings = [
            {"asset": "m1", "ts": t0 + i * 1000, "values": {"rpm": i, "state": f"s{i}"}}
            for i in range(READINGS)
        ]
        first, rest = readings[:HISTORIZED], readings[HISTORIZED:]
        r = api.post("/tenants/default/devices/d1/telemetry", json={"readings": first})
        assert r.status_code == 202, r.text
        wait_for(lambda: len(_history(api, t0)) == HISTORIZED, what="readings historized")
        # The historian frozen: the readings after these stay in JetStream only (202: the hot
        # store holds them), for the restored platform's historian to store.
        historian = api.get("/system").json()["historian_pid"]
        os.kill(historian, signal.SIGSTOP)
        r = api.post("/tenants/default/devices/d1/telemetry", json={"readings": rest})
        assert r.status_code == 202, r.text
        assert len(_history(api, t0)) == HISTORIZED

        # While it runs: refused, naming it.
        archive = tmp_path / "backups" / "platform.tar.gz"
        r = fogline("backup", str(archive), data_dir=source, database_url=source_url)
        assert r.returncode == 7, r.stderr
        assert "is running" in r.stderr and str(p.process.pid) in r.stderr, r.stderr
        assert not archive.exists()
    finally:
        assert p.stop() == 0

    r = fogline("backup", str(archive), data_dir=source, database_url=source_url)
    assert r.returncode == 0, r.stderr
    assert "backed up" in r.stdout, r.stdout
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    assert [p.name for p in archive.parent.iterdir()] == ["platform.tar.gz"]  # no leftovers
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        handle = tar.extractfile("manifest.json")
        assert handle is not None
        manifest = json.loads(handle.read())
    assert names[0] == "manifest.json"
    assert manifest["database"]["kind"] == ("postgresql" if source_url else "sqlite")
    rows = {t["name"]: t["rows"] for t in manifest["database"]["tables"]}
    assert rows["readings"] == HISTORIZED and rows["devices"] == 1
    files = {c["path"] for c in manifest["contents"]}
    assert {"data/secret.key", "data/client.json"} <= files
    assert any(f.startswith("data/nats/jetstream/") for f in files)
    assert set(names) == {"manifest.json", *files}

    # Refusals: a target that holds a platform; a damaged archive. Nothing is made.
    r = fogline("restore", str(archive), data_dir=source, database_url=target_url)
    assert r.returncode == 7 and "not empty" in r.stderr, r.stderr
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(archive.read_bytes()[: archive.stat().st_size * 2 // 3])
    target = tmp_path / "restored" / "data"
    r = fogline("restore", str(truncated), data_dir=target, database_url=target_url)
    assert r.returncode == 2 and "damaged" in r.stderr, r.stderr
    assert not target.exists() and list(target.parent.iterdir()) == []
    if target_url:
        with psycopg.connect(target_url) as conn:
            tables = conn.execute(
                "SELECT count(*) FROM information_schema.tables "
                "WHERE table_schema = current_schema()"
            ).fetchone()
            assert tables == (0,)

    r = fogline("restore", str(archive), data_dir=target, database_url=target_url)
    assert r.returncode == 0, r.stderr
    assert "restored" in r.stdout, r.stdout
    assert stat.S_IMODE((target / "secret.key").stat().st_mode) == 0o600
    assert stat.S_IMODE(target.stat().st_mode) == 0o700
    env = {"FOGLINE_DATABASE_URL": target_url} if target_url else {}
    restored = start_platform(target, extra_env=env)
    try:
        api = _api(restored, key)  # the admin key of the platform backed up
        expected = [[t0 + i * 1000, i] for i in range(READINGS)]
        wait_for(lambda: _history(api, t0) == expected, what="the hot store's readings stored")
        r = api.get("/tenants/default/assets/m1/telemetry/latest", params={"keys": "state"})
        assert r.json()["values"]["state"]["value"] == f"s{READINGS - 1}", r.text
        device = Device(
            "127.0.0.1", restored.mqtt_port, creds["username"], creds["password"], "after"
        )
        try:
            assert not device.connect().is_failure
            device.publish(
                "fogline/default/devices/d1/telemetry",
                # temperature: a series the backup did not hold, a new row with a new id
                {
                    "asset": "m1",
                    "ts": t0 + READINGS * 1000 - 1,
                    "values": {"rpm": -1, "temperature": 20.5},
                },
            )
        finally:
            device.close()
        wait_for(lambda: len(_history(api, t0)) == READINGS + 1, what="a new reading stored")
        # New rows took new ids (PostgreSQL's sequences were moved past the restored ones).
        r = api.get("/tenants/default/assets/m1/telemetry/latest", params={"keys": "temperature"})
        assert r.json()["values"]["temperature"]["value"] == 20.5, r.text
        r = api.get("/tenants/default/dead-letters")
        assert r.json()["total"] == 0, r.text
    finally:
        assert restored.stop() == 0


def test_restore_refuses_another_schema_version_and_what_is_not_a_backup(tmp_path: Path) -> None:
    target = tmp_path / "target"
    not_backup = tmp_path / "notes.tar.gz"
    not_backup.write_bytes(gzip.compress(b"hello"))
    r = fogline("restore", str(not_backup), data_dir=target, database_url=None)
    assert r.returncode == 2 and "not a Fogline backup" in r.stderr, r.stderr

    manifest = {
        "format": "fogline-backup",
        "format_version": 1,
        "fogline_version": "0.0.1",
        "schema_version": 1,
        "database": {"kind": "sqlite", "tables": []},
        "created_at": "2026-01-01T00:00:00Z",
        "contents": [],
    }
    old = tmp_path / "old.tar.gz"
    with tarfile.open(old, "w:gz") as tar:
        document = json.dumps(manifest).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(document)
        tar.addfile(info, io.BytesIO(document))
    r = fogline("restore", str(old), data_dir=target, database_url=None)
    assert r.returncode == 7, r.stderr
    assert "schema version 1" in r.stderr and "Fogline 0.0.1" in r.stderr, r.stderr
    assert not target.exists()

    # A member's path that would leave the data dir.
    from fogline.store.migrations import SCHEMA_VERSION

    manifest["schema_version"] = SCHEMA_VERSION
    manifest["contents"] = [{"path": "data/../../evil", "size": 1, "sha256": "0" * 64}]
    escaping = tmp_path / "escaping.tar.gz"
    with tarfile.open(escaping, "w:gz") as tar:
        document = json.dumps(manifest).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(document)
        tar.addfile(info, io.BytesIO(document))
    r = fogline("restore", str(escaping), data_dir=target, database_url=None)
    assert r.returncode == 2 and "not allowed: 'data/../../evil'" in r.stderr, r.stderr
    assert not target.exists() and not (tmp_path.parent / "evil").exists()

    r = fogline("backup", str(tmp_path / "x.tar.gz"), data_dir=tmp_path / "none", database_url=None)
    assert r.returncode == 3 and "no data dir" in r.stderr, r.stderr
