"""Running the `fogline` command as a user would, in subprocesses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import free_port, wait_for

FOGLINE = str(Path(sys.executable).parent / "fogline")


@dataclass
class RunningPlatform:
    process: subprocess.Popen[str]
    data_dir: Path
    env: dict[str, str]
    http_port: int
    mqtt_port: int
    output: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def cli(
        self, *args: str, stdin: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [FOGLINE, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=stdin,
        )

    def system(self) -> dict[str, Any]:
        key = self.api_key()
        r = httpx.get(f"{self.url}/api/v1/system", headers={"Authorization": f"Bearer {key}"})
        body: dict[str, Any] = r.json()
        return body

    def api_key(self) -> str:
        import json

        key: str = json.loads((self.data_dir / "client.json").read_text())["api_key"]
        return key

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30) -> int:
        self.process.send_signal(sig)
        return self.process.wait(timeout)


def start_platform(
    data_dir: Path,
    ports: tuple[int, int, int] | None = None,
    extra_env: dict[str, str] | None = None,
    new_session: bool = False,
) -> RunningPlatform:
    """`fogline up` in a subprocess, returned once it printed its banner. new_session: in a
    session (and process group) of its own, as a terminal runs it: os.killpg(pid, SIGINT) is
    then what the terminal's Ctrl-C does."""
    http_port, nats_port, mqtt_port = ports or (free_port(), free_port(), free_port())
    env = {
        **os.environ,
        "FOGLINE_DATA_DIR": str(data_dir),
        "FOGLINE_HTTP_PORT": str(http_port),
        "FOGLINE_NATS_PORT": str(nats_port),
        "FOGLINE_MQTT_PORT": str(mqtt_port),
        "FOGLINE_DISK_RESERVE": "64MiB",  # as tests/conftest.py says why
        "PYTHONUNBUFFERED": "1",
        **(extra_env or {}),
    }
    process = subprocess.Popen(
        [FOGLINE, "up"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=new_session,
    )
    running = RunningPlatform(process, data_dir, env, http_port, mqtt_port)
    ready = threading.Event()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            running.output.append(line)
            if "Press Ctrl-C" in line:
                ready.set()

    threading.Thread(target=pump, daemon=True).start()
    wait_for(
        lambda: ready.is_set() or process.poll() is not None,
        timeout=60,
        what="fogline up to be ready",
    )
    if not ready.is_set():
        raise AssertionError("fogline up exited:\n" + "".join(running.output))
    return running


@pytest.fixture
def platform_process(tmp_path: Path) -> Iterator[RunningPlatform]:
    running = start_platform(tmp_path / "data")
    yield running
    if running.process.poll() is None:
        running.process.kill()
        running.process.wait(10)
