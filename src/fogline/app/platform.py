"""The platform process: the backbone (database, NATS, and Fogline's own nats-server unless
one is given), then each context (ingest, fleet, models) and the HTTP API, started in order
and stopped in reverse by one exit stack. The builders are in `app/contexts.py`."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import socket
import stat
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import uvicorn

from fogline import __version__
from fogline.access.tenants import AccessService
from fogline.api.app import create_app
from fogline.api.deps import ApiServices
from fogline.api.limits import RequestLimits
from fogline.app.contexts import (
    Backbone,
    FleetContext,
    IngestContext,
    ModelsContext,
    build_access,
    build_fleet,
    build_ingest,
    build_models,
    open_backbone,
)
from fogline.app.lock import DataDirLock
from fogline.app.readiness import DatabaseCheck, DiskCheck, Readiness, standard_checks
from fogline.app.safety import start_disk_guard
from fogline.app.settings import Settings
from fogline.bus.bridge import MqttBridge
from fogline.bus.connection import Bus, redact_url
from fogline.bus.errors import PortInUse
from fogline.bus.refusals import OversizeReporter
from fogline.bus.server import (
    EmbeddedNats,
    EmbeddedNatsSettings,
    check_port_free,
    mqtt_port_setting,
)
from fogline.bus.subjects import Subjects
from fogline.disk import DiskGuard
from fogline.domain.access import DEFAULT_TENANT, Role
from fogline.domain.errors import ConfigurationError
from fogline.ingest.retention import RetentionJob
from fogline.ingest.worker import HistorianSupervisor
from fogline.models.deployment import DeploymentManager
from fogline.procs import rss_mb
from fogline.retry import wait_until
from fogline.store.database import Database

log = logging.getLogger(__name__)

HOT_STORE_TIMEOUT_S = 2.0
LOOPBACK = "127.0.0.1"


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the platform decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass(frozen=True)
class Bootstrap:
    """The admin key to show at this start: made by it (a first start), or made by an earlier
    start that failed before it could show it (`carried_over`). None once shown: from then on
    it is only in client.json."""

    admin_key: str | None
    carried_over: bool = False


# In the data dir from the admin key's creation until a start has shown it: a start that fails
# after making the key (a port taken, the historian refused) leaves it for the next start to show.
KEY_NOT_SHOWN = "admin-key-not-shown"


def claim_data_dir(path: Path) -> DataDirLock:
    """The data dir, made if new, and locked for this platform alone: a second platform on it
    is refused here, before it touches anything (PlatformAlreadyRunning). Then made private."""
    os.umask(0o077)  # what the platform and its processes create from now on
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise _not_writable(path, exc) from None
    lock = DataDirLock(path)
    lock.acquire()
    try:
        ensure_data_dir(path)
    except BaseException:
        lock.release()
        raise
    return lock


def _not_writable(path: Path, exc: OSError) -> ConfigurationError:
    return ConfigurationError(
        f"the data dir {path} is not writable: {exc.strerror or exc}; "
        "choose another with --data-dir or FOGLINE_DATA_DIR"
    )


def ensure_data_dir(path: Path) -> None:
    """The data dir holds keys, password hashes and every tenant's data: the platform's user
    only (0700 directories, 0600 files). Anything found wider at start is narrowed, and said."""
    os.umask(0o077)  # what the platform and its processes create from now on
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("ok")
        probe.unlink()
        narrowed = narrow_permissions(path)
    except OSError as exc:
        raise _not_writable(path, exc) from None
    if narrowed:
        log.warning(
            "platform.data_dir_narrowed",
            extra={
                "fields": {"data_dir": str(path), "paths": len(narrowed), "first": narrowed[:5]}
            },
        )


def narrow_permissions(root: Path) -> list[str]:
    """Take group and other bits off everything under root (links are left alone). A
    directory others may only traverse (0711: a model's run directory, made so by the local
    runtime for the model's own uid) is left as it is: nobody can list it or write in it."""
    narrowed = []
    for directory, dirs, files in os.walk(root):
        # Each directory once: the root itself, then every entry as its parent lists it.
        own = ["."] if os.path.samefile(directory, root) else []
        for name in [*own, *dirs, *files]:
            path = os.path.join(directory, name)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode) or not st.st_mode & 0o077:
                continue
            if stat.S_ISDIR(st.st_mode) and not st.st_mode & 0o066 and name != ".":
                continue
            os.chmod(path, stat.S_IMODE(st.st_mode) & 0o700)
            narrowed.append(os.path.relpath(path, root))
    return narrowed


