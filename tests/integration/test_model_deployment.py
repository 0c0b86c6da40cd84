"""Deploying real model servers: the saga, the data companion, outputs back as telemetry."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests import model_kit as k
from tests.conftest import Api, async_wait_for, free_port, pid_alive


async def outputs_of(api: Api, asset: str, telemetry: str, count: int = 1) -> list[list[Any]]:
    async def arrived() -> list[list[Any]] | None:
        points = await k.history(api, asset, telemetry)
        return points if len(points) >= count else None

    found: list[list[Any]] = await async_wait_for(arrived, 30, f"{telemetry} of {asset}")
    return found


async def test_a_model_scores_what_its_type_mapping_feeds_it(platform: Any, api: Api) -> None:
    await k.sensors(api, "s1", "s2")
    name = await k.submit(api, k.manifest("doubler"), {"model.py": k.DOUBLER})
    await k.map_type(api, name)
    r = await api.http.post(f"/tenants/default/models/{name}/1.0.0/deploy")
    assert r.status_code == 202, r.text
    assert r.json()["state"] == "deploying"
    await k.wait_state(api, name, "active")
    r = await api.http.put(
        f"/tenants/default/models/{name}/1.0.0/package",
        content=k.package({"model.py": "raise SystemExit"}),
        headers={"Content-Type": "application/gzip"},
    )
    assert r.status_code == 422 and "active model cannot change" in r.text  # what runs stays
    r = await api.http.put(
        "/tenants/default/models/nope/1.0.0/package",
        content=k.package({"model.py": ""}),
        headers={"Content-Type": "application/gzip"},
    )
    assert r.status_code == 404

    live = await platform.bus.nc.subscribe(platform.subjects.live("default", "s2"))
    now = int(time.time() * 1000)
    await k.send(api, "s1", now, 21.5)
    await k.send(api, "s2", now, 60.0)
    assert await outputs_of(api, "s1", "doubled") == [[now, 43.0]]
    assert await outputs_of(api, "s2", "level") == [[now, "high"]]  # readAsString
    assert await outputs_of(api, "s2", "doubled") == [[now, 120.0]]
    seen: list[dict[str, Any]] = []
    while not any("doubled" in r["values"] for r in seen):  # the outputs reach the live stream
        seen += orjson.loads((await live.next_msg(timeout=10)).data)["readings"]
    await live.unsubscribe()

    # An asset added to the mapped type is fed within seconds, without a restart.
    r = await api.http.post("/tenants/default/assets", json={"id": "s3", "asset_type": "sensor"})
    assert r.status_code == 201

    async def fed() -> bool:
        return "s3" in (await k.deployment(api, name))["companion"]["assets"]

    await async_wait_for(fed, 10, "s3 fed")
    await k.send(api, "s3", now + 1, 1.0)
    assert await outputs_of(api, "s3", "doubled") == [[now + 1, 2.0]]
    r = await api.http.delete("/tenants/default/assets/s3")
    assert r.status_code in (200, 204), r.text

    async def let_go() -> bool:
        return "s3" not in (await k.deployment(api, name))["companion"]["assets"]

    await async_wait_for(let_go, 10, "s3 let go")

    status = await k.deployment(api, name)
    pid = status["runtime"]["pid"]
    assert pid_alive(pid)
    r = await api.http.post(f"/tenants/default/models/{name}/1.0.0/stop")
    assert r.status_code == 202, r.text
    await k.wait_state(api, name, "stopped")
    assert not pid_alive(pid)
    events = (await api.http.get(f"/tenants/default/models/{name}/1.0.0/events")).json()
    assert [e["event"] for e in events] == ["submit", "deploy", "deployed", "stop", "stopped"]
    r = await api.http.delete(f"/tenants/default/models/{name}/1.0.0")
    assert r.status_code == 409  # removed only from draft
    assert (await api.http.post(f"/tenants/default/models/{name}/1.0.0/retire")).status_code == 200
    saga = (await k.deployment(api, name))["saga"]  # retire is a saga too, of one step
    assert (saga["name"], saga["status"], saga["step"]) == ("retire", "done", "mark-draft")
    again = await api.http.post(f"/tenants/default/models/{name}/1.0.0/retire")
    assert again.status_code == 409  # the lifecycle table refuses at once: already in draft
    assert (await k.deployment(api, name))["saga"]["name"] == "retire"  # no saga began
    assert (await api.http.delete(f"/tenants/default/models/{name}/1.0.0")).status_code == 200


async def test_deploy_needs_mappings_and_a_start_command(platform: Any, api: Api) -> None:
    await k.sensors(api, "s1")
    name = await k.submit(api, k.manifest("unmapped"), {"model.py": k.DOUBLER})
    r = await api.http.post(f"/tenants/default/models/{name}/1.0.0/deploy")
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"
    assert "mappings" in r.text
    assert await k.state_of(api, name) == "draft"
    r = await api.http.post(f"/tenants/default/models/{name}/1.0.0/stop")
    assert r.status_code == 409  # not active: the lifecycle table refuses
    assert "cannot stop" in r.json()["detail"]


async def test_a_model_that_cannot_start_is_compensated_back_to_draft(
    platform: Any, api: Api
) -> None:
    await k.sensors(api, "s1")
    crash = "import sys; print('model failed to load its weights'); sys.exit(3)"
    name = await k.submit(api, k.manifest("broken"), {"model.py": crash})
    await k.map_type(api, name)
    assert (await api.http.post(f"/tenants/default/models/{name}/1.0.0/deploy")).status_code == 202
    await k.wait_state(api, name, "draft")
    model = (await api.http.get(f"/tenants/default/models/{name}/1.0.0")).json()
    assert "wait-healthy failed after 3 attempts" in model["state_reason"]
    assert "failed to load its weights" in model["state_reason"]  # the log tail says why
    status = await k.deployment(api, name)
    steps = [(s["step"], s["status"]) for s in status["steps"]]
    assert steps.count(("wait-healthy", "failed")) == 3
    assert ("start-model", "compensated") in steps
    assert status["saga"]["status"] == "failed"
    assert status["runtime"] is None
    events = (await api.http.get(f"/tenants/default/models/{name}/1.0.0/events")).json()
    assert [e["event"] for e in events][-2:] == ["deploy", "deploy-failed"]


async def test_a_crashed_model_is_restarted_and_an_unrecoverable_one_goes_to_draft(
    platform_settings: Callable[..., Any],
) -> None:
    from fogline.app.platform import Platform

    p = Platform(
        platform_settings(
            model_health_interval=0.3,
            model_max_health_failures=2,
            model_start_timeout=3,
            model_stable_after=1.0,
        )
    )
    await p.start()
    api = Api(p.http_url, p.bootstrap.admin_key)
    try:
        await k.sensors(api, "s1")
        name = await k.submit(api, k.manifest("fragile"), {"model.py": k.DOUBLER})
        await k.map_type(api, name)
        await api.http.post(f"/tenants/default/models/{name}/1.0.0/deploy")
        await k.wait_state(api, name, "active")
        first = (await k.deployment(api, name))["runtime"]["pid"]
        os.kill(first, signal.SIGKILL)

        async def restarted() -> bool:
            status = await k.deployment(api, name)
            return bool(status["health"] and status["health"]["restarts"] == 1)

        await async_wait_for(restarted, 30, "restart")
        status = await k.deployment(api, name)
        assert status["runtime"]["pid"] != first and pid_alive(status["runtime"]["pid"])
        # Degraded while it crashed and was restarted; active again once well for a while.
        await k.wait_state(api, name, "active")
        events = (await api.http.get(f"/tenants/default/models/{name}/1.0.0/events")).json()
        assert [e["event"] for e in events][-2:] == ["degrade", "recover"]
        assert "the model process exited" in events[-2]["reason"]
        now = int(time.time() * 1000)
        await k.send(api, "s1", now, 2.0)
        assert await outputs_of(api, "s1", "doubled") == [[now, 4.0]]  # fed again
        # /ready shows each deployed model with its health and restarts.
        ready = await api.http.get("/ready")
        assert ready.status_code == 200
        models = ready.json()["checks"]["models"]
        [item] = models["items"]
        assert item["id"] == f"default/{name}/1.0.0" and item["state"] == "active"
        assert (item["healthy"], item["restarts"], models["ok"]) == (True, 1, True)

        # Now unhealthy for good: restarts do not help, so back to draft with the reason.
        (Path(p.settings.package_dir) / "default" / name / "1.0.0" / "unhealthy").touch()
        pid = status["runtime"]["pid"]
        await k.wait_state(api, name, "draft")
        model = (await api.http.get(f"/tenants/default/models/{name}/1.0.0")).json()
        assert "health not recovered after 2 attempts" in model["state_reason"]
        assert not pid_alive(pid)
        events = [
            e["event"]
            for e in (await api.http.get(f"/tenants/default/models/{name}/1.0.0/events")).json()
        ]
        assert events[-1] == "unhealthy"
        # A model that could not be brought back is told, and does not make the platform
        # unready (ingest still works).
        ready = await api.http.get("/ready")
        assert ready.status_code == 200
        [warning] = ready.json()["warnings"]
        assert name in warning and "could not be brought back" in warning
    finally:
        await api.close()
        await p.stop()


async def test_time_window_async_model_and_stale_requests(platform: Any, api: Api) -> None:
    await k.sensors(api, "s1")
    window = {
        "type": "TIME_WINDOW",
        "frequency": 60_000,
        "timeWindowSize": 60_000,
        "idleTimeout": 500,
    }
    text = k.manifest("window-mean", [{"dataColumnName": "mean"}], window, **{"async": True})
    name = await k.submit(api, text, {"model.py": k.WINDOW_MEAN})
    await k.map_type(api, name)
    assert (await api.http.post(f"/tenants/default/models/{name}/1.0.0/deploy")).status_code == 202
    await k.wait_state(api, name, "active")
    start = (int(time.time() * 1000) // 60_000 - 1) * 60_000  # a minute's window, past
    for i, value in enumerate([10.0, 20.0, 30.0]):
        await k.send(api, "s1", start + 3000 + i, value)
    points = await outputs_of(api, "s1", "mean")  # answered on the callback URL
    assert points[0][1] == pytest.approx(20.0)
    status = await k.deployment(api, name)
    assert status["companion"]["windows"] >= 1 and status["companion"]["stale"] == 0

    # A callback for a request nobody made is refused; a wrong token is unknown.
    token = "0" * 64
    r = await api.as_key(None).http.post(f"/model-callbacks/{token}/abc", json={"outputs": []})
    assert r.status_code == 404


async def test_an_async_model_that_answers_too_late_is_recorded_stale(
    platform: Any, api: Api
) -> None:
    await k.sensors(api, "s1")
    text = k.manifest(
        "slowpoke",
        [{"dataColumnName": "mean"}],
        None,
        **{
            "async": True,
            "timeoutMs": 300,
            "local": {"command": ["python", "model.py"], "env": {"SLOW_S": "1.5"}},
        },
    )
    name = await k.submit(api, text, {"model.py": k.WINDOW_MEAN})
    await k.map_type(api, name)
    await api.http.post(f"/tenants/default/models/{name}/1.0.0/deploy")
    await k.wait_state(api, name, "active")
    await k.send(api, "s1", int(time.time() * 1000), 5.0)

    async def stale() -> list[Any]:
        return list((await k.deployment(api, name))["stale_requests"])

    records = await async_wait_for(stale, 30, "a stale request")
    assert records[0]["readings"] == 1
    status = await k.deployment(api, name)
    assert status["companion"]["stale"] >= 1
    assert await k.history(api, "s1", "mean") == []  # the late answer was refused, not stored


AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


async def test_an_amqp_model_through_rabbitmq(platform_settings: Callable[..., Any]) -> None:
    from fogline.app.platform import Platform

    p = Platform(platform_settings(amqp_url=AMQP_URL, subject_root="amqptest"))
    await p.start()
    api = Api(p.http_url, p.bootstrap.admin_key)
    try:
        await k.sensors(api, "s1")
        name = await k.submit(api, k.manifest("amqp-doubler", type="amqp"), {"model.py": k.DOUBLER})
        await k.map_type(api, name)
        await api.http.post(f"/tenants/default/models/{name}/1.0.0/deploy")
        await k.wait_state(api, name, "active")
        status = await k.deployment(api, name)
        assert status["runtime"]["score_queue"].endswith(".score")
        now = int(time.time() * 1000)
        await k.send(api, "s1", now, 7.0)
        assert await outputs_of(api, "s1", "doubled") == [[now, 14.0]]
        assert "guest:guest" not in str(status)  # the broker's credentials never show
    finally:
        await api.close()
        await p.stop()


async def test_an_external_model_is_proxied(platform: Any, api: Api, tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.conftest import free_port

    port = free_port()
    (tmp_path / "model.py").write_text(k.DOUBLER)
    env = {**os.environ, "FOGLINE_MODEL_PORT": str(port), "FOGLINE_MODEL_STATE_DIR": str(tmp_path)}
    server = subprocess.Popen([sys.executable, "model.py"], cwd=tmp_path, env=env)
    try:
        await k.sensors(api, "s1")
        text = k.manifest("remote", hosted="external", url=f"http://127.0.0.1:{port}", local=None)
        name = await k.submit(api, text)
        await k.map_type(api, name)
        await api.http.post(f"/tenants/default/models/{name}/1.0.0/deploy")
        await k.wait_state(api, name, "active")
        assert (await k.deployment(api, name))["runtime"]["kind"] == "external"
        now = int(time.time() * 1000)
        await k.send(api, "s1", now, 3.0)
        assert await outputs_of(api, "s1", "doubled") == [[now, 6.0]]
    finally:
        server.terminate()
        server.wait(10)


TRIPLER = k.DOUBLER.replace('r.values["temperature"] * 2', 'r.values["temperature"] * 3')
REGISTRY = {
    "image": "registry.example/acme/doubler",
    "customRegistry": {"registry": "registry.example", "username": "acme", "password": "pw-9f3k"},
}


async def test_update_takes_over_and_a_failed_or_refused_one_keeps_the_old(
    platform: Any, api: Api, capfd: Any
) -> None:
    await k.sensors(api, "s1")
    name = await k.submit(api, k.manifest("scaler"), {"model.py": k.DOUBLER})
    await k.map_type(api, name)
    await api.http.post(f"/tenants/default/models/{name}/1.0.0/deploy")
    await k.wait_state(api, name, "active")
    old_pid = (await k.deployment(api, name))["runtime"]["pid"]

    # 2.0.0 has no mappings of its own: it takes 1.0.0's, starts beside it, and takes over.
    await k.submit(
        api, k.manifest(name, version="2.0.0", container=REGISTRY), {"model.py": TRIPLER}
    )
    r = await api.http.post(f"/tenants/default/models/{name}/update", json={"to_version": "2.0.0"})
    assert r.status_code == 202, r.text
    await k.wait_state(api, name, "active", version="2.0.0")
    await k.wait_state(api, name, "stopped", version="1.0.0")
    assert not pid_alive(old_pid)
    v2 = await k.deployment(api, name, "2.0.0")
    assert v2["saga"] == {**v2["saga"], "name": "update", "status": "done"}
    now = int(time.time() * 1000)
    await k.send(api, "s1", now, 5.0)
    assert (await outputs_of(api, "s1", "doubled"))[-1] == [now, 15.0]
    events = (await api.http.get(f"/tenants/default/models/{name}/1.0.0/events")).json()
    assert [e["event"] for e in events][-2:] == ["update", "updated"]

    # 3.0.0 cannot start: it is compensated back to draft and 2.0.0 never stopped scoring.
    crash = "import sys; sys.exit(3)"
    await k.submit(api, k.manifest(name, version="3.0.0"), {"model.py": crash})
    r = await api.http.post(f"/tenants/default/models/{name}/update", json={"to_version": "3.0.0"})
    assert r.status_code == 202, r.text
    await k.wait_state(api, name, "draft", version="3.0.0")
    assert await k.state_of(api, name, "2.0.0") == "active"
    events = (await api.http.get(f"/tenants/default/models/{name}/2.0.0/events")).json()
    assert [e["event"] for e in events][-2:] == ["update", "update-failed"]
    await k.send(api, "s1", now + 1, 6.0)
    assert (await outputs_of(api, "s1", "doubled", 2))[-1] == [now + 1, 18.0]

    # 4.0.0 only names a container (the local runtime cannot run it): refused at once, and the
    # mappings it would have taken over are not left behind.
    await k.submit(api, k.manifest(name, version="4.0.0", local=None, container=REGISTRY))
    r = await api.http.post(f"/tenants/default/models/{name}/update", json={"to_version": "4.0.0"})
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"
    assert "manifest.model.local" in r.text
    mappings = (await api.http.get(f"/tenants/default/models/{name}/4.0.0/mappings")).json()
    assert mappings["asset_types"] == {} and mappings["resolved"] == []
    assert await k.state_of(api, name, "2.0.0") == "active"
    assert await k.state_of(api, name, "4.0.0") == "draft"
    r = await api.http.post(f"/tenants/default/models/{name}/update", json={"to_version": "9.9.9"})
    assert r.status_code == 404

    # The registry password of 2.0.0 and 4.0.0 reaches none of what a user or a model sees.
    v2_pid = (await k.deployment(api, name, "2.0.0"))["runtime"]["pid"]
    seen = [Path(f"/proc/{v2_pid}/environ").read_bytes().decode(errors="replace")]
    seen.append(Path((await k.deployment(api, name, "2.0.0"))["runtime"]["log_file"]).read_text())
    for version in ("1.0.0", "2.0.0", "3.0.0", "4.0.0"):
        for path in ("", "/deployment", "/events", "/mappings"):
            r = await api.http.get(f"/tenants/default/models/{name}/{version}{path}")
            seen.append(r.text)
    seen.append((await api.http.get("/tenants/default/models")).text)
    captured = capfd.readouterr()
    seen += [captured.out, captured.err]
    secrets = ["pw-9f3k", platform.nats.platform_password, api.key]
    leaks = [(secret, text[:200]) for text in seen for secret in secrets if secret in text]
    assert leaks == []


async def test_broker_credentials_stay_out_of_errors_and_logs(
    platform_settings: Callable[..., Any], capfd: Any
) -> None:
    """A broker that cannot be reached: the model cannot deploy, and the reason, the events,
    the model's log and the platform's log say so without the broker's password."""
    from fogline.app.platform import Platform

    url = f"amqp://fogline:amqp-pw-77x@127.0.0.1:{free_port()}/"
    fast = {"model_start_timeout": 5.0}
    p = Platform(platform_settings(amqp_url=url, subject_root="amqpleak", **fast))
    await p.start()
    api = Api(p.http_url, p.bootstrap.admin_key)
    try:
        await k.sensors(api, "s1")
        name = await k.submit(api, k.manifest("amqp-lost", type="amqp"), {"model.py": k.DOUBLER})
        await k.map_type(api, name)
        await api.http.post(f"/tenants/default/models/{name}/1.0.0/deploy")
        await k.wait_state(api, name, "draft", timeout=120)
        model = (await api.http.get(f"/tenants/default/models/{name}/1.0.0")).json()
        assert "cannot reach the AMQP broker" in model["state_reason"]
        seen = [str(model)]
        for path in ("/deployment", "/events"):
            seen.append((await api.http.get(f"/tenants/default/models/{name}/1.0.0{path}")).text)
        seen.append((await api.http.get("/system")).text)
        seen += [f.read_text() for f in Path(p.settings.data_dir).rglob("model.log")]
        captured = capfd.readouterr()
        seen += [captured.out, captured.err]
        assert [text[:300] for text in seen if "amqp-pw-77x" in text] == []
    finally:
        await api.close()
        await p.stop()


