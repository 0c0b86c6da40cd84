"""The local runtime: a model runs as a child process of the platform, under limits, as an
unprivileged user when the platform runs as root, in its own virtualenv when it declares its
own requirements. The saga's health monitor restarts it when it crashes."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from fogline.domain.errors import InvalidInput, Problem, Unavailable
from fogline.models.manifest import LocalProcess
from fogline.models.runtimes.base import ModelSpec, RuntimeHandle

log = logging.getLogger(__name__)

PYTHON_NAMES = {"python", "python3"}
_SITE_DIRS = "import json, site; print(json.dumps(site.getsitepackages()))"
_PURELIB = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
VENV_TIMEOUT_S = 900


@dataclass(frozen=True)
class LocalRuntimeSettings:
    root: Path  # per-model working directories live under it
    model_user: str | None  # who models run as; None: the platform's own user
    amqp_url: str | None = None
    python: str = sys.executable


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def process_start_ticks(pid: int) -> int | None:
    """When a process started (clock ticks since boot): a pid plus this names one process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _can_reach(path: Path, uid: int, gid: int, need: int) -> bool:
    """Whether uid/gid can traverse to `path` and use it with `need` (an R/W/X OK mask)."""

    def allowed(st: os.stat_result, mask: int) -> bool:
        if st.st_uid == uid:
            bits = (st.st_mode >> 6) & 7
        elif st.st_gid == gid:
            bits = (st.st_mode >> 3) & 7
        else:
            bits = st.st_mode & 7
        return bits & mask == mask

    path = path.resolve()
    for parent in reversed(path.parents):
        if not allowed(parent.stat(), os.X_OK):
            return False
    return allowed(path.stat(), need)


@dataclass(frozen=True)
class _LaunchPlan:
    command: list[str]
    env: dict[str, str]
    launch_spec: dict[str, object]
    workdir: Path
    log_file: Path
    endpoint: str | None
    run_as: str
    note: str | None


