"""The platform process: one embedded (or external) NATS, one database, the historian, the
MQTT bridge when asked for, and the HTTP API, started in order and stopped in reverse."""

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
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import uvicorn
from nats.js.errors import ServiceUnavailableError

from fogline import __version__
from fogline.api.app import create_app
from fogline.api.deps import ApiServices
from fogline.api.limits import RequestLimits
from fogline.app.settings import Settings
from fogline.bus.bridge import MqttBridge, MqttEndpoint, bridge_client_id
from fogline.bus.connection import Bus, HotStoreSettings, redact_url
from fogline.bus.errors import PortInUse
from fogline.bus.refusals import ConnectionEvents, OversizeReporter
from fogline.bus.server import (
    PLATFORM_USER,
    SYSTEM_USER,
    BrokerUser,
    EmbeddedNats,
    EmbeddedNatsSettings,
)
from fogline.bus.subjects import Subjects
from fogline.domain.access import DEFAULT_TENANT, Role
from fogline.domain.errors import ConfigurationError
from fogline.fleet.assets import AssetRegistry
from fogline.fleet.broker_auth import BrokerAuth, EmbeddedBrokerAuth, UnmanagedBrokerAuth
from fogline.fleet.devices import DeviceRegistry
from fogline.ingest.cache import RegistryCache
from fogline.ingest.intake import HttpIntake
from fogline.ingest.queries import TelemetryQueries
from fogline.ingest.validation import IngestLimits
from fogline.ingest.worker import HistorianSupervisor, HistorianWorkerConfig
from fogline.models.deployment import DeploymentManager, SagaSettings
from fogline.models.mappings import ModelMappingService
from fogline.models.model_registry import ModelRegistry
from fogline.models.packages import PackageLimits, PackageStore
from fogline.models.runtimes.base import Runtime
from fogline.models.runtimes.external import ExternalRuntime
from fogline.models.runtimes.local import LocalRuntime, LocalRuntimeSettings
from fogline.models.runtimes.sandbox import SandboxSettings
from fogline.models.transport import AmqpConnections
from fogline.procs import rss_mb
from fogline.retry import wait_until
from fogline.store.database import Database
from fogline.store.secrets import SecretBox

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the platform decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass(frozen=True)
class Bootstrap:
    """What a first start created: the admin key is shown once, then kept in client.json."""

    admin_key: str | None


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
        raise ConfigurationError(
            f"the data dir {path} is not writable: {exc.strerror or exc}; "
            "choose another with --data-dir or FOGLINE_DATA_DIR"
        ) from None
    if narrowed:
        log.warning(
            "platform.data_dir_narrowed",
            extra={
                "fields": {"data_dir": str(path), "paths": len(narrowed), "first": narrowed[:5]}
            },
        )


def narrow_permissions(root: Path) -> list[str]:
    """Take group and other bits off everything under root (links are left alone)."""
    narrowed = []
    for directory, dirs, files in os.walk(root):
        for name in [".", *dirs, *files]:
            path = os.path.join(directory, name)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode) or not st.st_mode & 0o077:
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


