"""Models through the CLI, as a user runs them: init, submit a directory, map, deploy, and a
platform SIGKILLed in the middle of a deployment saga."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import pid_alive, wait_for
from tests.e2e.conftest import FOGLINE, RunningPlatform, start_platform

GAUGE = {
    "name": "Gauge",
    "telemetry": [
        {"name": "value", "dtype": "float"},
        {"name": "score", "dtype": "float"},
        {"name": "label", "dtype": "string"},
    ],
}


def api(p: RunningPlatform) -> httpx.Client:
    return httpx.Client(
        base_url=f"{p.url}/api/v1",
        headers={"Authorization": f"Bearer {p.api_key()}"},
        timeout=30,
    )


def ok(result: Any) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return str(result.stdout)


def deployment(p: RunningPlatform, name: str) -> dict[str, Any]:
    status: dict[str, Any] = json.loads(ok(p.cli("--json", "model", "status", name, "0.1.0")))
    return status


def test_init_submit_map_deploy_and_a_sigkill_mid_saga(tmp_path: Path) -> None:
    p = start_platform(tmp_path / "data")
    try:
        with api(p) as http:
            assert http.put("/tenants/default/asset-types/gauge", json=GAUGE).status_code == 201
            for asset in ("g1", "g2"):
                r = http.post("/tenants/default/assets", json={"id": asset, "asset_type": "gauge"})
                assert r.status_code == 201
            assert http.post("/tenants/default/devices", json={"id": "gw"}).status_code == 201

        project = tmp_path / "press"
        ok(p.cli("model", "init", "press", "--dir", str(project)))
        assert {f.name for f in project.iterdir()} >= {"model.py", "fogline.yaml", "test_model.py"}
        refused = p.cli("model", "init", "press", "--dir", str(project))
        assert refused.returncode != 0 and "not overwritten" in refused.stdout + refused.stderr
        # What the model prints goes to its log, which `fogline model logs` reads.
        model_py = project / "model.py"
        model_py.write_text('print("press: loading", flush=True)\n' + model_py.read_text())
        assert "with 3 package files" in ok(p.cli("model", "submit", str(project)))
        # Deployed before it is mapped: refused, with the command that maps it.
        unmapped = p.cli("model", "deploy", "press", "0.1.0")
        assert unmapped.returncode == 2, unmapped.stdout + unmapped.stderr
        assert "fogline model map press 0.1.0 --type" in unmapped.stderr
        unmapped = p.cli("--json", "model", "deploy", "press", "0.1.0")
        problem = json.loads(unmapped.stderr)
        assert unmapped.returncode == 2 and "mappings" in [e["field"] for e in problem["errors"]]
        assert "fogline model map press 0.1.0" in problem["next_step"]
        never_started = p.cli("model", "logs", "press", "0.1.0")
        assert never_started.returncode == 3 and "never started here" in never_started.stderr
        ok(p.cli("model", "map", "press", "0.1.0", "--type", "gauge"))
        assert "active" in ok(p.cli("model", "deploy", "press", "0.1.0"))
        assert "press: loading" in ok(p.cli("model", "logs", "press", "0.1.0")).splitlines()
        logged = json.loads(ok(p.cli("--json", "model", "logs", "press", "0.1.0", "--lines", "1")))
        assert len(logged["lines"]) == 1
        follower = subprocess.Popen(
            [FOGLINE, "model", "logs", "press", "0.1.0", "--follow", "--lines", "1000"],
            env=p.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        deadline = threading.Timer(30, follower.kill)  # its stdout ends if the line never comes
        deadline.start()
        followed: list[str] = []
        try:
            assert follower.stdout is not None
            for line in follower.stdout:
                followed.append(line.rstrip("\n"))
                if followed[-1] == "press: loading":
                    break
        finally:
            deadline.cancel()
            follower.kill()
            follower.wait(10)
        assert "press: loading" in followed

        with api(p) as http:
            now = int(time.time() * 1000)
            r = http.post(
                "/tenants/default/devices/gw/telemetry",
                json={"asset": "g1", "ts": now, "values": {"value": 250.0}},
            )
            assert r.status_code == 202

            def labelled() -> Any:
                r = http.get(
                    "/tenants/default/assets/g1/telemetry/history",
                    params={"keys": "label", "from": "0"},
                )
                series = r.json()["series"].get("label")
                return series if series and series["points"] else None

            assert wait_for(labelled, 30, "the model's output")["points"] == [[now, "high"]]

        # What an on-call engineer reads: where every reading is, health, dead letters.
        status = " ".join(ok(p.cli("model", "status", "press", "0.1.0")).split())  # unwrapped
        assert (
            "readings: 1 accepted = 1 scored + 0 dead-lettered + 0 queued + 0 in flight" in status
        )
        assert "calls: 1 answered, 0 failed" in status and "health: ok; 0 restarts" in status
        assert "no dead letters" in ok(p.cli("model", "dead-letters", "press", "0.1.0"))

        # A second version of press is refused while 0.1.0 is active, and told how to go on.
        second = tmp_path / "press-0.2.0"
        shutil.copytree(project, second)
        manifest = second / "fogline.yaml"
        manifest.write_text(manifest.read_text().replace("version: 0.1.0", "version: 0.2.0"))
        ok(p.cli("model", "submit", str(second)))
        refused = p.cli("model", "deploy", "press", "0.2.0")
        assert refused.returncode == 4, refused.stdout + refused.stderr  # a conflict
        assert "0.1.0 is active" in refused.stderr
        assert "fogline model update press --to 0.2.0" in refused.stderr
        assert json.loads(ok(p.cli("model", "show", "press", "0.2.0")))["state"] == "draft"

        # A second model that takes seconds to become healthy: kill the platform while the
        # saga waits for it.
        slow = tmp_path / "slow"
        ok(p.cli("model", "init", "slow", "--dir", str(slow)))
        model_py = (slow / "model.py").read_text()
        # Long enough that a loaded machine cannot finish the wait before the kill below.
        (slow / "model.py").write_text("import time\ntime.sleep(15)\n" + model_py)
        ok(p.cli("model", "submit", str(slow)))
        ok(p.cli("model", "map", "slow", "0.1.0", "--asset", "g2"))
        press_pid = deployment(p, "press")["runtime"]["pid"]
        ok(p.cli("model", "deploy", "slow", "0.1.0", "--no-wait"))

        def waiting_for_health() -> dict[str, Any] | None:
            status = deployment(p, "slow")
            steps = [(s["step"], s["status"]) for s in status["steps"]]
            return status if ("wait-healthy", "started") in steps else None

        status = wait_for(waiting_for_health, 30, "the saga to wait for health")
        slow_pid = status["runtime"]["pid"]
        p.process.send_signal(signal.SIGKILL)
        p.process.wait(10)
        # Every model process dies with the platform: nothing is left half-deployed.
        wait_for(lambda: not pid_alive(slow_pid) and not pid_alive(press_pid), 10, "no orphans")

        p = start_platform(p.data_dir, (p.http_port, int(p.env["FOGLINE_NATS_PORT"]), p.mqtt_port))
        ok(p.cli("model", "ls"))

        def active(name: str) -> bool:
            return bool(deployment(p, name)["state"] == "active")

        wait_for(lambda: active("slow"), 90, "the interrupted deployment to resume")
        wait_for(lambda: active("press"), 60, "the active model to be restored")
        steps = [(s["saga"], s["step"], s["status"]) for s in deployment(p, "slow")["steps"]]
        assert ("recover", "resume", "started") in steps
        events = json.loads(ok(p.cli("--json", "model", "events", "slow", "0.1.0")))
        assert [e["event"] for e in events] == ["submit", "deploy", "deployed"]
        assert pid_alive(deployment(p, "press")["runtime"]["pid"])

        missing = p.cli("model", "deploy", "nothing", "1.0.0")
        assert missing.returncode != 0
        assert "does not exist" in missing.stdout + missing.stderr
    finally:
        if p.process.poll() is None:
            p.stop()


def test_backfill_from_the_cli(platform_process: RunningPlatform, tmp_path: Path) -> None:
    """History stored before the model existed, scored by `fogline model backfill`: outputs
    at the readings' own times, read back with `fogline telemetry history`."""
    p = platform_process
    start = (int(time.time()) - 7200) * 1000  # two hours ago, whole seconds
    with api(p) as http:
        assert http.put("/tenants/default/asset-types/gauge", json=GAUGE).status_code == 201
        r = http.post("/tenants/default/assets", json={"id": "g1", "asset_type": "gauge"})
        assert r.status_code == 201
        assert http.post("/tenants/default/devices", json={"id": "gw"}).status_code == 201
        readings = [
            {"asset": "g1", "ts": start + i * 1000, "values": {"value": float(i * 30)}}
            for i in range(8)
        ]
        r = http.post("/tenants/default/devices/gw/telemetry", json={"readings": readings})
        assert r.status_code == 202

        def stored() -> bool:
            query = {"keys": "value", "from": str(start), "to": "now"}
            got = http.get("/tenants/default/assets/g1/telemetry/history", params=query).json()
            return len(got["series"].get("value", {}).get("points", [])) == 8

        wait_for(stored, 20, "the history stored")
    project = tmp_path / "press"
    ok(p.cli("model", "init", "press", "--dir", str(project)))
    ok(p.cli("model", "submit", str(project)))
    ok(p.cli("model", "map", "press", "0.1.0", "--type", "gauge"))
    assert "active" in ok(p.cli("model", "deploy", "press", "0.1.0"))

    begin, end = str(start), str(start + 5000)  # the first five readings
    command = ["model", "backfill", "press", "0.1.0", "--asset", "g1", "--from", begin, "--to", end]
    # The template's model is stateful: its live state would learn the old readings.
    refused = p.cli(*command)
    said = " ".join(refused.stderr.split())
    assert refused.returncode != 0 and "is stateful" in said and "--stateful-ok" in said, said
    text = ok(p.cli(*command, "--stateful-ok"))
    assert "5 readings read, 1 calls, 5 scored, 10 outputs written" in " ".join(text.split())
    history = json.loads(
        ok(
            p.cli(
                "--json",
                "telemetry",
                "history",
                "g1",
                "--keys",
                "label",
                "--from",
                begin,
                "--to",
                "now",
            )
        )
    )
    points = history["series"]["label"]["points"]
    assert points == [[start + i * 1000, "high" if i * 30 > 100 else "ok"] for i in range(5)]

    inverted = p.cli(
        "model", "backfill", "press", "0.1.0", "--asset", "g1", "--from", end, "--to", begin
    )
    said = " ".join(inverted.stderr.split())
    assert inverted.returncode != 0 and "empty or inverted" in said, said
    future = p.cli(
        "model", "backfill", "press", "0.1.0", "--asset", "g1", "--from", "+1h", "--to", "+2h"
    )
    said = " ".join(future.stderr.split())
    assert future.returncode != 0 and "in the future" in said, said
    unmapped = p.cli("model", "backfill", "press", "0.1.0", "--asset", "nope", "--from", "-1h")
    said = " ".join(unmapped.stderr.split())
    assert unmapped.returncode != 0 and "not mapped" in said, said
