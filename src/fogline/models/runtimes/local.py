"""The local runtime: each model runs as a child process of the platform, in its sandbox
(runtimes/sandbox.py: its own uid, its own file system view and namespaces, no network but
what its manifest needs), under limits the operator caps, in its own virtualenv when it
declares requirements. The saga's health monitor restarts it when it crashes.

With `model_sandbox: off` (the operator's explicit choice) a model runs unsandboxed as the
platform's own user, limits only; otherwise a model that cannot be sandboxed does not start."""

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
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import SplitResult, urlsplit, urlunsplit

from packaging.requirements import InvalidRequirement, Requirement

from fogline.domain.errors import InvalidInput, Problem, Unavailable
from fogline.models.manifest import Limits, LocalProcess, env_problems
from fogline.models.runtimes import sandbox
from fogline.models.runtimes.base import ModelSpec, RuntimeHandle
from fogline.models.runtimes.egress import Egress, EgressRelays
from fogline.models.runtimes.sandbox import SandboxSettings, SandboxView
from fogline.retry import wait_until

log = logging.getLogger(__name__)

PYTHON_NAMES = {"python", "python3"}
_SITE_DIRS = "import json, site; print(json.dumps(site.getsitepackages()))"
_PURELIB = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
VENV_TIMEOUT_S = 900
LOG_MAX_BYTES = 4 * 1024 * 1024  # then model.log moves to model.log.1: at most twice this
IMAGE_NAME = "state.img"


@dataclass(frozen=True)
class LocalRuntimeSettings:
    root: Path  # per-model working directories live under it
    sandbox: SandboxSettings = field(default_factory=SandboxSettings)
    amqp_url: str | None = None
    callback_base: Callable[[], str | None] = lambda: None  # where asynchronous models answer
    python: str = sys.executable
    log_max_bytes: int = LOG_MAX_BYTES


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


def tree_bytes(path: Path) -> int:
    total = 0
    for entry in path.rglob("*"):
        with contextlib.suppress(OSError):
            st = entry.lstat()
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
    return total


@dataclass(frozen=True)
class _LaunchPlan:
    launch_spec: dict[str, object]
    env: dict[str, str]
    endpoint: str | None
    egress: list[Egress]
    run_dir: Path | None
    uid: int | None
    run_as: str
    note: str | None
    listener: socket.socket | None = None  # the model's HTTP socket, bound by the platform