class Platform:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.subjects = Subjects(settings.subject_root)
        self.db: Database | None = None
        self.nats: EmbeddedNats | None = None
        self.bus: Bus | None = None
        self.historian: HistorianSupervisor | None = None
        self.bridge: MqttBridge | None = None
        self.oversize: OversizeReporter | None = None
        self._events: ConnectionEvents | None = None
        self.devices: DeviceRegistry | None = None
        self.deployments: DeploymentManager | None = None
        self.bootstrap = Bootstrap(None)
        self._http: _Server | None = None
        self._http_task: asyncio.Task[None] | None = None
        self._http_socket: socket.socket | None = None
        self.started_at = time.time()
        s = settings
        self._local_runtime = LocalRuntime(
            LocalRuntimeSettings(
                s.runtime_dir,
                SandboxSettings(
                    s.model_sandbox,
                    s.model_uid_base,
                    s.model_sandbox_bwrap,
                    caps=s.model_limit_caps,
                ),
                s.amqp_url,
                callback_base=lambda: f"{self.http_url}/api/v1/model-callbacks",
            )
        )

    # -- addresses ------------------------------------------------------------------------

    @property
    def http_url(self) -> str:
        host = self.settings.http_host
        port = self._http_socket.getsockname()[1] if self._http_socket else self.settings.http_port
        return f"http://{host}:{port}"

    @property
    def mqtt_url(self) -> str | None:
        if self.settings.mqtt_url:
            return redact_url(self.settings.mqtt_url)
        if self.nats is not None:
            host, port = self.nats.mqtt_address
            return f"mqtt://{host}:{port}"
        return None

    @property
    def nats_url(self) -> str:
        if self.settings.nats_url:
            return redact_url(self.settings.nats_url)
        return self.nats.client_url if self.nats else ""

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        ensure_data_dir(s.data_dir)
        self._http_socket = bind_http(s.http_host, s.http_port)  # fail fast on a taken port
        try:
            await self._start_services()
        except BaseException:
            await self.stop()
            raise

    async def _start_services(self) -> None:
        s = self.settings
        self.db = await asyncio.to_thread(Database.open, s.effective_database_url)
        self.bootstrap = await asyncio.to_thread(self._bootstrap, self.db)
        broker: BrokerAuth
        if s.nats_url:
            self.bus = await Bus.connect(s.nats_url, self.subjects)
            broker = UnmanagedBrokerAuth()
        else:
            self.nats = EmbeddedNats(
                EmbeddedNatsSettings(
                    directory=s.data_dir / "nats",
                    client_port=s.nats_port,
                    mqtt_port=s.mqtt_port,
                ),
                self.subjects,
            )
            users = [
                BrokerUser(c.username, c.password_hash)
                for c in await asyncio.to_thread(self.db.devices.device_credentials)
            ]
            await self.nats.start(users)
            self.bus = await Bus.connect(
                self.nats.client_url, self.subjects, PLATFORM_USER, self.nats.platform_password
            )
            broker = EmbeddedBrokerAuth(self.nats)
            # MQTT messages nats-server refuses by closing the connection become dead letters.
            self.oversize = OversizeReporter(self.bus, self.nats.settings.max_payload)
            self._events = ConnectionEvents(
                self.nats.client_url,
                SYSTEM_USER,
                self.nats.system_password,
                self.oversize.on_closed,
            )
            await self._events.start()
        await self.bus.ensure_streams(HotStoreSettings(s.hot_retention_seconds, s.hot_max_bytes))

        cache = RegistryCache(self.db.assets, self.db.devices)

        mappings = ModelMappingService(self.db.models, self.db.model_mappings, self.db.assets)
        packages = PackageStore(
            s.package_dir,
            self.db.models,
            PackageLimits(s.package_max_bytes, s.package_max_expanded_bytes, s.package_max_files),
        )
        self.deployments = self._deployment_manager(self.db, self.bus, mappings, packages)
        mappings.on_change = self.deployments.refresh_mappings

        async def on_registry_change(_msg: Any) -> None:
            cache.invalidate()
            if self.deployments is not None:  # assets came or went: companions follow
                await self.deployments.refresh_mappings()

        await self.bus.nc.subscribe(self.subjects.registry_changed, cb=on_registry_change)

        async def notify_registry_change() -> None:
            assert self.bus is not None
            cache.invalidate()
            await self.bus.nc.publish(self.subjects.registry_changed, b"")

        limits = IngestLimits(max_message_bytes=s.max_message_bytes)
        self.historian = HistorianSupervisor(self._historian_config(), self.bus)
        await self.historian.start()
        if s.mqtt_url:
            self.bridge = MqttBridge(
                MqttEndpoint.parse(s.mqtt_url),
                self.bus,
                bridge_client_id(self.subjects.root, s.data_dir),
                s.max_message_bytes,
            )
            await self.bridge.start()

        self.devices = DeviceRegistry(self.db.devices, broker, notify_registry_change)
        services = ApiServices(
            tenants=self.db.tenants,
            assets=AssetRegistry(self.db.assets, notify_registry_change),
            devices=self.devices,
            queries=TelemetryQueries(self.db.assets, self.db.telemetry),
            telemetry=self.db.telemetry,
            intake=HttpIntake(self.bus, cache, self.db.telemetry, limits),
            models=ModelRegistry(
                self.db.models,
                SecretBox.for_platform(s.data_dir, s.secret_key),
                s.model_limit_caps,
                on_removed=[packages.remove, self._local_runtime.purge],
            ),
            mappings=mappings,
            deployments=self.deployments,
            packages=packages,
            bus=self.bus,
            system_info=self.system_info,
            hot_store=self.hot_store_state,
            readiness=self.readiness,
            limits=RequestLimits(
                json_bytes=s.max_request_bytes,
                telemetry_bytes=limits.max_message_bytes,
                package_bytes=s.package_max_bytes,
            ),
        )
        config = uvicorn.Config(
            create_app(services),
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=3,
        )
        self._http = _Server(config)
        assert self._http_socket is not None
        self._http_task = asyncio.create_task(self._http.serve(sockets=[self._http_socket]))
        http, serving = self._http, self._http_task

        async def http_started() -> bool:
            if serving.done():
                serving.result()
                raise ConfigurationError("the HTTP server stopped while starting")
            return bool(http.started)

        if not await wait_until(http_started, 10, interval_s=0.02):
            raise ConfigurationError("the HTTP server did not start in 10s")
        # Only now: async models call back on the HTTP address.
        await self.deployments.recover()
        log.info(
            "platform.started", extra={"fields": {"http": self.http_url, "nats": self.nats_url}}
        )

    def _deployment_manager(
        self, db: Database, bus: Bus, mappings: ModelMappingService, packages: PackageStore
    ) -> DeploymentManager:
        s = self.settings
        runtimes: dict[str, Runtime] = {"local": self._local_runtime, "external": ExternalRuntime()}
        return DeploymentManager(
            db.models,
            db.deployments,
            db.sagas,
            db.telemetry,
            mappings,
            bus,
            runtimes,
            packages,
            AmqpConnections(s.amqp_url),
            lambda: f"{self.http_url}/api/v1/model-callbacks",
            SagaSettings(
                health_interval_s=s.model_health_interval,
                health_timeout_s=s.model_start_timeout,
                max_health_failures=s.model_max_health_failures,
            ),
        )

    def _historian_config(self) -> HistorianWorkerConfig:
        s = self.settings
        if s.nats_url:
            url, user, password = s.nats_url, None, None
        else:
            assert self.nats is not None
            url, user, password = self.nats.client_url, PLATFORM_USER, self.nats.platform_password
        return HistorianWorkerConfig(
            nats_url=url,
            nats_user=user,
            nats_password=password,
            subject_root=self.subjects.root,
            database_url=s.effective_database_url,
            max_message_bytes=s.max_message_bytes,
            log_level=s.log_level,
        )

    def _bootstrap(self, db: Database) -> Bootstrap:
        """A fresh platform gets a default tenant and an admin key, shown once and kept for the
        local CLI in client.json (readable by this user only)."""
        if db.tenants.list_api_keys(None):
            return Bootstrap(None)
        if not db.tenants.tenant_exists(DEFAULT_TENANT):
            db.tenants.create_tenant(DEFAULT_TENANT, "Default tenant")
        _, secret = db.tenants.create_api_key(None, "first admin key", Role.ADMIN)
        self.write_client_file(secret)
        return Bootstrap(secret)

    def write_client_file(self, api_key: str) -> None:
        path = self.settings.client_file
        document = {"url": self.http_url, "api_key": api_key, "tenant": DEFAULT_TENANT}
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
        if document.get("url") != self.http_url and document.get("api_key"):
            self.write_client_file(document["api_key"])

    async def stop(self) -> None:
        if self.deployments is not None:
            await self.deployments.shutdown()
            self.deployments = None
        if self._http is not None and self._http_task is not None:
            self._http.should_exit = True
            with contextlib.suppress(Exception):
                await self._http_task
        self._http = self._http_task = None
        if self._http_socket is not None:
            self._http_socket.close()
            self._http_socket = None
        if self.bridge is not None:
            await self.bridge.stop()
            self.bridge = None
        if self.historian is not None:
            await self.historian.stop()
            self.historian = None
        if self._events is not None:
            await self._events.stop()
            self._events = None
        if self.bus is not None:
            await self.bus.close()
            self.bus = None
        if self.nats is not None:
            await self.nats.stop()
        if self.db is not None:
            self.db.close()
            self.db = None
        log.info("platform.stopped")

    async def hot_store_state(self) -> dict[str, Any]:
        """The telemetry stream as JetStream sees it."""
        assert self.bus is not None
        bus = self.bus

        async def stream_info() -> Any:
            try:
                return await bus.js.stream_info(self.subjects.telemetry_stream)
            except ServiceUnavailableError:
                # JetStream's API is away while a reload re-applies accounts (a device was
                # added): see EmbeddedNats.reload. Say so rather than fail the whole answer.
                return None

        info = await wait_until(stream_info, 3.0, interval_s=0.1)
        if info is None:
            return {"stream": self.subjects.telemetry_stream, "unavailable": True}
        return {
            "stream": info.config.name,
            "messages": info.state.messages,
            "bytes": info.state.bytes,
            "first_seq": info.state.first_seq,
            "last_seq": info.state.last_seq,
            "max_age_s": info.config.max_age,
        }

    async def readiness(self) -> dict[str, Any]:
        """Whether this platform takes telemetry in and stores it: NATS connected, the database
        answering, the historian doing its work."""
        checks: dict[str, Any] = {}
        problems: list[str] = []
        nats_ok = self.bus is not None and self.bus.nc.is_connected
        checks["nats"] = {"ok": nats_ok}
        if not nats_ok:
            problems.append("not connected to NATS")
        try:
            assert self.db is not None
            await asyncio.wait_for(asyncio.to_thread(self.db.ping), 5)
            checks["database"] = {"ok": True}
        except Exception as exc:
            checks["database"] = {"ok": False}
            problems.append(f"the database does not answer ({type(exc).__name__})")
        if self.historian is not None:
            health = self.historian.health()
            checks["historian"] = health
            if health["problem"]:
                problems.append(health["problem"])
        return {"ready": not problems, "problems": problems, "checks": checks}

    def system_info(self) -> dict[str, Any]:
        h = self.historian.stats if self.historian else None
        return {
            "version": __version__,
            "pid": os.getpid(),
            "uptime_s": round(time.time() - self.started_at, 1),
            "rss_mb": rss_mb(os.getpid()),
            "http": self.http_url,
            "mqtt": self.mqtt_url,
            "nats": self.nats_url,
            "nats_pid": self.nats.pid if self.nats else None,
            "nats_rss_mb": rss_mb(self.nats.pid) if self.nats and self.nats.pid else None,
            "historian_pid": self.historian.pid if self.historian else None,
            "historian_rss_mb": rss_mb(self.historian.pid)
            if self.historian and self.historian.pid
            else None,
            "historian_restarts": self.historian.restarts if self.historian else 0,
            "database": self.db.dialect if self.db else None,
            "device_auth_enforced": self.nats is not None,
            "bridge": None
            if self.bridge is None
            else {
                "forwarded": self.bridge.forwarded,
                "refused": self.bridge.refused,
                "too_large": self.bridge.too_large,
            },
            "mqtt_over_limit_reported": self.oversize.reported if self.oversize else 0,
            "historian": None if h is None else asdict(h),
            "historian_health": self.historian.health() if self.historian else None,
        }