class LocalRuntime:
    kind = "local"

    def __init__(self, settings: LocalRuntimeSettings) -> None:
        self.settings = settings
        self._processes: dict[int, asyncio.subprocess.Process] = {}
        self._cpu_offset = 0

    def workdir(self, spec: ModelSpec) -> Path:
        return self.settings.root / spec.tenant / spec.name / spec.version

    def _local(self, spec: ModelSpec) -> LocalProcess:
        local = spec.manifest.model.local
        if local is None:
            raise InvalidInput.of(
                [
                    Problem(
                        "manifest.model.local",
                        "the local runtime needs a start command; this model has only a "
                        "container, which the Kubernetes runtime (not yet available) pulls",
                    )
                ],
                "deployment",
            )
        return local

    async def provision(self, spec: ModelSpec) -> None:
        local = self._local(spec)
        work = self.workdir(spec)
        await asyncio.to_thread(work.mkdir, parents=True, exist_ok=True)
        if local.requirements:
            await self._ensure_venv(spec, local.requirements)

    async def _ensure_venv(self, spec: ModelSpec, requirements: str) -> None:
        if spec.package_dir is None:
            raise InvalidInput.of(
                [Problem("manifest.model.local.requirements", "needs an uploaded package")],
                "deployment",
            )
        file = (spec.package_dir / requirements).resolve()
        if not file.is_relative_to(spec.package_dir.resolve()) or not file.is_file():
            raise InvalidInput.of(
                [
                    Problem(
                        "manifest.model.local.requirements", f"{requirements} is not in the package"
                    )
                ],
                "deployment",
            )
        venv = self.workdir(spec) / "venv"
        digest = hashlib.sha256(file.read_bytes()).hexdigest()
        marker = venv / ".fogline-requirements"
        if marker.is_file() and marker.read_text() == digest:
            return
        await asyncio.to_thread(self._build_venv, venv, file)
        marker.write_text(digest)

    def _build_venv(self, venv: Path, requirements: Path) -> None:
        """A venv that sees the platform's packages (the SDK above all) behind its own: pip
        installs only what the model adds or pins differently, and what it installs wins.
        (`--system-site-packages` would not do: when the platform itself runs in a venv, that
        option reaches the base interpreter's packages, not the platform's.)"""
        self._run([self.settings.python, "-m", "venv", str(venv)])
        python = str(venv / "bin" / "python")
        platform_sites = json.loads(self._run([self.settings.python, "-c", _SITE_DIRS]))
        own_site = Path(self._run([python, "-c", _PURELIB]).strip())
        lines = [f"import site; site.addsitedir({d!r})" for d in platform_sites]
        (own_site / "_fogline_platform.pth").write_text("\n".join(lines) + "\n")
        self._run([python, "-m", "pip", "install", "--quiet", "-r", str(requirements)])

    @staticmethod
    def _run(command: list[str]) -> str:
        done = subprocess.run(command, capture_output=True, text=True, timeout=VENV_TIMEOUT_S)
        if done.returncode != 0:
            raise Unavailable(
                f"preparing the model's virtualenv failed: {done.stderr.strip()[-500:]}"
            )
        return done.stdout

    def _interpreter(self, spec: ModelSpec) -> str:
        venv_python = self.workdir(spec) / "venv" / "bin" / "python"
        return str(venv_python) if venv_python.exists() else self.settings.python

    def _identity(self, paths: list[Path]) -> tuple[int | None, int | None, str, str | None]:
        """Who the model runs as. As root, the configured unprivileged user, when it can reach
        the interpreter and the model's files; otherwise root, with the reason recorded."""
        me = pwd.getpwuid(os.geteuid()).pw_name
        user = self.settings.model_user
        if os.geteuid() != 0 or not user or user == me:
            return None, None, me, None
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            return None, None, me, f"model user {user!r} does not exist; running as {me}"
        for path in paths:
            need = os.X_OK if path.is_file() and os.access(path, os.X_OK) else os.R_OK
            if path.is_dir():
                need = os.R_OK | os.X_OK
            if not _can_reach(path, entry.pw_uid, entry.pw_gid, need):
                return (
                    None,
                    None,
                    me,
                    f"user {user!r} cannot reach {path}; running as {me} (install Python and "
                    "Fogline where that user can read them, or set FOGLINE_MODEL_USER)",
                )
        return entry.pw_uid, entry.pw_gid, user, None

    async def start(self, spec: ModelSpec) -> RuntimeHandle:
        self._cpu_offset += 1
        plan = await asyncio.to_thread(self._plan, spec, self._cpu_offset)
        if plan.note:
            log.warning(
                "model.privileges", extra={"fields": {"model": spec.key, "note": plan.note}}
            )
        with plan.log_file.open("ab") as out:
            process = await asyncio.create_subprocess_exec(
                self.settings.python,
                "-m",
                "fogline.models.runtimes.launch",
                json.dumps(plan.launch_spec),
                "--",
                *plan.command,
                cwd=str(plan.workdir),
                env=plan.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,  # a terminal's Ctrl-C is the platform's to handle
            )
        self._processes[process.pid] = process
        log.info(
            "model.process_started",
            extra={"fields": {"model": spec.key, "pid": process.pid, "run_as": plan.run_as}},
        )
        return RuntimeHandle(
            "local",
            endpoint=plan.endpoint,
            score_queue=plan.env.get("FOGLINE_SCORE_QUEUE"),
            health_queue=plan.env.get("FOGLINE_HEALTH_QUEUE"),
            pid=process.pid,
            started_at_ticks=process_start_ticks(process.pid),
            run_as=plan.run_as,
            note=plan.note,
            log_file=str(plan.log_file),
        )

    def _plan(self, spec: ModelSpec, cpu_offset: int) -> _LaunchPlan:
        """Everything about starting a model that touches the file system."""
        local = self._local(spec)
        model = spec.manifest.model
        work = self.workdir(spec)
        work.mkdir(parents=True, exist_ok=True)
        cwd = spec.package_dir or work
        command = list(local.command)
        if command[0] in PYTHON_NAMES:
            command[0] = self._interpreter(spec)
        executable = shutil.which(command[0], path=os.environ.get("PATH")) or command[0]
        uid, gid, run_as, note = self._identity([Path(os.path.realpath(executable)), cwd])
        log_file = work / "model.log"
        log_file.touch()
        if uid is not None:
            for path in (work, log_file):
                os.chown(path, uid, gid if gid is not None else -1)
            os.chmod(work, stat.S_IRWXU)
        env = self._environment(spec, work)
        endpoint = None
        if model.type == "http":
            port = free_port()
            env.update(FOGLINE_MODEL_PORT=str(port), PORT=str(port))
            endpoint = f"http://127.0.0.1:{port}"
        limits = local.limits
        launch_spec: dict[str, object] = {
            "memory_bytes": limits.memory_mb * 1024 * 1024,
            "open_files": limits.open_files,
            "file_size_bytes": limits.file_size_mb * 1024 * 1024,
            "cpus": limits.cpus,
            "cpu_offset": cpu_offset,
            "nice": 5,
            "uid": uid,
            "gid": gid,
            "parent_pid": os.getpid(),
            "cwd": str(cwd),
        }
        return _LaunchPlan(command, env, launch_spec, work, log_file, endpoint, run_as, note)

    def _environment(self, spec: ModelSpec, work: Path) -> dict[str, str]:
        model = spec.manifest.model
        local = model.local
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "HOME": str(work),
            "PYTHONUNBUFFERED": "1",
            # Many models on few cores: one thread each, not one per core each.
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "FOGLINE_MODEL_NAME": spec.name,
            "FOGLINE_MODEL_VERSION": spec.version,
            "FOGLINE_MODEL_STATE_DIR": str(work),
            "FOGLINE_MODEL_PROTOCOL": model.type,
            "FOGLINE_SCORE_ENDPOINT": model.score_endpoint,
            "FOGLINE_HEALTH_ENDPOINT": model.health_check_endpoint,
        }
        own_venv = work / "venv"
        if own_venv.is_dir():
            env["VIRTUAL_ENV"] = str(own_venv)
        elif "VIRTUAL_ENV" in os.environ:
            env["VIRTUAL_ENV"] = os.environ["VIRTUAL_ENV"]
        if model.type == "amqp":
            if not self.settings.amqp_url:
                raise Unavailable(
                    "this model speaks AMQP but the platform has no broker: set FOGLINE_AMQP_URL"
                )
            env.update(
                FOGLINE_AMQP_URL=self.settings.amqp_url,
                FOGLINE_SCORE_QUEUE=f"{spec.queue_prefix}.score",
                FOGLINE_HEALTH_QUEUE=f"{spec.queue_prefix}.health",
            )
        if local is not None:
            env.update(local.env)
        return env

    def alive(self, handle: RuntimeHandle) -> bool:
        if handle.pid is None:
            return False
        process = self._processes.get(handle.pid)
        if process is not None:
            return process.returncode is None
        return process_start_ticks(handle.pid) == handle.started_at_ticks

    async def stop(self, handle: RuntimeHandle, grace_s: float = 5.0) -> None:
        pid = handle.pid
        if pid is None:
            return
        process = self._processes.pop(pid, None)
        ours = process is not None or (
            handle.started_at_ticks is not None
            and process_start_ticks(pid) == handle.started_at_ticks
        )
        if not ours:
            return  # gone already (or the pid now belongs to someone else)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            if process is not None:
                if process.returncode is not None:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(process.wait(), 0.1)
            elif process_start_ticks(pid) != handle.started_at_ticks:
                break
            else:
                await asyncio.sleep(0.05)
        else:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        if process is not None and process.returncode is None:
            await process.wait()

    async def deprovision(self, spec: ModelSpec) -> None:
        # The working directory holds the model's state and log; it is kept for inspection
        # and for a later deployment of the same version.
        return None

    def log_tail(self, handle: RuntimeHandle, lines: int = 20) -> str:
        if not handle.log_file:
            return ""
        try:
            with open(handle.log_file, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 8192))
                text = f.read().decode("utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])
