"""The model sandbox, tried as a hostile tenant would: real model processes, deployed through
the API, that try to read the platform's secrets, plant code for a privileged process, signal
the platform and other tenants' models, reach the platform's services, fork, fill the disk and
raise their own limits. Each refers to the review finding (S-number) it closes."""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import tests.model_kit as k
from tests.conftest import Api, async_wait_for, pid_alive

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="the sandbox needs a platform run as root"
)

# Runs inside the sandbox; its health answer is the report of everything it tried.
PROBE = r"""
import errno, json, os, resource, signal, socket
from fogline.sdk import serve

TARGETS = json.loads(os.environ["PROBE_TARGETS"])

def attempt(action):
    try:
        action()
        return "allowed"
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))

def read(path):
    with open(path, "rb") as f:
        f.read(1)

def write(path):
    with open(path, "w") as f:
        f.write("import os\nopen(os.environ.get('PLANTED_MARKER', '/x'), 'w').write('ran')\n")

def connect(port):
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        pass

def report():
    planted = {}
    for where in (".", os.environ["HOME"], "/tmp"):
        planted[where] = attempt(lambda: write(os.path.join(where, "json.py")))
    return {
        "status": "ok",
        "uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(),
        "reads": {p: attempt(lambda p=p: read(p)) for p in TARGETS["read"]},
        "exists": {p: os.path.exists(p) for p in TARGETS["read"]},
        "signals": {str(pid): attempt(lambda pid=pid: os.kill(pid, signal.SIGTERM))
                    for pid in TARGETS["pids"]},
        "environ": {str(pid): attempt(lambda pid=pid: read(f"/proc/{pid}/environ"))
                    for pid in TARGETS["pids"]},
        "connects": {str(port): attempt(lambda port=port: connect(port))
                     for port in TARGETS["ports"]},
        "planted": planted,
        "socket_dir": attempt(lambda: os.symlink("/etc/passwd", "/run/fogline/link")),
        "socket_swap": attempt(lambda: os.unlink("/run/fogline/model.sock")),
        "processes": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
        "limits": {"memory": resource.getrlimit(resource.RLIMIT_AS)[0],
                   "files": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
                   "processes": resource.getrlimit(resource.RLIMIT_NPROC)[0],
                   "cpus": len(os.sched_getaffinity(0))},
        "env": sorted(os.environ),
    }

serve(score=lambda readings: [{} for _ in readings], health=report)
"""


def _targets(p: Any, extra_pids: list[int] | None = None, **more: Any) -> str:
    data_dir = Path(p.settings.data_dir)
    return json.dumps(
        {
            "read": [
                str(data_dir),
                str(data_dir / "secret.key"),
                str(data_dir / "client.json"),
                str(data_dir / "fogline.db"),
                str(data_dir / "packages"),
                "/etc/shadow",
                "/etc/machine-id",
                str(Path.home() / ".fogline"),
                *more.get("read", []),
            ],
            "pids": [os.getpid(), *(extra_pids or [])],
            "ports": [p.settings.http_port, p.settings.nats_port, p.settings.mqtt_port, 5432, 4222],
        }
    )


async def _deploy(api: Api, tenant: str, manifest: str, files: dict[str, str]) -> dict[str, Any]:
    base = f"/tenants/{tenant}/models"
    r = await api.http.post(base, content=manifest, headers={"Content-Type": "application/yaml"})
    assert r.status_code == 201, r.text
    name, version = r.json()["name"], r.json()["version"]
    r = await api.http.put(
        f"{base}/{name}/{version}/package",
        content=k.package(files),
        headers={"Content-Type": "application/gzip"},
    )
    assert r.status_code == 200, r.text
    r = await api.http.put(f"{base}/{name}/{version}/mappings", json={"asset_types": ["sensor"]})
    assert r.status_code == 200, r.text
    assert (await api.http.post(f"{base}/{name}/{version}/deploy")).status_code == 202

    async def settled() -> dict[str, Any] | None:
        model = (await api.http.get(f"{base}/{name}/{version}")).json()
        return model if model["state"] in ("active", "draft") else None

    model = await async_wait_for(settled, 60, f"{name} deployed")
    assert model["state"] == "active", model["state_reason"]
    return dict((await api.http.get(f"{base}/{name}/{version}/deployment")).json())


async def _health(status: dict[str, Any]) -> dict[str, Any]:
    from fogline.models.transport import HttpModelClient

    client = HttpModelClient(status["runtime"]["endpoint"], "/score", "/health")
    try:
        async with client.session.get(client.health_url) as answer:
            return dict(await answer.json())
    finally:
        await client.close()


