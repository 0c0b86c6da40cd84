"""Issue 11: health that tells the truth, with real parts failing under it.

A PostgreSQL this test starts itself is stopped under a running platform: `/ready` says the
database is away (503), an admin still reads `/api/v1/system` (its key verified before the
outage is cached), history and latest answer 503 problem+json (not 500, no traceback), and
`fogline status` exits 6; once PostgreSQL is back everything recovers and every reading the hot
store acknowledged is stored. A frozen historian (SIGSTOP) is noticed and restarted by the
progress watchdog, losing nothing. A platform whose nats-server was killed stops cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.errors import NotFoundError, ServiceUnavailableError

from tests.conftest import Api, async_wait_for, free_port, pid_alive, setup_motor

PG_BIN = Path(os.environ.get("FOGLINE_TEST_PG_BIN", "/usr/local/bin"))
FOGLINE = str(Path(sys.executable).parent / "fogline")


@dataclass
class OwnPostgres:
    """A PostgreSQL cluster of this test's own, so that the test may stop and start it.
    PostgreSQL refuses to run as root: as root, it runs as `nobody` from a directory given
    to that user."""

    directory: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        prefix = ["runuser", "-u", "nobody", "--"] if os.geteuid() == 0 else []
        done = subprocess.run(
            [*prefix, *args], capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, f"{args[0]} failed: {done.stdout}{done.stderr}"

    def init(self) -> None:
        self._run(
            str(PG_BIN / "initdb"), "-D", str(self.directory / "data"), "-A", "trust",
            "-U", "postgres", "--no-sync",
        )  # fmt: skip

    def start(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            str(PG_BIN / "pg_ctl"), "-D", str(self.directory / "data"), "-o", options,
            "-l", str(self.directory / "postgres.log"), "-w", "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run(
            str(PG_BIN / "pg_ctl"), "-D", str(self.directory / "data"), "-m", mode, "-w", "stop"
        )


@pytest.fixture
def own_postgres() -> Iterator[OwnPostgres]:
    directory = Path(tempfile.mkdtemp(prefix="fogline-pg-"))
    if os.geteuid() == 0:
        shutil.chown(directory, "nobody")
    pg = OwnPostgres(directory, free_port())
    pg.init()
    pg.start()
    try:
        yield pg
    finally:
        subprocess.run(
            [str(PG_BIN / "pg_ctl"), "-D", str(directory / "data"), "-m", "immediate", "stop"],
            capture_output=True,
            check=False,
            user="nobody" if os.geteuid() == 0 else None,
        )
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
async def pg_platform(
    platform_settings: Callable[..., Any], own_postgres: OwnPostgres
) -> AsyncIterator[Any]:
    from fogline.app.platform import Platform

    # A short watchdog: the outage below lasts longer than it, and must not restart the
    # historian (the database is away; a new process would not commit either).
    p = Platform(platform_settings(database_url=own_postgres.url, historian_progress_timeout=8.0))
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


async def publish_readings(platform: Any, t0: int, first: int, count: int) -> None:
    """Readings of m1 into the hot store, as a device's QoS 1 publish: each one acknowledged by
    JetStream (publish_telemetry returns only on the ack) before the next."""
    for i in range(first, first + count):
        payload = orjson.dumps({"asset": "m1", "ts": t0 + i * 1000, "values": {"rpm": i}})
        ack = await platform.bus.publish_telemetry("default", "d1", payload, f"health-{t0}-{i}")
        assert ack.seq > 0


async def history_rpm(api: Api, t0: int, count: int) -> list[tuple[int, int]] | None:
    r = await api.http.get(
        "/tenants/default/assets/m1/telemetry/history",
        params={"keys": "rpm", "from": str(t0), "to": str(t0 + count * 1000), "limit": 10_000},
    )
    if r.status_code != 200:
        return None
    return [(ts, v) for ts, v in r.json()["series"]["rpm"]["points"]]


async def all_stored(api: Api, t0: int, count: int) -> bool:
    return (await history_rpm(api, t0, count) or []) == [(t0 + i * 1000, i) for i in range(count)]


async def fogline_cli(api: Api, *args: str) -> tuple[int, str, str]:
    """The CLI as a user runs it, without blocking the event loop the platform runs on."""
    env = {**os.environ, "FOGLINE_URL": api.base, "FOGLINE_API_KEY": api.key or ""}
    process = await asyncio.create_subprocess_exec(
        FOGLINE, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_a_database_outage_is_told_answered_503_and_loses_nothing(
    pg_platform: Any, own_postgres: OwnPostgres, caplog: pytest.LogCaptureFixture
) -> None:
    platform = pg_platform
    api = Api(platform.http_url, platform.bootstrap.admin_key)
    try:
        await setup_motor(api)
        t0 = int(time.time() * 1000) - 3_600_000
        await publish_readings(platform, t0, 0, 20)
        await async_wait_for(lambda: all_stored(api, t0, 20), what="readings before the outage")
        ready = await api.http.get("/ready")
        assert ready.status_code == 200, ready.text
        checks = ready.json()["checks"]
        assert set(checks) >= {"broker", "database", "historian", "models"}
        assert checks["database"]["ok"] and checks["broker"]["pid"] == platform.nats.pid

        own_postgres.stop()
        caplog.clear()

        # /ready: 503, naming the database.
        async def database_away() -> dict[str, Any] | None:
            r = await api.http.get("/ready")
            return r.json() if r.status_code == 503 else None

        problem = await async_wait_for(database_away, timeout=20, what="/ready to say 503")
        assert "database" in problem["detail"]
        assert problem["checks"]["database"]["ok"] is False
        assert problem["checks"]["broker"]["ok"] is True

        # /system: the admin key is known from before the outage.
        system = await api.http.get("/system")
        assert system.status_code == 200, system.text
        assert system.json()["security"] == {"unavailable": True}
        assert system.json()["historian_pid"] == platform.historian.pid

        # History, latest, ingest stats: 503 problem+json, each with Retry-After.
        for path, params in [
            ("/tenants/default/assets/m1/telemetry/history", {"keys": "rpm", "from": str(t0)}),
            ("/tenants/default/assets/m1/telemetry/latest", {}),
            ("/tenants/default/ingest/stats", {}),
        ]:
            r = await api.http.get(path, params=params)
            assert r.status_code == 503, (path, r.status_code, r.text)
            assert r.headers["content-type"] == "application/problem+json"
            assert r.json()["status"] == 503 and "database" in r.json()["detail"]
            assert r.headers["retry-after"]

        # fogline status: everything it can tell, and exit 6.
        code, out, _err = await fogline_cli(api, "--json", "status")
        assert code == 6, out
        status = orjson.loads(out)
        assert status["ready"]["checks"]["database"]["ok"] is False
        assert status["system"]["version"]  # the admin's view still came
        assert status["ingest"]["status"] == 503

        # Devices keep publishing: the hot store acknowledges, the historian waits.
        await publish_readings(platform, t0, 20, 30)
        # Longer than the watchdog's 8 s: the historian is waiting for the database, not stalled.
        historian_pid = platform.historian.pid

        async def watchdog_saw_the_wait() -> bool:
            r = await api.http.get("/ready")
            h = r.json()["checks"]["historian"]
            return bool(h["pending"]) and h["state"] in ("no-progress", "failing")

        await async_wait_for(watchdog_saw_the_wait, timeout=30, what="the historian waiting")
        assert platform.historian.restarts == 0 and platform.historian.pid == historian_pid

        # One line per refused request, never a traceback.
        api_records = [r for r in caplog.records if r.name.startswith("fogline.api")]
        assert any(r.getMessage() == "api.unavailable" for r in api_records)
        assert not [r for r in api_records if r.exc_info or r.levelno >= logging.ERROR]

        own_postgres.start()

        async def ready_again() -> bool:
            return (await api.http.get("/ready")).status_code == 200

        await async_wait_for(ready_again, timeout=60, what="/ready once PostgreSQL is back")
        await async_wait_for(
            lambda: all_stored(api, t0, 50), timeout=60, what="every acknowledged reading"
        )
        latest = await api.http.get("/tenants/default/assets/m1/telemetry/latest")
        assert latest.status_code == 200 and latest.json()["values"]["rpm"]["value"] == 49
        code, out, _err = await fogline_cli(api, "--json", "status")
        assert code == 0, out
        assert platform.historian.restarts == 0
    finally:
        await api.close()


async def test_a_frozen_historian_is_restarted_by_the_watchdog_and_loses_nothing(
    platform_settings: Callable[..., Any],
) -> None:
    from fogline.app.platform import Platform

    platform = Platform(platform_settings(historian_progress_timeout=4.0))
    await platform.start()
    api = Api(platform.http_url, platform.bootstrap.admin_key)
    try:
        await setup_motor(api)
        supervisor = platform.historian
        # Only the progress watchdog may act: the catch-all stall rule (silence) is far away.
        supervisor.stalled_s = 600.0
        t0 = int(time.time() * 1000) - 3_600_000
        await publish_readings(platform, t0, 0, 10)
        await async_wait_for(lambda: all_stored(api, t0, 10), what="readings before the freeze")

        frozen = supervisor.pid
        os.kill(frozen, signal.SIGSTOP)
        try:
            await publish_readings(platform, t0, 10, 40)

            async def not_ready() -> dict[str, Any] | None:
                r = await api.http.get("/ready")
                return r.json() if r.status_code == 503 else None

            async def frozen_with_backlog() -> dict[str, Any] | None:
                # The frozen historian's own count stays 0: /ready says JetStream's.
                answer = await not_ready()
                if answer is None or answer["checks"]["historian"]["backlog"] != 40:
                    return None
                return answer

            problem = await async_wait_for(frozen_with_backlog, timeout=15, what="/ready to tell")
            assert "frozen" in problem["detail"]
            assert problem["checks"]["historian"]["state"] == "stalled"
            assert problem["checks"]["historian"]["pending"] == 40

            async def restarted() -> bool:
                return supervisor.restarts == 1 and supervisor.pid != frozen

            await async_wait_for(restarted, timeout=60, what="the watchdog to restart it")
        finally:
            if pid_alive(frozen):
                os.kill(frozen, signal.SIGCONT)
        assert not pid_alive(frozen)
        assert "frozen" in (supervisor.last_restart_reason or "")

        await async_wait_for(lambda: all_stored(api, t0, 50), timeout=60, what="every reading")
        health = (await api.http.get("/ready")).json()["checks"]["historian"]
        assert health["restarts"] == 1 and health["state"] == "running"
        assert "frozen" in health["last_restart"] and health["last_restart_ms"]
    finally:
        await api.close()
        await platform.stop()


async def test_a_historian_making_no_progress_is_restarted(
    platform_settings: Callable[..., Any],
) -> None:
    """Alive, reporting, turning its loop, and committing nothing while messages wait: the
    watchdog counts on JetStream's own count of what waits, not on the historian's word."""
    from fogline.app.platform import Platform

    platform = Platform(platform_settings(historian_progress_timeout=4.0))
    await platform.start()
    api = Api(platform.http_url, platform.bootstrap.admin_key)
    try:
        await setup_motor(api)
        supervisor = platform.historian
        # The historian's pull consumer is replaced under it by a push consumer of the same
        # name that delivers to nobody: its fetches fail, it commits nothing, while JetStream
        # counts the messages waiting for that consumer.
        stream = platform.subjects.telemetry_stream

        async def consumer_replaced() -> bool:
            # JetStream's API is away for a moment after the reload that let the device in
            # (see BrokerServer.reload): ask again until it answers.
            try:
                with contextlib.suppress(NotFoundError):
                    await platform.bus.js.delete_consumer(stream, "historian")
                await platform.bus.js.add_consumer(
                    stream,
                    ConsumerConfig(
                        durable_name="historian",
                        deliver_subject="test.nobody.listens",
                        ack_policy=AckPolicy.EXPLICIT,
                    ),
                )
            except ServiceUnavailableError:
                return False
            return True

        await async_wait_for(consumer_replaced, timeout=15, what="JetStream to take the change")
        t0 = int(time.time() * 1000) - 3_600_000
        await publish_readings(platform, t0, 0, 20)

        async def restarted() -> bool:
            return supervisor.restarts >= 1

        await async_wait_for(restarted, timeout=60, what="a restart for no progress")
        assert (supervisor.last_restart_reason or "").startswith("no progress")
        # The new process makes its consumer afresh from the committed offset.
        await async_wait_for(lambda: all_stored(api, t0, 20), timeout=60, what="every reading")
    finally:
        await api.close()
        await platform.stop()


async def test_a_platform_whose_nats_server_was_killed_stops_cleanly(
    platform_settings: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    from fogline.app.platform import Platform

    settings = platform_settings()
    platform = Platform(settings)
    await platform.start()
    nats_pid = platform.nats.pid
    historian_pid = platform.historian.pid
    # The supervisor would bring nats-server back at once: another program takes its port as
    # it dies, so that the platform is stopped with its broker away.
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    os.kill(nats_pid, signal.SIGKILL)
    await asyncio.to_thread(os.waitid, os.P_PID, nats_pid, os.WEXITED | os.WNOWAIT)
    squatter.bind(("127.0.0.1", settings.nats_port))
    squatter.listen(1)
    try:

        async def told() -> bool:
            state = await platform.readiness()
            return not state["ready"] and state["checks"]["broker"]["state"] == "failed"

        await async_wait_for(told, timeout=10, what="readiness to say the broker is away")
        caplog.clear()
        await platform.stop()  # raises nothing
    finally:
        squatter.close()
    assert not pid_alive(historian_pid)
    # No traceback, and no error but the supervisor's own attempts to bring the broker back.
    assert not [r for r in caplog.records if r.exc_info]
    assert not [
        r
        for r in caplog.records
        if r.levelno >= logging.ERROR and not r.getMessage().startswith("nats.restart")
    ]


def test_database_errors_are_typed_once_unavailable_only_when_the_database_is_away(
    tmp_path: Path, own_postgres: OwnPostgres
) -> None:
    """The store maps a database away to `Unavailable` for every repository; an error of ours
    (bad SQL) stays what it is, a 500 and a bug to fix."""
    from sqlalchemy.exc import OperationalError, ProgrammingError

    from fogline.domain.errors import Unavailable
    from fogline.store.database import Database

    sqlite = Database.open(f"sqlite:///{tmp_path / 'f.db'}")
    postgres = Database.open(own_postgres.url)
    try:
        with pytest.raises(OperationalError), sqlite.engine.connect() as conn:
            conn.exec_driver_sql("SELEC 1")
        with pytest.raises(ProgrammingError), postgres.engine.connect() as conn:
            conn.exec_driver_sql("SELEC 1")
        assert postgres.tenants.tenant_exists("default") is False
        own_postgres.stop()
        with pytest.raises(Unavailable, match="the database is unavailable"):
            postgres.tenants.tenant_exists("default")
        with pytest.raises(Unavailable):
            postgres.ping()
        own_postgres.start()
        assert postgres.tenants.tenant_exists("default") is False  # the pool recovers
    finally:
        sqlite.close()
        postgres.close()


async def test_a_platform_whose_database_is_away_stops_cleanly(
    pg_platform: Any, own_postgres: OwnPostgres, caplog: pytest.LogCaptureFixture
) -> None:
    platform = pg_platform
    historian_pid = platform.historian.pid
    own_postgres.stop()

    async def told() -> bool:
        state = await platform.readiness()
        return not state["checks"]["database"]["ok"]

    await async_wait_for(told, timeout=10, what="readiness to say the database is away")
    caplog.clear()
    await platform.stop()  # raises nothing; the fixture's own stop then has nothing to do
    assert not pid_alive(historian_pid)
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


async def test_client_json_is_current_before_the_api_answers_and_ready_waits_for_the_start(
    platform_settings: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CLI that sees the platform answer finds it through client.json (rewritten for this
    run's port before the API serves), and /ready says 503 until the whole start is done: here
    the models' recovery, held back by the test, is the last step."""
    from fogline.app.platform import Platform
    from fogline.models.deployment import DeploymentManager

    first = platform_settings()
    platform = Platform(first)
    await platform.start()
    await platform.stop()

    settings = platform_settings(data_dir=first.data_dir)  # the same data dir, a new port
    recovering, release = asyncio.Event(), asyncio.Event()
    recover = DeploymentManager.recover

    async def held_recover(self: DeploymentManager) -> None:
        recovering.set()
        await release.wait()
        await recover(self)

    monkeypatch.setattr(DeploymentManager, "recover", held_recover)
    platform = Platform(settings)
    starting = asyncio.create_task(platform.start())
    try:
        await asyncio.wait_for(recovering.wait(), 60)
        url = f"http://{settings.http_host}:{settings.http_port}"
        client = orjson.loads(settings.client_file.read_bytes())
        assert client["url"] == url
        async with httpx.AsyncClient(base_url=url) as http:
            r = await http.get("/api/v1/ready")
            assert r.status_code == 503 and "starting" in r.json()["detail"]
            assert (await http.get("/api/v1/health")).status_code == 200
            release.set()
            await asyncio.wait_for(starting, 60)
            assert (await http.get("/api/v1/ready")).status_code == 200
    finally:
        release.set()
        with contextlib.suppress(Exception):
            await starting
        await platform.stop()