def _sandboxed_child(pid: int, program: str) -> int | None:
    """The model's own process under bubblewrap (the runtime's pid): a descendant whose
    program name contains `program`."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    for child in map(int, children):
        cmdline = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")[0].decode()
        if program in cmdline.rsplit("/", 1)[-1]:
            return child
        found = _sandboxed_child(child, program)
        if found:
            return found
    return None


TOML_MODEL = """
import tomli_w
from fogline.sdk import serve

def score(readings):
    # tomli_w is in the model's own virtualenv only.
    return [{"level": tomli_w.dumps({"t": r.values["temperature"]}).strip()} for r in readings]

serve(score=score)
"""


async def test_a_model_with_requirements_gets_its_own_virtualenv(platform: Any, api: Api) -> None:
    import importlib.util

    assert importlib.util.find_spec("tomli_w") is None  # not the platform's
    await k.sensors(api, "s1")
    local = {"command": ["python", "model.py"], "requirements": "requirements.txt"}
    text = k.manifest("toml", [{"dataColumnName": "level", "readAsString": True}], local=local)
    files = {"model.py": TOML_MODEL, "requirements.txt": "tomli-w>=1,<2\n"}
    name = await k.submit(api, text, files)
    await k.map_type(api, name)
    await api.http.post(f"/tenants/default/models/{name}/1.0.0/deploy")
    await k.wait_state(api, name, "active", timeout=180)  # pip installs into the new venv
    pid = (await k.deployment(api, name))["runtime"]["pid"]
    model_pid = await async_wait_for(lambda: _sandboxed_child(pid, "python"), 10, "model process")
    program = Path(f"/proc/{model_pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    assert program == "/model/state/venv/bin/python"  # inside the sandbox: its disk image
    image = Path(platform.settings.runtime_dir) / "default" / name / "1.0.0" / "state.img"
    listing = subprocess.run(
        ["debugfs", "-R", "ls -p /venv/lib/python3.11/site-packages", str(image)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    installed = {line.split("/")[5].split("-")[0].lower() for line in listing.splitlines() if line}
    assert "tomli_w" in installed  # what the model added ...
    assert "uvicorn" not in installed  # ... and nothing the platform already has (the SDK's)
    now = int(time.time() * 1000)
    await k.send(api, "s1", now, 21.5)
    assert await outputs_of(api, "s1", "level") == [[now, "t = 21.5"]]


async def test_a_restart_goes_on_with_each_interrupted_saga(platform: Any, api: Api) -> None:
    """What a killed platform leaves half done (written here as it would have) goes on through
    the saga engine: a stop goes on from its step, the old version of an update whose new one
    had taken over is stopped, and the new version of an update cut short is undone."""
    from fogline.domain.lifecycle import ModelEvent as E
    from fogline.domain.sagas import SagaKey, SagaStatus, StepStatus

    db = platform.db
    versions = {}
    for name, events in {
        "halted": [E.DEPLOY, E.DEPLOYED, E.STOP],
        "replaced": [E.DEPLOY, E.DEPLOYED, E.UPDATE],
        "cut": [E.DEPLOY],
        "retiring": [E.DEPLOY, E.DEPLOYED, E.STOP, E.STOPPED],
        "retired": [E.DEPLOY, E.DEPLOYED, E.STOP, E.STOPPED, E.RETIRE],
    }.items():
        await k.submit(api, k.manifest(name), {"model.py": k.DOUBLER})
        for event in events:
            versions[name] = db.models.transition("default", name, "1.0.0", event)

    def interrupted(name: str, saga: str, steps: list[tuple[str, StepStatus]]) -> SagaKey:
        key = SagaKey("model", str(versions[name].id))
        run = db.sagas.begin(key, "default", saga)
        for step, status in steps:
            db.sagas.record(key, "default", run, saga, step, status, 1, None)
        return key

    started, done = StepStatus.STARTED, StepStatus.DONE
    halted = interrupted(
        "halted",
        "stop",
        [("stop-companion", started), ("stop-companion", done), ("stop-model", started)],
    )
    replaced = interrupted("replaced", "update", [("stop-companion", started)])
    cut = interrupted(
        "cut",
        "update",
        [
            ("provision", started),
            ("provision", done),
            ("start-model", started),
            ("start-model", done),
        ],
    )
    # A retire cut short before its move, and one cut short after it (its step is idempotent).
    retiring = interrupted("retiring", "retire", [("mark-draft", started)])
    retired = interrupted("retired", "retire", [("mark-draft", started)])
    await platform.deployments.recover()

    await k.wait_state(api, "retiring", "draft")
    for key in (retiring, retired):
        await async_wait_for(lambda key=key: db.sagas.get(key).status is SagaStatus.DONE, 10)
    assert (await k.state_of(api, "retired")) == "draft"

    await k.wait_state(api, "halted", "stopped")
    assert [(s.step, s.status, s.attempt) for s in db.sagas.steps(halted)][3:] == [
        ("resume", started, 1),  # kept beside the saga
        ("stop-model", StepStatus.FAILED, 1),  # the attempt the restart cut short
        ("stop-model", started, 2),
        ("stop-model", done, 2),
        ("mark-stopped", started, 1),
        ("mark-stopped", done, 1),
    ]
    model = (await api.http.get("/tenants/default/models/halted/1.0.0")).json()
    assert model["state_reason"] == "stop finished after a restart"

    await k.wait_state(api, "replaced", "stopped")
    events = (await api.http.get("/tenants/default/models/replaced/1.0.0/events")).json()
    assert events[-1]["event"] == "updated"

    await k.wait_state(api, "cut", "draft")
    steps = [(s.step, s.status) for s in db.sagas.steps(cut)]
    assert steps[-1] == ("start-model", StepStatus.COMPENSATED)
    record = db.sagas.get(cut)
    assert (record.status, record.detail) == (
        SagaStatus.FAILED,
        "interrupted by a restart during an update",
    )
    for key in (halted, replaced):
        assert db.sagas.get(key).status is SagaStatus.DONE