async def _tenant_with_sensors(api: Api, tenant: str) -> None:
    r = await api.http.post("/tenants", json={"id": tenant, "name": tenant})
    assert r.status_code == 201, r.text
    r = await api.http.put(f"/tenants/{tenant}/asset-types/sensor", json=k.SENSOR_TYPE)
    assert r.status_code in (200, 201), r.text
    r = await api.http.post(f"/tenants/{tenant}/assets", json={"id": "s1", "asset_type": "sensor"})
    assert r.status_code == 201, r.text


def _probe_manifest(name: str, targets: str, **limits: Any) -> str:
    local = {
        "command": ["python", "model.py"],
        "env": {"PROBE_TARGETS": targets},
        "limits": {"memoryMb": 512, "openFiles": 128, "processes": 32, "cpus": 1, **limits},
    }
    return k.manifest(name, [{"dataColumnName": "level", "readAsString": True}], local=local)


async def test_a_model_sees_and_reaches_nothing_of_the_platform_or_other_tenants(
    platform: Any, api: Api
) -> None:
    """S3, S4, S5: own uid per model, no view of the data dir, keys, database or password
    hashes; no signal to the platform or another tenant's model; no network but its own."""
    await _tenant_with_sensors(api, "acme")
    await _tenant_with_sensors(api, "beta")
    probe = {"model.py": PROBE}
    first = await _deploy(api, "acme", _probe_manifest("probe", _targets(platform)), probe)
    acme_pid = first["runtime"]["pid"]
    acme_package = Path(platform.settings.package_dir) / "acme" / "probe" / "1.0.0"
    targets = _targets(platform, [acme_pid], read=[str(acme_package / "model.py")])
    second = await _deploy(api, "beta", _probe_manifest("probe", targets), probe)

    acme, beta = await _health(first), await _health(second)
    assert acme["uid"] != beta["uid"]
    for report in (acme, beta):
        assert report["uid"] >= 1000 and report["uid"] == report["gid"], report
        assert report["groups"] in ([], [report["gid"]])
        assert set(report["reads"].values()) == {"ENOENT"}, report["reads"]  # not even there
        assert not any(report["exists"].values())
        assert set(report["signals"].values()) == {"ESRCH"}, report["signals"]
        assert set(report["environ"].values()) == {"ENOENT"}
        assert set(report["connects"].values()) == {"ECONNREFUSED"}, report["connects"]
        assert report["planted"]["."] == "EROFS"  # its package is read-only
        # The socket it is called on, and its directory, are the platform's.
        assert (report["socket_dir"], report["socket_swap"]) == ("EACCES", "EACCES")
        assert len(report["processes"]) <= 3  # the sandbox's init, the model, nothing else
        assert report["limits"] == {
            "memory": 512 * 1024**2,
            "files": 128,
            "processes": 32,
            "cpus": 1,
        }
        assert not [n for n in report["env"] if n.startswith(("LD_", "PYTHONPATH"))]
    assert pid_alive(acme_pid) and pid_alive(second["runtime"]["pid"])
    # The platform's own files stayed the platform user's only.
    secret = Path(platform.settings.data_dir) / "secret.key"
    assert secret.stat().st_mode & 0o077 == 0


PLANTER = r"""
import os, pathlib, sys
from fogline.sdk import serve

# Plant modules wherever this model can write, then die during start-up, so the platform
# starts it again: a privileged launcher that imported any of them would write the marker.
planted = "import os\nopen(os.environ.get('MARKER', '/nowhere'), 'w').write(str(os.getuid()))\n"
first = pathlib.Path(os.environ["HOME"]) / "started-once"
for where in (os.getcwd(), os.environ["HOME"], "/tmp", "/run/fogline"):
    for module in ("json.py", "fogline.py", "sitecustomize.py", "encodings.py"):
        try:
            pathlib.Path(where, module).write_text(planted)
        except OSError:
            pass
if not first.exists():
    first.write_text("yes")
    sys.exit(1)
serve(score=lambda readings: [{} for _ in readings])
"""


