"""The CLI as a user runs it: `fogline up`, register, publish with paho, read back, stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx

from tests.conftest import MOTOR_TYPE, free_port, pid_alive, wait_for
from tests.e2e.conftest import FOGLINE, RunningPlatform, start_platform
from tests.mqtt_client import Device

MOTOR_YAML = """
id: motor
name: Induction motor
telemetry:
  - {name: temperature, dtype: float, unit: degC, min: -40, max: 200}
  - {name: vibration, dtype: float, unit: mm/s, min: 0}
attributes:
  - {name: power_kw, dtype: float, required: true}
"""


def test_up_register_publish_query_stop(platform_process: RunningPlatform, tmp_path: Path) -> None:
    p = platform_process
    banner = "".join(p.output)
    assert f"http://127.0.0.1:{p.http_port}/api/v1" in banner
    assert f"mqtt://127.0.0.1:{p.mqtt_port}" in banner
    assert "fgl_" in banner  # the first API key, shown once

    type_file = tmp_path / "motor.yaml"
    type_file.write_text(MOTOR_YAML)
    r = p.cli("asset-type", "apply", str(type_file))
    assert r.returncode == 0, r.stderr
    r = p.cli(
        "asset",
        "create",
        "m1",
        "--type",
        "motor",
        "--attr",
        "power_kw=7.5",
        "--site",
        "north",
        "--label",
        "line=a",
    )
    assert r.returncode == 0, r.stderr
    r = p.cli(
        "device",
        "create",
        "gw1",
        "--cpu",
        "arm",
        "--cores",
        "4",
        "--connectivity",
        "wifi",
        "--power",
        "mains",
        "--label",
        "site=north",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    creds = json.loads(r.stdout)["credentials"]

    device = Device("127.0.0.1", p.mqtt_port, creds["username"], creds["password"], "gw1")
    assert not device.connect().is_failure
    t0 = int(time.time() * 1000) - 20_000
    device.publish(
        creds["topic"],
        [
            {
                "asset": "m1",
                "ts": t0 + i * 1000,
                "values": {"temperature": 30.0 + i, "vibration": 1.0},
            }
            for i in range(20)
        ],
    )
    device.publish(creds["topic"], "{broken")
    device.close()

    key = p.api_key()
    headers = {"Authorization": f"Bearer {key}"}

    def history() -> list[list[float]] | None:
        r = httpx.get(
            f"{p.url}/api/v1/tenants/default/assets/m1/telemetry/history",
            params={"keys": "temperature", "from": str(t0), "to": str(t0 + 20_000)},
            headers=headers,
        )
        points: list[list[float]] = r.json()["series"].get("temperature", {}).get("points", [])
        return points if len(points) == 20 else None

    points = wait_for(history, what="history over HTTP")
    assert [v for _, v in points] == [30.0 + i for i in range(20)]

    r = p.cli("telemetry", "latest", "m1", "--json")
    assert json.loads(r.stdout)["values"]["temperature"]["value"] == 49.0
    r = p.cli(
        "telemetry",
        "history",
        "m1",
        "--keys",
        "temperature",
        "--from",
        str(t0),
        "--to",
        str(t0 + 20_000),
        "--bucket",
        "10s",
        "--json",
    )
    buckets = json.loads(r.stdout)["series"]["temperature"]["buckets"]
    assert sum(b["count"] for b in buckets) == 20
    # Bounds relative to now either way; a bad one is a clear error and a non-zero exit.
    r = p.cli("telemetry", "history", "m1", "--from", "-1h", "--to", "+24h", "--json")
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)["series"]["temperature"]["points"]) == 20
    r = p.cli("telemetry", "history", "m1", "--to", "+banana")
    assert r.returncode == 2 and "'banana' is not a duration" in r.stderr, r.stderr
    r = wait_for(
        lambda: (x := p.cli("dead-letters", "--json")) and json.loads(x.stdout)["total"] == 1 and x,
        what="dead letter",
    )
    assert json.loads(r.stdout)["by_reason"] == {"not-json": 1}

    system = p.system()
    children = [system["nats_pid"], system["historian_pid"]]
    assert all(pid_alive(pid) for pid in children)
    assert p.stop(signal.SIGINT) == 0
    assert "stopped" in "".join(p.output)
    wait_for(lambda: not any(pid_alive(pid) for pid in children), what="children to exit")


def test_cli_errors_are_clear(platform_process: RunningPlatform, tmp_path: Path) -> None:
    p = platform_process
    r = p.cli("asset", "create", "Bad.Id", "--type", "No.Pe")
    assert r.returncode == 2
    assert "invalid request: 2 problems" in r.stderr, r.stderr
    assert "'Bad.Id' is not a slug" in r.stderr and "'No.Pe' is not a slug" in r.stderr
    r = p.cli("asset", "create", "good", "--type", "nope")
    assert r.returncode == 2 and "invalid asset" in r.stderr and "'nope' does not exist" in r.stderr
    r = p.cli("asset", "show", "missing")
    assert r.returncode == 3 and "does not exist" in r.stderr
    bad_file = tmp_path / "t.yaml"
    bad_file.write_text("telemetry: []\n")
    r = p.cli("asset-type", "apply", str(bad_file))
    assert r.returncode == 2 and "id" in r.stderr
    r = p.cli("--api-key", "fgl_x_y", "asset", "ls")
    assert r.returncode == 5 and "API key" in r.stderr
    r = p.cli("asset", "create", "x", "--type", "t", "--label", "novalue")
    assert r.returncode == 2 and "key=value" in r.stderr

    # Telemetry that is refused whole: exit 2, each value's reason on stderr.
    headers = {"Authorization": f"Bearer {p.api_key()}"}
    with httpx.Client(base_url=f"{p.url}/api/v1", headers=headers) as api:
        assert api.put("/tenants/default/asset-types/motor", json=MOTOR_TYPE).status_code == 201
        motor = {"id": "m9", "asset_type": "motor", "attributes": {"power_kw": 7.5}}
        assert api.post("/tenants/default/assets", json=motor).status_code == 201
        assert api.post("/tenants/default/devices", json={"id": "gw9"}).status_code == 201
    refused = '[{"asset": "m9", "values": {"rpm": "fast"}}]'
    r = p.cli("telemetry", "send", "gw9", "-", stdin=refused)
    assert r.returncode == 2 and "accepted 0 value(s)" in r.stdout, (r.stdout, r.stderr)
    assert "rejected:" in r.stderr and "rpm" in r.stderr
    half = '[{"asset": "m9", "values": {"rpm": 1200, "temperature": "hot"}}]'
    r = p.cli("telemetry", "send", "gw9", "-", stdin=half)
    assert r.returncode == 0 and "accepted 1 value(s)" in r.stdout, (r.stdout, r.stderr)


def test_up_refuses_a_taken_port(platform_process: RunningPlatform, tmp_path: Path) -> None:
    taken = platform_process.http_port
    result = _up(tmp_path / "other", {"FOGLINE_HTTP_PORT": str(taken)})
    assert result.returncode == 7
    assert f"HTTP port 127.0.0.1:{taken} is already in use" in result.stderr
    result = _up(tmp_path / "other2", {"FOGLINE_MQTT_PORT": str(platform_process.mqtt_port)})
    assert result.returncode == 7 and "MQTT port" in result.stderr
    assert "Traceback" not in result.stderr


def _up(data_dir: Path, env: dict[str, str]):  # type: ignore[no-untyped-def]
    import os
    import subprocess

    full = {
        **os.environ,
        "FOGLINE_DATA_DIR": str(data_dir),
        "FOGLINE_HTTP_PORT": str(free_port()),
        "FOGLINE_NATS_PORT": str(free_port()),
        "FOGLINE_MQTT_PORT": str(free_port()),
        **env,
    }
    return subprocess.run([FOGLINE, "up"], env=full, capture_output=True, text=True, timeout=60)


def test_up_refuses_a_broken_config_and_an_unwritable_data_dir(tmp_path: Path) -> None:
    config = tmp_path / "fogline.yaml"
    config.write_text("hot_max_bytes: lots\nmystery: 1\n")
    r = _up(tmp_path, {"FOGLINE_CONFIG": str(config)})
    assert r.returncode == 7
    assert "invalid settings" in r.stderr and "hot_max_bytes" in r.stderr and "mystery" in r.stderr
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    r = _up(blocker / "data", {})
    assert r.returncode == 7 and "is not writable" in r.stderr
    assert "Traceback" not in r.stderr


def test_restart_keeps_the_key_and_the_history(tmp_path: Path) -> None:
    first = start_platform(tmp_path / "data")
    key = first.api_key()
    assert "fgl_" in "".join(first.output)
    assert first.stop() == 0
    second = start_platform(tmp_path / "data")
    try:
        assert second.api_key() == key
        assert "fgl_" not in "".join(second.output)  # shown once only
        r = second.cli("tenant", "ls", "--json")
        assert [t["id"] for t in json.loads(r.stdout)] == ["default"]
    finally:
        second.stop()


def test_model_submit_from_the_cli(platform_process: RunningPlatform, tmp_path: Path) -> None:
    p = platform_process
    good = tmp_path / "model.yaml"
    good.write_text(
        "manifest:\n"
        "  name: motor-anomaly\n  version: 0.1.0\n"
        "  model: {type: http, local: {command: [python, -m, model]}}\n"
        "  trigger: {type: REAL_TIME}\n"
        "  inputs: [{dataColumnName: vibration}]\n"
        "  outputs: [{dataColumnName: anomaly_score}]\n"
    )
    r = p.cli("model", "submit", str(good))
    assert r.returncode == 0, r.stderr
    assert "motor-anomaly" in r.stdout and "draft" in r.stdout
    r = p.cli("model", "ls", "--json")
    assert [(m["name"], m["state"]) for m in json.loads(r.stdout)] == [("motor-anomaly", "draft")]
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {
                "manifest": {
                    "name": "X",
                    "version": "1",
                    "model": {"hosted": "external"},
                    "trigger": {"type": "TIME_WINDOW"},
                    "inputs": [],
                    "outputs": [],
                }
            }
        )
    )
    r = p.cli("model", "submit", str(bad))
    assert r.returncode == 2
    for field in (
        "manifest.name",
        "manifest.version",
        "manifest.model.url",
        "manifest.trigger.frequency",
        "manifest.inputs",
        "manifest.outputs",
    ):
        assert field in r.stderr
    r = p.cli("model", "rm", "motor-anomaly", "0.1.0")
    assert r.returncode == 0
    r = p.cli("model", "rm", "motor-anomaly", "0.1.0")
    assert r.returncode == 4 and "allowed from: draft" in r.stderr


def test_cli_for_a_person_and_for_a_script(platform_process: RunningPlatform) -> None:
    """--version; errors that name the next step; --json errors as problem documents with
    today's exit codes; a table that folds a long id rather than cutting it."""
    from fogline import __version__

    p = platform_process
    r = p.cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == __version__

    # A bad key: how to give a good one.
    r = p.cli("--api-key", "fgl_x_y", "asset", "ls")
    assert r.returncode == 5 and "unknown API key" in r.stderr
    assert "--api-key" in r.stderr and "FOGLINE_API_KEY" in r.stderr and "--data-dir" in r.stderr
    r = p.cli("--api-key", "fgl_x_y", "asset", "ls", "--json")
    assert r.returncode == 5 and r.stdout == ""
    problem = json.loads(r.stderr)
    assert {"type", "title", "status", "detail", "errors", "next_step"} <= problem.keys()
    assert problem["status"] == 401 and problem["detail"] == "unknown API key"

    # Nothing listening: start one, or point at one.
    nowhere = f"http://127.0.0.1:{free_port()}"
    r = p.cli("--url", nowhere, "asset", "ls")
    assert r.returncode == 6, r.stderr
    assert f"no platform runs at {nowhere}" in r.stderr
    assert "`fogline up`" in r.stderr and "--url" in r.stderr
    r = p.cli("--json", "--url", nowhere, "asset", "ls")
    assert r.returncode == 6 and json.loads(r.stderr)["status"] == 503

    # Bad input under --json: every problem at its field, the same exit code as without.
    r = p.cli("--json", "asset", "create", "Bad.Id", "--type", "No.Pe")
    assert r.returncode == 2
    problem = json.loads(r.stderr)
    assert problem["status"] == 422 and len(problem["errors"]) == 2
    assert all({"field", "reason"} <= e.keys() for e in problem["errors"])
    r = p.cli("--json", "asset", "ls", "--no-such-option")
    assert r.returncode == 2 and "--no-such-option" in json.loads(r.stderr)["detail"]

    # A 60-character id in an 80-column table: folded, never cut; labels as k=v.
    motor = p.data_dir.parent / "motor.yaml"
    motor.write_text(MOTOR_YAML)
    assert p.cli("asset-type", "apply", str(motor)).returncode == 0
    long_id = "temperature-anomaly-sensor-" + "x" * 33
    assert len(long_id) == 60
    r = p.cli(
        "asset", "create", long_id, "--type", "motor", "--attr", "power_kw=5", "--label", "site=n"
    )
    assert r.returncode == 0, r.stderr
    shown = subprocess.run(
        [FOGLINE, "asset", "ls"],
        env={**p.env, "COLUMNS": "80"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert "…" not in shown.stdout and "{'" not in shown.stdout
    rows = [line.split("│") for line in shown.stdout.splitlines() if line.startswith("│")]
    assert long_id in "".join(cells[1].strip() for cells in rows), shown.stdout
    assert "site=n" in shown.stdout


def test_local_mistakes_are_messages_not_tracebacks(tmp_path: Path) -> None:
    """What the CLI itself can see is wrong is said before any platform is asked (here none
    runs), with exit 2: a number JSON cannot carry, a folder that is not there."""
    env = {**os.environ, "FOGLINE_URL": f"http://127.0.0.1:{free_port()}", "FOGLINE_API_KEY": "k"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([FOGLINE, *args], env=env, capture_output=True, text=True)

    r = run("asset", "create", "m2", "--type", "motor", "--attr", "power_kw=1e999")
    assert r.returncode == 2 and "'1e999' is not a finite number" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    missing = tmp_path / "nowhere" / "f.parquet"
    r = run("telemetry", "export", "m1", "--format", "parquet", "--out", str(missing))
    said = " ".join(r.stderr.split())
    assert r.returncode == 2 and f"the folder {missing.parent} does not exist" in said, said
    r = run("--json", "device", "import", str(tmp_path / "no-such.csv"), "--credentials", "c")
    assert r.returncode == 2 and json.loads(r.stderr)["status"] == 422, r.stderr