class LocalRuntime:
    kind = "local"

    def __init__(self, settings: LocalRuntimeSettings) -> None:
        self.settings = settings
        self._processes: dict[int, asyncio.subprocess.Process] = {}
        self._relays: dict[int, EgressRelays] = {}
        self._logs: dict[int, asyncio.Task[None]] = {}
        self._cpu_offset = 0
        self._links: Path | None = None

    @property
    def sandboxed(self) -> bool:
        return self.settings.sandbox.mode != "off"

    def workdir(self, spec: ModelSpec) -> Path:
        return self.settings.root / spec.tenant / spec.name / spec.version

    def log_file(self, tenant: str, name: str, version: str) -> Path:
        """Where a model's stdout and stderr go (kept after it stops, until it is removed)."""
        return self.settings.root / tenant / name / version / "model.log"

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
        problems = self.settings.sandbox.caps.problems(local.limits) + env_problems(local.env)
        if problems:
            raise InvalidInput.of(problems, "deployment")
        return local

    def _check_sandbox(self) -> str:
        if not self.sandboxed:
            return ""
        sandbox.check_can_isolate(self.settings.sandbox.mode)
        return sandbox.find_bwrap(self.settings.sandbox.bwrap)

    async def provision(self, spec: ModelSpec) -> None:
        local = self._local(spec)
        await asyncio.to_thread(self._check_sandbox)
        work = self.workdir(spec)
        await asyncio.to_thread(_private_dir, work)
        if self.sandboxed:
            await asyncio.to_thread(self._ensure_image, spec, local)
            if spec.package_dir is not None:
                uid = self.settings.sandbox.uid_of(spec.model_id)
                await asyncio.to_thread(sandbox.give_to, spec.package_dir, uid)
        if local.requirements:
            await self._ensure_venv(spec, local.requirements)

    # -- the disk image ------------------------------------------------------------------

    def _ensure_image(self, spec: ModelSpec, local: LocalProcess) -> None:
        """The model's writable disk: an ext4 image whose size is its disk limit less its
        package, owned inside by the model's uid. Made once per model version."""
        image = self.workdir(spec) / IMAGE_NAME
        if image.is_file():
            return
        package = tree_bytes(spec.package_dir) if spec.package_dir else 0
        size = local.limits.disk_mb * 1024 * 1024 - package
        if size < sandbox.MIN_IMAGE_BYTES:
            raise InvalidInput.of(
                [
                    Problem(
                        "manifest.model.local.limits.diskMb",
                        f"the package alone uses {package / 1024**2:.1f} MB of the model's "
                        f"{local.limits.disk_mb} MB; at least 8 MB must be left for its state",
                    )
                ],
                "deployment",
            )
        uid = self.settings.sandbox.uid_of(spec.model_id)
        partial = image.with_suffix(".partial")
        with open(partial, "wb") as f:
            f.truncate(size)
        done = subprocess.run(
            [
                "mkfs.ext4",
                "-q",
                "-F",
                "-m",
                "0",
                "-O",
                "^has_journal",
                "-E",
                f"root_owner={uid}:{uid}",
                str(partial),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            partial.unlink(missing_ok=True)
            raise sandbox.SandboxUnavailable(
                f"cannot make the model's disk image (mkfs.ext4): {done.stderr.strip()[-300:]}"
            )
        partial.chmod(0o600)
        partial.rename(image)

    # -- the model's own virtualenv ------------------------------------------------------

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
        wanted = checked_requirements(file.read_text(errors="replace"), requirements)
        digest = hashlib.sha256("\n".join(wanted).encode()).hexdigest()
        marker = self.workdir(spec) / "venv.sha256"
        if marker.is_file() and marker.read_text() == digest:
            return
        if self.sandboxed:
            await asyncio.to_thread(self._build_venv_sandboxed, spec, wanted)
        else:
            await asyncio.to_thread(self._build_venv, self.workdir(spec) / "venv", wanted)
        marker.write_text(digest)

    def _download_wheels(self, wheels: Path, wanted: list[str]) -> None:
        """The platform fetches wheels (never source distributions: nothing is built or run)
        with its own pip configuration; the sandbox installs from them without a network."""
        if wheels.exists():
            shutil.rmtree(wheels)
        wheels.mkdir(mode=0o700)
        pip = [self.settings.python, "-m", "pip", "download", "--quiet", "--only-binary", ":all:"]
        self._run([*pip, "--disable-pip-version-check", "--dest", str(wheels), "--", *wanted])

    def _build_venv_sandboxed(self, spec: ModelSpec, wanted: list[str]) -> None:
        """pip installs in the model's sandbox, as the model, from the wheels downloaded for
        it, with no network."""
        wheels = self.workdir(spec) / "wheels"
        self._download_wheels(wheels, wanted)
        uid = self.settings.sandbox.uid_of(spec.model_id)
        sandbox.give_to(wheels, uid)
        command = [
            self.settings.python,
            "-I",
            "-m",
            "fogline.models.runtimes.venv",
            sandbox.VENV_DIR,
            sandbox.WHEELS_DIR,
            json.dumps(sandbox.platform_site_dirs()),
            *wanted,
        ]
        plan = self._sandbox_plan(spec, command, {}, [], wheels, cpu_offset=0)
        done = subprocess.run(
            [*_launcher(self.settings.python), json.dumps(plan.launch_spec)],
            cwd="/",
            env=_launcher_env(),
            capture_output=True,
            text=True,
            timeout=VENV_TIMEOUT_S,
            check=False,
        )
        if done.returncode != 0:
            raise Unavailable(
                "preparing the model's virtualenv failed: "
                f"{(done.stderr or done.stdout).strip()[-500:]}"
            )

    def _build_venv(self, venv: Path, wanted: list[str]) -> None:
        """Unsandboxed: a venv that sees the platform's packages (the SDK above all) behind its
        own: pip installs only what the model adds or pins differently."""
        self._run([self.settings.python, "-m", "venv", str(venv)])
        python = str(venv / "bin" / "python")
        platform_sites = json.loads(self._run([self.settings.python, "-c", _SITE_DIRS]))
        own_site = Path(self._run([python, "-c", _PURELIB]).strip())
        lines = [f"import site; site.addsitedir({d!r})" for d in platform_sites]
        (own_site / "_fogline_platform.pth").write_text("\n".join(lines) + "\n")
        pip = [python, "-m", "pip", "install", "--quiet", "--only-binary", ":all:"]
        self._run([*pip, "--", *wanted])

    @staticmethod
    def _run(command: list[str]) -> str:
        done = subprocess.run(command, capture_output=True, text=True, timeout=VENV_TIMEOUT_S)
        if done.returncode != 0:
            raise Unavailable(
                f"preparing the model's virtualenv failed: {done.stderr.strip()[-500:]}"
            )
        return done.stdout

    # -- start ---------------------------------------------------------------------------

    async def start(self, spec: ModelSpec) -> RuntimeHandle:
        self._cpu_offset += 1
        plan = await asyncio.to_thread(self._plan, spec, self._cpu_offset)
        if plan.note:
            log.warning(
                "model.unsandboxed", extra={"fields": {"model": spec.key, "note": plan.note}}
            )
        relays = EgressRelays()
        if plan.egress and plan.run_dir is not None:
            await relays.open(plan.run_dir, plan.egress, plan.uid)
        log_file = self.log_file(spec.tenant, spec.name, spec.version)
        inherited = (plan.listener.fileno(),) if plan.listener is not None else ()
        try:
            process = await asyncio.create_subprocess_exec(
                *_launcher(self.settings.python),
                json.dumps(plan.launch_spec),
                cwd="/",
                env=_launcher_env(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                pass_fds=inherited,  # the listening socket: the model serves on it
                start_new_session=True,  # a terminal's Ctrl-C is the platform's to handle
            )
        except BaseException:
            await relays.close()
            raise
        finally:
            if plan.listener is not None:
                plan.listener.close()  # the model holds it now
        self._processes[process.pid] = process
        self._relays[process.pid] = relays
        assert process.stdout is not None
        self._logs[process.pid] = asyncio.create_task(
            _keep_log(process.stdout, log_file, self.settings.log_max_bytes)
        )
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
            log_file=str(log_file),
            extra={"sandbox": "bwrap" if self.sandboxed else "off"},
        )

    def _plan(self, spec: ModelSpec, cpu_offset: int) -> _LaunchPlan:
        """Everything about starting a model that touches the file system."""
        local = self._local(spec)
        self._check_sandbox()
        work = self.workdir(spec)
        _private_dir(work)
        env = self._environment(spec)
        command = list(local.command)
        if not self.sandboxed:
            return self._unsandboxed_plan(spec, local, command, env, cpu_offset)
        if command[0] in PYTHON_NAMES:
            own = self._has_own_venv(spec)
            command[0] = f"{sandbox.VENV_DIR}/bin/python" if own else self.settings.python
        # The run dir (/run/fogline inside) is root's: the model can neither replace the
        # socket it is called on nor plant a link there for the platform to follow.
        run_dir = self._run_dir(spec)
        link = self._socket_link(spec, run_dir)  # a socket path has at most 107 bytes
        listener = None
        if spec.manifest.model.type == "http":
            listener = _listen_unix(link / "model.sock")
            env["FOGLINE_MODEL_SOCKET_FD"] = str(listener.fileno())
        egress = self._egress(spec, env)
        if egress:
            forwards = [
                {"port": e.port, "socket": f"{sandbox.RUN_DIR}/{e.name}.sock"} for e in egress
            ]
            command = sandbox.shim_command(forwards, command)
        plan = self._sandbox_plan(spec, command, env, egress, None, cpu_offset)
        endpoint = f"unix:{link}/model.sock" if listener is not None else None
        return replace(plan, endpoint=endpoint, run_dir=link, listener=listener)

    def _run_dir(self, spec: ModelSpec) -> Path:
        run_dir = self.workdir(spec) / "run"
        if run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.mkdir(mode=0o711)
        run_dir.chmod(0o711)
        return run_dir

    def _sandbox_plan(
        self,
        spec: ModelSpec,
        command: list[str],
        env: dict[str, str],
        egress: list[Egress],
        wheels: Path | None,
        cpu_offset: int,
    ) -> _LaunchPlan:
        local = self._local(spec)
        bwrap = self._check_sandbox()
        uid = self.settings.sandbox.uid_of(spec.model_id)
        work = self.workdir(spec)
        run_dir = work / "run"
        if not run_dir.is_dir():
            run_dir = self._run_dir(spec)
        view = SandboxView(uid, uid, spec.package_dir, work / IMAGE_NAME, run_dir, wheels)
        argv, binds, image = sandbox.bwrap_command(bwrap, view, env, command, sandbox.PACKAGE_DIR)
        limits = local.limits
        launch_spec: dict[str, object] = {
            **_limit_spec(limits, cpu_offset),
            "processes": limits.processes,
            "uid": uid,
            "gid": uid,
            "binds": binds,
            "image": image,
            "command": argv,
            "cwd": "/",
            "parent_pid": os.getpid(),
        }
        return _LaunchPlan(launch_spec, env, None, egress, run_dir, uid, f"uid {uid}", None)

    def _unsandboxed_plan(
        self,
        spec: ModelSpec,
        local: LocalProcess,
        command: list[str],
        env: dict[str, str],
        cpu_offset: int,
    ) -> _LaunchPlan:
        work = self.workdir(spec)
        if command[0] in PYTHON_NAMES:
            venv_python = work / "venv" / "bin" / "python"
            command[0] = str(venv_python) if venv_python.exists() else self.settings.python
        state = work / "state"
        state.mkdir(mode=0o700, exist_ok=True)
        env.update(
            HOME=str(state),
            FOGLINE_MODEL_STATE_DIR=str(state),
            PATH=os.environ.get("PATH", "/usr/bin:/bin"),
        )
        own_venv = work / "venv"
        if own_venv.is_dir():
            env["VIRTUAL_ENV"] = str(own_venv)
        endpoint = None
        if spec.manifest.model.type == "http":
            port = free_port()
            env.update(FOGLINE_MODEL_PORT=str(port), PORT=str(port))
            env.pop("FOGLINE_MODEL_SOCKET", None)
            endpoint = f"http://127.0.0.1:{port}"
        launch_spec: dict[str, object] = {
            **_limit_spec(local.limits, cpu_offset),
            "command": command,
            "cwd": str(spec.package_dir or state),
            "parent_pid": os.getpid(),
            "env": env,
        }
        me = _user_name()
        note = (
            f"unsandboxed (model_sandbox: off): runs as {me} with limits only; "
            "it can read whatever this user can"
        )
        return _LaunchPlan(launch_spec, env, endpoint, [], None, None, me, note)

    def _has_own_venv(self, spec: ModelSpec) -> bool:
        return (self.workdir(spec) / "venv.sha256").is_file()

    def _egress(self, spec: ModelSpec, env: dict[str, str]) -> list[Egress]:
        """The addresses this model needs: its broker (AMQP), the platform's callback address
        (asynchronous models). The model's URLs are rewritten to the sandbox's loopback."""
        model = spec.manifest.model
        egress = []
        if model.type == "amqp" and self.settings.amqp_url:
            parts = urlsplit(self.settings.amqp_url)
            port = parts.port or (5671 if parts.scheme == "amqps" else 5672)
            egress.append(Egress("amqp", parts.hostname or "127.0.0.1", port))
            env["FOGLINE_AMQP_URL"] = _with_host(parts, "127.0.0.1", port)
        callback = self.settings.callback_base()
        if model.is_async and callback:
            parts = urlsplit(callback)
            if parts.hostname and parts.port:
                egress.append(Egress("callback", parts.hostname, parts.port))
        return egress

    def _socket_link(self, spec: ModelSpec, run_dir: Path) -> Path:
        """A short path to the model's socket directory (a socket path has at most 107 bytes;
        data dirs can be deep): a link in a private directory of the platform's user."""
        if self._links is None:
            tag = hashlib.sha256(str(self.settings.root.resolve()).encode()).hexdigest()[:12]
            self._links = Path(tempfile.gettempdir()) / f"fogline-{os.geteuid()}-{tag}"
            _private_dir(self._links)
        link = self._links / str(spec.model_id)
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
        link.symlink_to(run_dir)
        return link

    def _environment(self, spec: ModelSpec) -> dict[str, str]:
        model = spec.manifest.model
        local = model.local
        env = {
            "PATH": f"{sandbox.VENV_DIR}/bin:/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "HOME": sandbox.STATE_DIR,
            "TMPDIR": "/tmp",  # noqa: S108 - the sandbox's own /tmp, inside the model's image
            "PYTHONUNBUFFERED": "1",
            # Many models on few cores: one thread each, not one per core each.
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "FOGLINE_MODEL_NAME": spec.name,
            "FOGLINE_MODEL_VERSION": spec.version,
            "FOGLINE_MODEL_STATE_DIR": sandbox.STATE_DIR,
            "FOGLINE_MODEL_PROTOCOL": model.type,
            "FOGLINE_SCORE_ENDPOINT": model.score_endpoint,
            "FOGLINE_HEALTH_ENDPOINT": model.health_check_endpoint,
            # The calls the companion may have in flight at once: the SDK serves as many.
            "FOGLINE_MODEL_CONCURRENCY": str(1 if model.stateful else model.concurrency),
            # The manifest's parameters (value, or default), read by fogline.sdk.parameters().
            "FOGLINE_MODEL_PARAMETERS": json.dumps(spec.manifest.parameter_values()),
        }
        if model.type == "http":
            env["FOGLINE_MODEL_SOCKET"] = sandbox.SOCKET
        if self._has_own_venv(spec):
            env["VIRTUAL_ENV"] = sandbox.VENV_DIR
        elif sys.prefix != sys.base_prefix:
            env["VIRTUAL_ENV"] = sys.prefix
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
            env.update(local.env)  # names checked: none of the above can be overridden
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

        async def exited() -> bool:
            if process is None:  # started by an earlier run: only its pid is known
                return process_start_ticks(pid) != handle.started_at_ticks
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), 0.1)
            return process.returncode is not None

        if not await wait_until(exited, grace_s):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        if process is not None and process.returncode is None:
            await process.wait()
        relays = self._relays.pop(pid, None)
        if relays is not None:
            await relays.close()
        keeping = self._logs.pop(pid, None)
        if keeping is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(keeping, 2.0)

    async def deprovision(self, spec: ModelSpec) -> None:
        # The working directory holds the model's state and log; it is kept for inspection
        # and for a later deployment of the same version, and deleted with the model (purge).
        return None

    async def purge(self, tenant: str, name: str, version: str) -> None:
        """A removed model's working directory, disk image and log go."""
        work = self.settings.root / tenant / name / version
        await asyncio.to_thread(shutil.rmtree, work, True)

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