def bind_http(host: str, port: int) -> socket.socket:
    # IPPROTO_TCP said, not 0: asyncio sets TCP_NODELAY only on sockets whose proto says TCP,
    # and without it each response waits out the client's delayed ACK (40 ms; uvloop sets it).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(
                f"HTTP port {host}:{port} is already in use; stop what holds it or choose "
                "another port with --http-port or FOGLINE_HTTP_PORT"
            ) from None
        raise PortInUse(f"cannot listen on {host}:{port} for HTTP: {exc}") from None
    sock.listen(512)
    sock.set_inheritable(False)
    return sock


async def _serve(stack: AsyncExitStack, app: Any, sock: socket.socket, tls: dict[str, Any]) -> None:
    """uvicorn on a bound socket (with TLS when told), stopped by the stack."""
    config = uvicorn.Config(
        app,
        **tls,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=3,
        # Longer than clients keep idle connections (ours: 4 s, httpx's default: 5 s), so
        # the server is not the one closing a connection a client is about to reuse.
        timeout_keep_alive=15,
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))

    async def stop_http() -> None:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await task

    stack.push_async_callback(stop_http)

    async def http_started() -> bool:
        if task.done():
            task.result()
            raise ConfigurationError("the HTTP server stopped while starting")
        return bool(server.started)

    if not await wait_until(http_started, 10, interval_s=0.02):
        raise ConfigurationError("the HTTP server did not start in 10s")


def check_embedded_ports(settings: Settings) -> None:
    """The embedded broker's ports, checked before the database is made or migrated: a taken
    port fails the start with nothing half-made. (nats-server checks them again as it binds.)"""
    host = EmbeddedNatsSettings(directory=settings.data_dir / "nats").host
    check_port_free(host, settings.nats_port, "NATS", "FOGLINE_NATS_PORT")
    check_port_free(
        settings.mqtt_host,
        settings.mqtt_listen_port,
        "MQTT",
        mqtt_port_setting(settings.tls),
    )


P = ParamSpec("P")
T = TypeVar("T")


def _part_name(callback: Callable[..., Any]) -> str:
    return getattr(callback, "__qualname__", None) or repr(callback)


def _stop_failed(callback: Callable[..., Any], exc: Exception) -> None:
    log.warning(
        "platform.part_not_stopped_cleanly",
        extra={"fields": {"part": _part_name(callback), "error": f"{type(exc).__name__}: {exc}"}},
    )


class _PartsStack(AsyncExitStack):
    """The platform's exit stack. A part that cannot be stopped cleanly (its broker or its
    database gone first) is logged in one line, and the parts after it still stop: a stop with
    parts already down ends cleanly, without a traceback."""

    def callback(
        self, callback: Callable[P, T], /, *args: P.args, **kwds: P.kwargs
    ) -> Callable[P, T]:
        def guarded(*a: P.args, **k: P.kwargs) -> Any:
            try:
                return callback(*a, **k)
            except Exception as exc:
                _stop_failed(callback, exc)
                return None

        super().callback(guarded, *args, **kwds)
        return callback

    def push_async_callback(
        self, callback: Callable[P, Awaitable[T]], /, *args: P.args, **kwds: P.kwargs
    ) -> Callable[P, Awaitable[T]]:
        async def guarded(*a: P.args, **k: P.kwargs) -> Any:
            try:
                return await callback(*a, **k)
            except Exception as exc:
                _stop_failed(callback, exc)
                return None

        super().push_async_callback(guarded, *args, **kwds)
        return callback


@dataclass(frozen=True)
class _Running:
    """Everything a started platform is made of."""

    backbone: Backbone
    access: AccessService
    ingest: IngestContext
    fleet: FleetContext
    models: ModelsContext
    disk: DiskGuard


class NotStarted(ConfigurationError):
    def __init__(self) -> None:
        super().__init__("the platform is not started")


