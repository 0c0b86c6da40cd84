"""`fogline up` as an operator runs it: one platform per data dir, the three ways of stopping it,
and a failed start that leaves nothing half-made (or, past the admin key, shows the key next)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import free_port, pid_alive, wait_for
from tests.e2e.conftest import FOGLINE, RunningPlatform, start_platform


def _up(data_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """A `fogline up` expected to end by itself (refused)."""
    full = {
        **os.environ,
        "FOGLINE_DATA_DIR": str(data_dir),
        "FOGLINE_HTTP_PORT": str(free_port()),
        "FOGLINE_NATS_PORT": str(free_port()),
        "FOGLINE_MQTT_PORT": str(free_port()),
        "FOGLINE_DISK_RESERVE": "64MiB",
        **env,
    }
    return subprocess.run([FOGLINE, "up"], env=full, capture_output=True, text=True, timeout=60)


def _children(p: RunningPlatform) -> list[int]:
    system = p.system()
    return [system["nats_pid"], system["historian_pid"]]


def _in_session(sid: int) -> list[int]:
    """Live processes of a session: what a terminal's `fogline up` left behind."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # Fields after the command (in parentheses): state, ppid, pgrp, session.
            state, _ppid, _pgrp, session = stat.rsplit(")", 1)[1].split()[:4]
            if int(session) == sid and state != "Z":
                found.append(int(entry.name))
    return found


def test_a_second_platform_on_a_data_dir_is_refused_until_the_first_is_gone(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    first = start_platform(data)
    try:
        children = _children(first)
        client_file = (data / "client.json").read_text()
        database = (data / "fogline.db").stat()

        second = _up(data)

        assert second.returncode == 7, second.stderr
        message = " ".join(second.stderr.split())  # the terminal wraps it
        assert "already running on the data dir" in message
        assert f"pid {first.process.pid}" in message and f"API {first.url}" in message
        assert "Traceback" not in second.stderr
        # Refused before it touched anything: the first platform runs on as it was.
        assert (data / "client.json").read_text() == client_file
        assert (data / "fogline.db").stat().st_mtime_ns == database.st_mtime_ns
        assert _children(first) == children and all(pid_alive(pid) for pid in children)
        assert first.process.poll() is None

        # Killed without a chance to clean up: its lock file stays, its lock does not.
        first.process.kill()
        first.process.wait(10)
        wait_for(lambda: not any(pid_alive(pid) for pid in children), what="children gone")
    finally:
        if first.process.poll() is None:
            first.process.kill()
    assert (data / "platform.lock").exists()
    third = start_platform(data)
    assert third.system()["pid"] == third.process.pid
    assert third.stop() == 0


async def test_platform_start_on_a_held_data_dir_is_a_typed_error_and_makes_nothing(
    platform_settings: Callable[..., Any],
) -> None:
    from fogline.app.lock import DataDirLock, PlatformAlreadyRunning
    from fogline.app.platform import Platform

    settings = platform_settings()
    settings.data_dir.mkdir(mode=0o700)
    held = DataDirLock(settings.data_dir)
    held.acquire()
    held.record("http://127.0.0.1:1")
    try:
        with pytest.raises(PlatformAlreadyRunning) as refused:
            await Platform(settings).start()
        assert refused.value.holder["pid"] == os.getpid()
        assert "API http://127.0.0.1:1" in str(refused.value)
        assert sorted(p.name for p in settings.data_dir.iterdir()) == ["platform.lock"]
    finally:
        held.release()


@pytest.mark.parametrize("how", ["sigint", "sigterm", "terminal-ctrl-c", "group-sigterm"])
def test_every_way_of_stopping_is_clean(tmp_path: Path, how: str) -> None:
    p = start_platform(tmp_path / "data", new_session=True)
    try:
        children = _children(p)
        if how == "sigint":
            p.process.send_signal(signal.SIGINT)
        elif how == "sigterm":
            p.process.send_signal(signal.SIGTERM)
        elif how == "terminal-ctrl-c":  # the whole foreground process group
            os.killpg(p.process.pid, signal.SIGINT)
        else:  # what systemd's stop does (KillMode=control-group): SIGTERM to every process
            os.killpg(p.process.pid, signal.SIGTERM)
        assert p.process.wait(30) == 0
        wait_for(lambda: "stopped\n" in p.output, what="the last line")
        stopping = "".join(p.output[p.output.index("stopping...\n") :])
        assert "Traceback" not in stopping and "crashed" not in stopping, stopping
        # Every part stopped in order: nothing complained while going.
        assert not re.search(r" (warning|error|critical) ", stopping), stopping
        wait_for(lambda: not any(pid_alive(pid) for pid in children), what="children gone")
        wait_for(lambda: not _in_session(p.process.pid), what="no process left in its session")
    finally:
        if p.process.poll() is None:
            p.process.kill()


def test_a_taken_broker_port_fails_the_start_with_nothing_made(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        r = _up(data, FOGLINE_NATS_PORT=str(port))
    assert r.returncode == 7 and f"NATS port 127.0.0.1:{port} is already in use" in r.stderr
    assert "Traceback" not in r.stderr
    # No database, no key, no broker state: the next start is a first start.
    assert sorted(p.name for p in data.iterdir()) == ["platform.lock"]


def test_an_admin_key_a_failed_start_made_is_shown_by_the_next_start(
    tmp_path: Path, platform_settings: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from fogline.app import platform as platform_module
    from fogline.domain.errors import Unavailable

    async def historian_refuses(*_args: Any) -> Any:
        raise Unavailable("the historian could not start: (test) refused")

    # A start that fails after it made the admin key, before it could show it.
    monkeypatch.setattr(platform_module, "build_ingest", historian_refuses)
    settings = platform_settings()
    with pytest.raises(Unavailable):
        asyncio.run(platform_module.Platform(settings).start())
    key = json.loads(settings.client_file.read_text())["api_key"]

    second = start_platform(settings.data_dir)
    try:
        banner = "".join(second.output)
        assert key in banner and "made by an earlier start that did not finish" in banner
        r = httpx.get(f"{second.url}/api/v1/system", headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200
    finally:
        assert second.stop() == 0
    third = start_platform(settings.data_dir)
    try:
        banner = "".join(third.output)
        assert key not in banner  # shown once
        assert f"the admin key is in {settings.client_file}" in banner
    finally:
        assert third.stop() == 0