def checked_requirements(text: str, where: str) -> list[str]:
    """A model's requirements: plain requirement specifiers only. pip options (`-r`, `-c`,
    `--index-url`, `-e`...), file paths and URLs are refused: they would make the platform's
    pip read files or reach addresses a tenant chose."""
    wanted, problems = [], []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            requirement = None
        if requirement is None or requirement.url or line.startswith("-"):
            problems.append(
                Problem(
                    f"{where}:{number}",
                    f"{line[:80]!r} is not a plain requirement (a name with version "
                    "specifiers; pip options, paths and URLs are not allowed)",
                )
            )
            continue
        wanted.append(str(requirement))
    if problems:
        raise InvalidInput.of(problems, "requirements")
    return wanted


def _private_dir(path: Path) -> None:
    """A directory of the platform's user only; one that exists with other owners or modes
    (e.g. planted in /tmp by someone else) is refused, not used."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        raise sandbox.SandboxUnavailable(f"{path} is not a directory of the platform's user")
    if stat.S_IMODE(st.st_mode) != 0o700:
        path.chmod(0o700)


def _listen_unix(path: Path) -> socket.socket:
    """A listening Unix socket the model inherits (as systemd's socket activation does); the
    platform's user owns the file, the model only accepts on it."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(str(path))
        path.chmod(0o600)
        listener.listen(128)
    except OSError:
        listener.close()
        raise
    return listener


def _launcher(python: str) -> list[str]:
    """The launcher: isolated mode (-I), so no PYTHON* variable, working directory or user
    site can put anything on its import path."""
    return [python, "-I", "-m", "fogline.models.runtimes.launch"]


def _launcher_env() -> dict[str, str]:
    """The launcher runs with the platform's privileges: nothing of the model's in its env."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}


def _limit_spec(limits: Limits, cpu_offset: int) -> dict[str, object]:
    return {
        "memory_bytes": limits.memory_mb * 1024 * 1024,
        "open_files": limits.open_files,
        "file_size_bytes": limits.file_size_mb * 1024 * 1024,
        "cpus": limits.cpus,
        "cpu_offset": cpu_offset,
        "nice": 5,
    }


def _with_host(parts: SplitResult, host: str, port: int) -> str:
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"{credentials}@{host}:{port}" if credentials else f"{host}:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _user_name() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


async def _keep_log(stream: asyncio.StreamReader, path: Path, max_bytes: int) -> None:
    """The model's stdout and stderr, appended to its log, which moves to `.1` when full: a
    chatty model fills at most twice `max_bytes` of the platform's disk."""
    out = await asyncio.to_thread(open, path, "ab")
    try:
        size = out.tell()
        while chunk := await stream.read(64 * 1024):
            if size + len(chunk) > max_bytes:
                out.close()
                await asyncio.to_thread(os.replace, path, path.with_name(path.name + ".1"))
                out = await asyncio.to_thread(open, path, "ab")
                size = 0
            out.write(chunk)
            out.flush()
            size += len(chunk)
    except (OSError, ValueError) as exc:
        log.warning("model.log_failed", extra={"fields": {"path": str(path), "error": str(exc)}})
    finally:
        out.close()