class Platform:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.subjects = Subjects(settings.subject_root)
        self.bootstrap = Bootstrap(None)
        self.started_at = time.time()
        self._stack: AsyncExitStack | None = None
        self._running: _Running | None = None
        self._readiness: Readiness | None = None
        self._http_socket: socket.socket | None = None
        self._loopback_socket: socket.socket | None = None  # plain, beside an HTTPS API
        # Until `start` has done everything (models recovered too), /ready says "starting".
        self._started = False

    # -- the parts of a started platform ----------------------------------------------------

    @property
    def running(self) -> _Running:
        if self._running is None:
            raise NotStarted()
        return self._running

    @property
    def db(self) -> Database:
        return self.running.backbone.db

    @property
    def bus(self) -> Bus:
        return self.running.backbone.bus

    @property
    def nats(self) -> EmbeddedNats | None:
        """Fogline's own nats-server; None with an external NATS (or when stopped)."""
        return self._running.backbone.nats if self._running else None

    @property
    def oversize(self) -> OversizeReporter | None:
        return self._running.backbone.oversize if self._running else None

    @property
    def historian(self) -> HistorianSupervisor:
        return self.running.ingest.historian

    @property
    def bridge(self) -> MqttBridge | None:
        return self._running.ingest.bridge if self._running else None

    @property
    def retention_job(self) -> RetentionJob:
        return self.running.ingest.retention_job

    @property
    def deployments(self) -> DeploymentManager:
        return self.running.models.deployments

    # -- addresses ------------------------------------------------------------------------

    @property
    def http_port(self) -> int:
        return self._http_socket.getsockname()[1] if self._http_socket else self.settings.http_port

    @property
    def http_url(self) -> str:
        """Where this machine reaches the API (a wildcard host: loopback, by the name
        `localhost` with TLS, which a certificate is likelier to carry than an address)."""
        host = self.settings.http_host
        if host in ("0.0.0.0", ""):
            host = "localhost" if self.settings.tls else "127.0.0.1"
        scheme = "https" if self.settings.tls else "http"
        return f"{scheme}://{host}:{self.http_port}"

    @property
    def mqtt_url(self) -> str | None:
        if self.settings.mqtt_url:
            return redact_url(self.settings.mqtt_url)
        if self.nats is not None:
            n = self.nats.settings
            scheme = "mqtts" if n.mqtt_tls else "mqtt"
            return f"{scheme}://{self._public(n.mqtt_host)}:{n.mqtt_port}"
        return None

    def _public(self, host: str) -> str:
        """The name a device uses for a listener: itself, unless it is every address."""
        if host not in ("0.0.0.0", "", "::"):
            return host
        return self.settings.public_host or socket.gethostname()

    def listeners(self) -> list[dict[str, Any]]:
        """What this platform listens on: host, port and whether TLS guards it."""
        s = self.settings
        found = [{"name": "http", "host": s.http_host, "port": self.http_port, "tls": s.tls}]
        if self.nats is not None:
            n = self.nats.settings
            found.append(
                {"name": "mqtt", "host": n.mqtt_host, "port": n.mqtt_port, "tls": bool(n.mqtt_tls)}
            )
            if n.mqtt_tls is not None and n.mqtt_tls.client_ca_file is not None:
                found[-1]["client_certificates"] = True
            found.append({"name": "nats", "host": n.host, "port": n.client_port, "tls": False})
        if self._loopback_socket is not None:
            port = self._loopback_socket.getsockname()[1]
            found.append({"name": "http-callbacks", "host": LOOPBACK, "port": port, "tls": False})
        return found

    @property
    def nats_url(self) -> str:
        if self.settings.nats_url:
            return redact_url(self.settings.nats_url)
        return self.nats.client_url if self.nats else ""

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        lock = claim_data_dir(self.settings.data_dir)
        stack = _PartsStack()
        stack.callback(lock.release)  # the last thing a stop does: every part is down by then
        try:
            # Bound first: a taken port fails the start before anything else is made.
            sock = self._http_socket = bind_http(self.settings.http_host, self.settings.http_port)
            stack.callback(self._forget_http_socket)
            lock.record(self.http_url)
            if not self.settings.nats_url:
                check_embedded_ports(self.settings)
            await self._build(stack, sock)
        except BaseException:
            self._running = None
            await stack.aclose()
            raise
        self._stack = stack
        self._started = True
        log.info(
            "platform.started", extra={"fields": {"http": self.http_url, "nats": self.nats_url}}
        )

    async def _build(self, stack: AsyncExitStack, http_socket: socket.socket) -> None:
        backbone = await open_backbone(self.settings, self.subjects, stack)
        self.bootstrap = await asyncio.to_thread(self._bootstrap, backbone.db)
        # Before the API answers: a CLI that sees the platform up finds it through this file.
        self.refresh_client_file()
        access = build_access(backbone)
        ingest = await build_ingest(backbone, stack)
        disk = await start_disk_guard(backbone, ingest, stack)
        fleet = await build_fleet(backbone, stack)
        models = await build_models(backbone, self._callback_base, stack)
        self._running = _Running(backbone, access, ingest, fleet, models, disk)
        self._readiness = Readiness(
            [
                *standard_checks(
                    backbone.bus,
                    lambda: self.nats,
                    DatabaseCheck(backbone.db),
                    ingest.historian,
                    models.deployments,
                ),
                DiskCheck(disk),
            ]
        )
        await self._serve_http(stack, http_socket)
        # After the API (stopped before it): async models call back on the HTTP address.
        stack.push_async_callback(models.deployments.shutdown)
        await models.deployments.recover()

    def _callback_base(self) -> str:
        base = self.http_url
        if self._loopback_socket is not None:
            base = f"http://{LOOPBACK}:{self._loopback_socket.getsockname()[1]}"
        return f"{base}/api/v1/model-callbacks"

    async def _serve_http(self, stack: AsyncExitStack, sock: socket.socket) -> None:
        r, s = self.running, self.settings
        services = ApiServices(
            access=r.access,
            assets=r.fleet.assets,
            devices=r.fleet.devices,
            security=r.fleet.security,
            queries=r.ingest.queries,
            retention=r.ingest.retention,
            intake=r.ingest.intake,
            models=r.models.registry,
            mappings=r.models.mappings,
            deployments=r.models.deployments,
            packages=r.models.packages,
            bus=r.backbone.bus,
            system_info=self.system_info,
            hot_store=self.hot_store_state,
            readiness=self.readiness,
            limits=RequestLimits(
                json_bytes=s.max_request_bytes,
                telemetry_bytes=r.ingest.limits.max_message_bytes,
                package_bytes=s.package_max_bytes,
            ),
        )
        app = create_app(services)
        if s.tls_cert_file is None or s.tls_key_file is None:
            await _serve(stack, app, sock, {})
            return
        tls: dict[str, Any] = {
            "ssl_certfile": str(s.tls_cert_file),
            "ssl_keyfile": str(s.tls_key_file),
        }
        await _serve(stack, app, sock, tls)
        # Local models answer asynchronous calls on a plain loopback listener of the same API
        # (they have no certificate to trust); its port is the system's choice.
        loopback = self._loopback_socket = bind_http(LOOPBACK, 0)
        stack.callback(self._forget_loopback_socket)
        await _serve(stack, app, loopback, {})

    def _forget_loopback_socket(self) -> None:
        if self._loopback_socket is not None:
            self._loopback_socket.close()
            self._loopback_socket = None

    def _forget_http_socket(self) -> None:
        if self._http_socket is not None:
            self._http_socket.close()
            self._http_socket = None

    def _bootstrap(self, db: Database) -> Bootstrap:
        """A fresh platform gets a default tenant and an admin key, shown once and kept for the
        local CLI in client.json (readable by this user only)."""
        if db.tenants.list_api_keys(None):
            return self._key_not_shown_yet()
        if not db.tenants.tenant_exists(DEFAULT_TENANT):
            db.tenants.create_tenant(DEFAULT_TENANT, "Default tenant")
        _, secret = db.tenants.create_api_key(None, "first admin key", Role.ADMIN)
        # The marker first: a start that dies between the two still shows the key next time.
        self._not_shown_marker.touch(mode=0o600)
        self.write_client_file(secret)
        return Bootstrap(secret)

    @property
    def _not_shown_marker(self) -> Path:
        return self.settings.data_dir / KEY_NOT_SHOWN

    def _key_not_shown_yet(self) -> Bootstrap:
        """The admin key an earlier start made but never showed, read back from client.json."""
        if not self._not_shown_marker.exists():
            return Bootstrap(None)
        try:
            key = json.loads(self.settings.client_file.read_text()).get("api_key")
        except (OSError, ValueError, AttributeError):
            key = None
        if not isinstance(key, str):
            self._not_shown_marker.unlink(missing_ok=True)  # nothing left to show
            return Bootstrap(None)
        return Bootstrap(key, carried_over=True)

    def admin_key_shown(self) -> None:
        """The admin key was shown (the banner printed it): later starts only say where it is."""
        self._not_shown_marker.unlink(missing_ok=True)

    def write_client_file(self, api_key: str) -> None:
        path = self.settings.client_file
        document = {"url": self.http_url, "api_key": api_key, "tenant": DEFAULT_TENANT}
        if self.settings.tls_cert_file is not None:
            # The CLI trusts this certificate itself (self-signed or not): see client/http.py.
            document["ca_file"] = str(self.settings.tls_cert_file.resolve())
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(document, f, indent=2)

    def refresh_client_file(self) -> None:
        """Keep the CLI pointed at this run's address (the port may differ between runs)."""
        path = self.settings.client_file
        try:
            document = json.loads(path.read_text())
        except (OSError, ValueError):
            return
        cert = self.settings.tls_cert_file
        ca_file = str(cert.resolve()) if cert is not None else None
        changed = document.get("url") != self.http_url or document.get("ca_file") != ca_file
        if changed and document.get("api_key"):
            self.write_client_file(document["api_key"])

    async def stop(self) -> None:
        if self.nats is not None:
            # From now on a broker that dies stays down: the platform is going, and a new
            # nats-server started meanwhile would only be stopped again.
            self.nats.stop_supervising()
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()
        self._running = None
        self._started = False
        log.info("platform.stopped")

    # -- what the API reports about the platform ------------------------------------------

    async def hot_store_state(self) -> dict[str, Any]:
        """The telemetry stream as JetStream sees it, or that it does not answer (in a bound:
        `/api/v1/system` must answer while the broker is away)."""
        try:
            return await asyncio.wait_for(self.bus.telemetry_stream_state(), HOT_STORE_TIMEOUT_S)
        except TimeoutError:
            return {"stream": self.subjects.telemetry_stream, "unavailable": True}

    async def readiness(self) -> dict[str, Any]:
        """Each part (broker, database, historian, models...; see `app/readiness.py`) and
        whether this platform takes telemetry in and stores it."""
        if self._readiness is None or self._running is None:
            problems = ["the platform is not started"]
            return {"ready": False, "problems": problems, "warnings": [], "checks": {}}
        report = await self._readiness.report()
        if not self._started:
            problems = ["the platform is starting (models are being brought back)"]
            report = {**report, "ready": False, "problems": problems + report["problems"]}
        return report

    def system_info(self) -> dict[str, Any]:
        running = self.running
        historian, bridge = running.ingest.historian, running.ingest.bridge
        nats, oversize = running.backbone.nats, running.backbone.oversize
        return {
            "version": __version__,
            "pid": os.getpid(),
            "uptime_s": round(time.time() - self.started_at, 1),
            "rss_mb": rss_mb(os.getpid()),
            "http": self.http_url,
            "mqtt": self.mqtt_url,
            "listeners": self.listeners(),
            "nats": self.nats_url,
            "nats_pid": nats.pid if nats else None,
            "nats_restarts": nats.restarts if nats else 0,
            "broker": nats.health() if nats else None,
            "disk": running.disk.health(),
            "hot_store_limits": asdict(running.backbone.store_sizes),
            "nats_rss_mb": rss_mb(nats.pid) if nats and nats.pid else None,
            "historian_pid": historian.pid,
            "historian_rss_mb": rss_mb(historian.pid) if historian.pid else None,
            "historian_restarts": historian.restarts,
            "database": running.backbone.db.dialect,
            "device_auth_enforced": nats is not None,
            "bridge": None
            if bridge is None
            else {
                "forwarded": bridge.forwarded,
                "refused": bridge.refused,
                "too_large": bridge.too_large,
                "paused": bridge.paused,
            },
            "mqtt_over_limit_reported": oversize.reported if oversize else 0,
            "historian": asdict(historian.stats),
            "historian_health": historian.health(),
            "retention": asdict(running.ingest.retention_job.stats),
        }
