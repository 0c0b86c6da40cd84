"""Health, readiness and the platform's own state."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field

from fogline.api.schemas.common import Out
from fogline.api.schemas.retention import RetentionJobOut
from fogline.ingest.queries import IngestSummary


class HealthOut(Out):
    status: Literal["ok"]
    version: str


class ReadyOut(Out):
    status: Literal["ready"]
    checks: dict[str, Any] = Field(
        description="each part (broker, database, historian, models...): `ok`, `problem` "
        "and its state"
    )
    warnings: list[str] = Field(
        default_factory=list,
        description="what is wrong without making the platform unready (a model failing)",
    )


class BridgeOut(Out):
    forwarded: int
    refused: int
    too_large: int
    paused: bool = Field(description="off the broker while the platform refuses data")


class ListenerOut(Out):
    name: str = Field(description="http, mqtt or nats")
    host: str
    port: int
    tls: bool
    client_certificates: bool = Field(
        default=False, description="devices must show a certificate (mutual TLS)"
    )


class PlatformOut(Out):
    """The whole platform, for an admin key: its processes, memory and counters."""

    # What the composition root adds to its report later is passed on as it is.
    model_config = ConfigDict(extra="allow")

    version: str
    pid: int
    uptime_s: float
    rss_mb: float | None
    http: str | None
    mqtt: str | None
    nats: str | None
    listeners: list[ListenerOut] = Field(description="what the platform listens on")
    nats_pid: int | None
    nats_rss_mb: float | None
    historian_pid: int | None
    historian_rss_mb: float | None
    historian_restarts: int
    database: str | None
    device_auth_enforced: bool
    bridge: BridgeOut | None = Field(description="the MQTT bridge's counters, when there is one")
    mqtt_over_limit_reported: int
    historian: dict[str, Any] | None = Field(description="the historian's counters")
    historian_health: dict[str, Any] | None
    hot_store: dict[str, Any] = Field(description="the telemetry stream, as JetStream sees it")
    retention: RetentionJobOut = Field(description="the SQL history's retention job")
    security: dict[str, Any] = Field(
        description="what nats-server refused (failed logins, denied publishes and "
        "subscriptions): `totals` per kind, `top_devices`, `unknown_users` (names that are no "
        'device\'s); `{"unavailable": true}` while the database is away'
    )


class TenantIngestOut(Out):
    devices: int
    messages: int
    values: int
    dead_letters: int

    @classmethod
    def of(cls, summary: IngestSummary) -> TenantIngestOut:
        return cls(
            devices=len(summary.devices),
            messages=summary.messages,
            values=summary.values,
            dead_letters=summary.dead_letters,
        )


class TenantSystemOut(Out):
    """A tenant's own view, for a tenant key: its ingest counters, nothing of the platform."""

    version: str
    tenant: str
    mqtt: str | None
    ingest: TenantIngestOut
    security: dict[str, Any] = Field(
        description="what nats-server refused the tenant's devices and user names: `totals` "
        "per kind, `top_devices`, `unknown_users`"
    )
