"""One builder per context: each takes what it stands on (the backbone: database, bus, broker)
and the settings, makes the context's parts, and registers their stop on the platform's exit
stack, so that they stop in the reverse order of their start.

A new context (edge, monitor, evolve...) plugs in here: a dataclass of its parts, a builder,
its event subscriptions made through the bus, and a line in `Platform._build`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass

from fogline.access.tenants import AccessService
from fogline.app.readiness import DatabaseCheck
from fogline.app.settings import Settings
from fogline.bus.bridge import MqttBridge, MqttEndpoint, bridge_client_id
from fogline.bus.connection import Bus, EventStoreSettings, HotStoreSettings
from fogline.bus.refusals import ConnectionEvents, OversizeReporter
from fogline.bus.security import SecurityWatcher
from fogline.bus.server import (
    PLATFORM_USER,
    SYSTEM_USER,
    BrokerUser,
    EmbeddedNats,
    EmbeddedNatsSettings,
    MqttTls,
)
from fogline.bus.subjects import Subjects
from fogline.disk import DiskSpace, ReservePolicy, StoreSizes
from fogline.domain.errors import ConfigurationError, InvalidInput
from fogline.fleet.assets import AssetRegistry
from fogline.fleet.broker_auth import BrokerAuth, EmbeddedBrokerAuth, UnmanagedBrokerAuth
from fogline.fleet.devices import DeviceRegistry
from fogline.fleet.security import SecurityLedger
from fogline.ingest.cache import RegistryCache
from fogline.ingest.intake import HttpIntake
from fogline.ingest.queries import TelemetryQueries
from fogline.ingest.retention import RetentionJob, RetentionJobSettings, RetentionPolicies
from fogline.ingest.validation import IngestLimits
from fogline.ingest.worker import HistorianSupervisor, HistorianWorkerConfig
from fogline.models.companion import CompanionSettings
from fogline.models.deployment import DeploymentManager, SagaSettings
from fogline.models.lifecycle import ModelLifecycle
from fogline.models.mappings import ModelMappingService
from fogline.models.model_registry import ModelRegistry
from fogline.models.packages import PackageLimits, PackageStore
from fogline.models.runtimes.base import Runtime
from fogline.models.runtimes.external import ExternalRuntime
from fogline.models.runtimes.local import LocalRuntime, LocalRuntimeSettings
from fogline.models.runtimes.sandbox import SandboxSettings
from fogline.models.transport import AmqpConnections
from fogline.store.database import Database
from fogline.store.secrets import SecretBox

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NatsLogin:
    url: str
    user: str | None
    password: str | None


@dataclass(frozen=True)
class Backbone:
    """What every context stands on."""

    settings: Settings
    db: Database
    bus: Bus
    nats_login: NatsLogin
    broker_auth: BrokerAuth
    # Only when Fogline runs its own nats-server (not with FOGLINE_NATS_URL):
    nats: EmbeddedNats | None
    oversize: OversizeReporter | None
    store_sizes: StoreSizes  # the hot store's limits
    # nats-server's refused logins and permissions, as events (embedded nats-server only).
    security: SecurityWatcher | None = None


def size_stores(settings: Settings) -> StoreSizes:
    """The hot store's limits. Fogline's own nats-server keeps it in the data dir, so they
    are fitted to that filesystem (less the disk reserve); an external NATS keeps its own."""
    wanted = (
        EmbeddedNatsSettings.max_store_bytes,
        settings.hot_max_bytes,
        EventStoreSettings.max_bytes,
    )
    total = DiskSpace.of(settings.data_dir).total
    try:  # checked either way: the disk guard keeps the reserve with any NATS
        reserve = ReservePolicy(settings.disk_reserve).checked_for(total)
    except InvalidInput as exc:
        raise ConfigurationError("invalid settings", exc.problems) from None
    if settings.nats_url:
        return StoreSizes(*wanted)
    sizes = StoreSizes.fit(total, reserve, *wanted)
    log.info(
        "hot_store.sized",
        extra={"fields": {"filesystem_bytes": total, "reserve_bytes": reserve, **asdict(sizes)}},
    )
    return sizes


async def open_backbone(settings: Settings, subjects: Subjects, stack: AsyncExitStack) -> Backbone:
    db = await asyncio.to_thread(Database.open, settings.effective_database_url)
    stack.callback(db.close)
    sizes = size_stores(settings)
    if settings.nats_url:
        login = NatsLogin(settings.nats_url, None, None)
        bus = await Bus.connect(login.url, subjects)
        stack.push_async_callback(bus.close)
        backbone = Backbone(settings, db, bus, login, UnmanagedBrokerAuth(), None, None, sizes)
    else:
        backbone = await _embedded_backbone(settings, subjects, db, sizes, stack)
    await backbone.bus.ensure_streams(
        HotStoreSettings(settings.hot_retention_seconds, sizes.telemetry_max),
        EventStoreSettings(max_bytes=sizes.events_max),
    )
    return backbone


def mqtt_tls(settings: Settings) -> MqttTls | None:
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    return MqttTls(settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file)


async def _embedded_backbone(
    settings: Settings,
    subjects: Subjects,
    db: Database,
    sizes: StoreSizes,
    stack: AsyncExitStack,
) -> Backbone:
    nats = EmbeddedNats(
        EmbeddedNatsSettings(
            directory=settings.data_dir / "nats",
            client_port=settings.nats_port,
            mqtt_host=settings.mqtt_host,
            mqtt_port=settings.mqtt_listen_port,
            mqtt_tls=mqtt_tls(settings),
            max_store_bytes=sizes.jetstream_max,
            stalled_s=settings.broker_stall_timeout,
        ),
        subjects,
    )
    credentials = await asyncio.to_thread(db.devices.device_credentials)
    stack.push_async_callback(nats.stop)
    await nats.start([BrokerUser(c.username, c.password_hash) for c in credentials])
    login = NatsLogin(nats.client_url, PLATFORM_USER, nats.platform_password)
    bus = await Bus.connect(login.url, subjects, login.user, login.password)
    stack.push_async_callback(bus.close)
    # MQTT messages nats-server refuses by closing the connection become dead letters.
    oversize = OversizeReporter(bus, nats.settings.max_payload)
    # Failed logins and permission violations become security events (see bus/security.py).
    security = SecurityWatcher(bus)
    events = ConnectionEvents(
        nats.client_url,
        SYSTEM_USER,
        nats.system_password,
        oversize.on_closed,
        on_connected=security.connected,
    )
    await events.start()
    stack.push_async_callback(events.stop)
    security.lookup = events.user_of
    nats.on_refusal = security.refused
    security.start()
    stack.push_async_callback(security.stop)
    return Backbone(
        settings, db, bus, login, EmbeddedBrokerAuth(nats), nats, oversize, sizes, security
    )


def build_access(b: Backbone) -> AccessService:
    return AccessService(b.db.tenants)


@dataclass(frozen=True)
class IngestContext:
    limits: IngestLimits
    cache: RegistryCache
    intake: HttpIntake
    queries: TelemetryQueries
    historian: HistorianSupervisor
    bridge: MqttBridge | None  # only with FOGLINE_MQTT_URL
    retention: RetentionPolicies
    retention_job: RetentionJob


async def build_ingest(b: Backbone, stack: AsyncExitStack) -> IngestContext:
    s = b.settings
    limits = IngestLimits(max_message_bytes=s.max_message_bytes)
    cache = RegistryCache(b.db.assets, b.db.devices)
    await cache.follow(b.bus)
    historian = HistorianSupervisor(
        _historian_config(b),
        b.bus,
        progress_timeout_s=s.historian_progress_timeout,
        database_answers=DatabaseCheck(b.db).answers,
    )
    stack.push_async_callback(historian.stop)
    await historian.start()
    bridge = None
    if s.mqtt_url:
        bridge = MqttBridge(
            MqttEndpoint.parse(s.mqtt_url),
            b.bus,
            bridge_client_id(b.bus.subjects.root, s.data_dir),
            s.max_message_bytes,
        )
        stack.push_async_callback(bridge.stop)
        await bridge.start()
    defaults = s.retention_defaults
    retention_job = RetentionJob(
        b.db.retention,
        defaults,
        RetentionJobSettings(s.retention_interval, s.retention_batch_rows),
    )
    stack.push_async_callback(retention_job.stop)
    await retention_job.start()
    return IngestContext(
        limits,
        cache,
        HttpIntake(b.bus, cache, b.db.telemetry, limits),
        TelemetryQueries(b.db.assets, b.db.telemetry),
        historian,
        bridge,
        RetentionPolicies(b.db.retention, b.db.assets, defaults),
        retention_job,
    )


def _historian_config(b: Backbone) -> HistorianWorkerConfig:
    s = b.settings
    return HistorianWorkerConfig(
        nats_url=b.nats_login.url,
        nats_user=b.nats_login.user,
        nats_password=b.nats_login.password,
        subject_root=b.bus.subjects.root,
        database_url=s.effective_database_url,
        max_message_bytes=s.max_message_bytes,
        log_level=s.log_level,
    )


@dataclass(frozen=True)
class FleetContext:
    assets: AssetRegistry
    devices: DeviceRegistry
    security: SecurityLedger


async def build_fleet(b: Backbone, stack: AsyncExitStack) -> FleetContext:
    security = SecurityLedger(b.db.security, b.db.devices)
    subscription = await security.follow(b.bus)
    stack.push_async_callback(subscription.close)
    return FleetContext(
        AssetRegistry(b.db.assets, b.bus),
        DeviceRegistry(b.db.devices, b.broker_auth, b.bus),
        security,
    )


@dataclass(frozen=True)
class ModelsContext:
    registry: ModelRegistry
    mappings: ModelMappingService
    packages: PackageStore
    deployments: DeploymentManager


async def build_models(
    b: Backbone, callback_base: Callable[[], str], stack: AsyncExitStack
) -> ModelsContext:
    """The models context. Its deployments are not resumed here: async models call back on
    the HTTP address, so `DeploymentManager.recover` runs once the API listens."""
    s = b.settings
    local = LocalRuntime(
        LocalRuntimeSettings(
            s.runtime_dir,
            SandboxSettings(
                s.model_sandbox, s.model_uid_base, s.model_sandbox_bwrap, caps=s.model_limit_caps
            ),
            s.amqp_url,
            callback_base=callback_base,
        )
    )
    lifecycle = ModelLifecycle(b.db.models, b.bus)
    mappings = ModelMappingService(
        b.db.models, b.db.model_mappings, b.db.assets, b.db.telemetry, b.bus
    )
    packages = PackageStore(
        s.package_dir,
        b.db.models,
        PackageLimits(s.package_max_bytes, s.package_max_expanded_bytes, s.package_max_files),
    )
    runtimes: dict[str, Runtime] = {"local": local, "external": ExternalRuntime()}
    deployments = DeploymentManager(
        b.db.models,
        b.db.deployments,
        b.db.sagas,
        b.db.telemetry,
        mappings,
        b.bus,
        runtimes,
        packages,
        AmqpConnections(s.amqp_url),
        callback_base,
        lifecycle,
        SagaSettings(
            health_interval_s=s.model_health_interval,
            health_timeout_s=s.model_start_timeout,
            max_health_failures=s.model_max_health_failures,
            restart_limit=s.model_restart_limit,
            restart_window_s=s.model_restart_window,
            restart_backoff_cap_s=s.model_restart_backoff_cap,
            stable_s=s.model_stable_after,
            # A model's outputs are chunked under the limit the historian holds them to.
            companion=CompanionSettings(
                max_queue=s.model_queue_limit, max_message_bytes=s.max_message_bytes
            ),
        ),
    )
    subscription = await deployments.follow_changes(b.bus)
    stack.push_async_callback(subscription.close)
    registry = ModelRegistry(
        b.db.models,
        lifecycle,
        SecretBox.for_platform(s.data_dir, s.secret_key),
        s.model_limit_caps,
        on_removed=[packages.remove, local.purge],
    )
    return ModelsContext(registry, mappings, packages, deployments)