async def test_planted_code_and_manifest_env_never_run_privileged(
    platform: Any, api: Api, tmp_path: Path
) -> None:
    """S1, S2: a model that plants modules and crashes is restarted by an isolated launcher
    that imports none of them; a manifest cannot set PYTHONPATH, LD_PRELOAD or the platform's
    own variables."""
    await k.sensors(api, "s1")
    for name in ("PYTHONPATH", "LD_PRELOAD", "FOGLINE_MODEL_SOCKET", "PATH", "pythonstartup"):
        local = {"command": ["python", "model.py"], "env": {name: str(tmp_path)}}
        r = await api.http.post(
            "/tenants/default/models",
            content=k.manifest("env-trick", local=local),
            headers={"Content-Type": "application/yaml"},
        )
        assert r.status_code == 422, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert f"manifest.model.local.env.{name}" in r.text

    marker = tmp_path / "marker"
    local = {"command": ["python", "model.py"], "env": {"MARKER": str(marker)}}
    status = await _deploy(
        api, "default", k.manifest("planter", local=local), {"model.py": PLANTER}
    )
    steps = [(s["step"], s["status"]) for s in status["steps"]]
    assert (
        ("wait-healthy", "failed") in steps
        or status["health"]["restarts"] >= 1
        or (("start-model", "started") in steps)
    )
    assert not marker.exists()


FORKER = r"""
import os, time
from fogline.sdk import serve

def fork_bomb():
    made = 0
    for _ in range(200):
        try:
            if os.fork() == 0:
                time.sleep(30)
                os._exit(0)
            made += 1
        except OSError:
            break
    return made

def fill_disk():
    written, errors = 0, set()
    for i in range(4):
        try:
            with open(os.path.join(os.environ["HOME"], f"fill{i}"), "wb") as f:
                for _ in range(192):
                    f.write(b"\0" * 1024 * 1024)
                    written += 1024 * 1024
        except OSError as exc:
            errors.add(exc.strerror)
    try:
        with open("/tmp/more", "wb") as f:
            f.write(b"\0" * 64 * 1024 * 1024)
            written += 64 * 1024 * 1024
    except OSError as exc:
        errors.add(exc.strerror)
    return written, sorted(errors)

FORKS = fork_bomb()
WRITTEN, ERRORS = fill_disk()
serve(score=lambda readings: [{} for _ in readings],
      health=lambda: {"status": "ok", "forks": FORKS, "written": WRITTEN, "errors": ERRORS})
"""


async def test_limits_are_capped_by_the_operator_and_hold(
    platform_settings: Callable[..., Any],
) -> None:
    """S10: a manifest cannot raise its limits past the operator's caps; processes and disk
    (the package and its state together) are capped for the whole model."""
    from fogline.app.platform import Platform

    p = Platform(platform_settings(model_max_memory_mb=1024, model_max_processes=64))
    await p.start()
    api = Api(p.http_url, p.bootstrap.admin_key)
    try:
        await k.sensors(api, "s1")
        huge = {"memoryMb": 100_000_000, "cpus": 4096, "processes": 100_000, "diskMb": 10**6}
        local = {"command": ["python", "model.py"], "limits": huge}
        r = await api.http.post(
            "/tenants/default/models",
            content=k.manifest("greedy", local=local),
            headers={"Content-Type": "application/yaml"},
        )
        assert r.status_code == 422, r.text
        fields = {problem["field"] for problem in r.json()["errors"]}
        assert {f"manifest.model.local.limits.{n}" for n in huge} <= fields, fields

        limits = {"processes": 16, "diskMb": 64, "memoryMb": 512}
        local = {"command": ["python", "model.py"], "limits": limits}
        status = await _deploy(
            api, "default", k.manifest("forker", local=local), {"model.py": FORKER}
        )
        report = await _health(status)
        assert report["forks"] < 16  # the model's own processes count against its 16
        assert report["written"] <= 64 * 1024 * 1024
        assert "No space left on device" in report["errors"]
    finally:
        await api.close()
        await p.stop()


def _bomb(size: int, files: int = 1) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as tar:
        for i in range(files):
            info = tarfile.TarInfo(f"f{i}")
            info.size = size
            tar.addfile(info, _Zeros(size))
    return buffer.getvalue()


class _Zeros(io.RawIOBase):
    def __init__(self, size: int) -> None:
        self.left = size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        self.left -= n
        return b"\0" * n


async def test_packages_are_bounded_unpacked_and_go_with_their_model(
    platform_settings: Callable[..., Any],
) -> None:
    """S9: a small archive that unpacks past the limit (size or file count) is refused before
    it reaches the disk; a removed model's package and working directory are deleted."""
    from fogline.app.platform import Platform

    p = Platform(platform_settings(package_max_expanded_bytes=32 * 1024**2, package_max_files=500))
    await p.start()
    api = Api(p.http_url, p.bootstrap.admin_key)
    try:
        await k.sensors(api, "s1")
        r = await api.http.post(
            "/tenants/default/models",
            content=k.manifest("bomb"),
            headers={"Content-Type": "application/yaml"},
        )
        assert r.status_code == 201
        packages = Path(p.settings.package_dir)
        for archive, why in (
            (_bomb(256 * 1024**2), "unpacks to more than"),
            (_bomb(0, files=2000), "more than 500 files"),
        ):
            assert len(archive) < 2 * 1024**2  # small on the wire
            r = await api.http.put(
                "/tenants/default/models/bomb/1.0.0/package",
                content=archive,
                headers={"Content-Type": "application/gzip"},
            )
            assert r.status_code == 422, r.text
            assert why in r.text
            assert not list((packages / "default" / "bomb").iterdir())  # nothing left

        status = await _deploy(api, "default", k.manifest("doomed"), {"model.py": k.DOUBLER})
        work = Path(p.settings.runtime_dir) / "default" / "doomed" / "1.0.0"
        assert (work / "state.img").is_file() and (packages / "default" / "doomed").is_dir()
        for action in ("stop", "retire"):
            r = await api.http.post(f"/tenants/default/models/doomed/1.0.0/{action}")
            assert r.status_code in (200, 202), r.text
            await k.wait_state(api, "doomed", "stopped" if action == "stop" else "draft")
        assert not pid_alive(status["runtime"]["pid"])
        r = await api.http.delete("/tenants/default/models/doomed/1.0.0")
        assert r.status_code == 200, r.text
        assert not work.exists()
        assert not (packages / "default" / "doomed" / "1.0.0").exists()
    finally:
        await api.close()
        await p.stop()


async def test_no_sandbox_no_start_unless_the_operator_says_so(
    platform_settings: Callable[..., Any],
) -> None:
    """Fails closed: without bubblewrap a model does not start, with the reason; the operator's
    `model_sandbox: off` runs it unsandboxed, and says so."""
    from fogline.app.platform import Platform

    p = Platform(platform_settings(model_sandbox_bwrap="/nonexistent/bwrap"))
    await p.start()
    key = p.bootstrap.admin_key
    api = Api(p.http_url, key)
    try:
        await k.sensors(api, "s1")
        name = await k.submit(api, k.manifest("closed"), {"model.py": k.DOUBLER})
        await k.map_type(api, name)
        await api.http.post(f"/tenants/default/models/{name}/1.0.0/deploy")
        await k.wait_state(api, name, "draft")
        model = (await api.http.get(f"/tenants/default/models/{name}/1.0.0")).json()
        assert "bubblewrap" in model["state_reason"] and "not installed" in model["state_reason"]
    finally:
        await api.close()
        await p.stop()

    p = Platform(platform_settings(data_dir=p.settings.data_dir, model_sandbox="off"))
    await p.start()
    api = Api(p.http_url, key)
    try:
        await api.http.post(f"/tenants/default/models/{name}/1.0.0/deploy")
        await k.wait_state(api, name, "active")
        runtime = (await k.deployment(api, name))["runtime"]
        assert "unsandboxed" in runtime["note"] and runtime["endpoint"].startswith("http://")
    finally:
        await api.close()
        await p.stop()


def test_the_data_dir_is_the_platform_users_only(tmp_path: Path) -> None:
    """S4: 0700 directories, 0600 files, narrowed at start when found wider."""
    from fogline.app.platform import ensure_data_dir

    data = tmp_path / "data"
    (data / "packages").mkdir(parents=True, mode=0o755)
    (data / "fogline.db").write_text("x")
    (data / "fogline.db").chmod(0o644)
    data.chmod(0o755)
    old = os.umask(0o022)
    try:
        ensure_data_dir(data)
    finally:
        os.umask(old)
    for path in [data, *data.rglob("*")]:
        assert path.stat().st_mode & 0o077 == 0, path


async def test_a_model_cannot_stop_the_platform(platform: Any, api: Api) -> None:
    """S3: the platform's pid does not exist inside a sandbox; SIGTERM to it goes nowhere."""
    killer = r"""
import os, signal
from fogline.sdk import serve
result = {}
for pid in (int(os.environ["PLATFORM_PID"]),):
    try:
        os.kill(pid, signal.SIGTERM)
        result[pid] = "sent"
    except OSError as exc:
        result[pid] = exc.strerror
serve(score=lambda r: [{} for _ in r], health=lambda: {"status": "ok", "kills": result})
"""
    await k.sensors(api, "s1")
    local = {"command": ["python", "model.py"], "env": {"PLATFORM_PID": str(os.getpid())}}
    status = await _deploy(api, "default", k.manifest("killer", local=local), {"model.py": killer})
    report = await _health(status)
    assert report["kills"][str(os.getpid())] == "No such process"
    assert (await api.http.get("/tenants/default/models")).status_code == 200  # still here
