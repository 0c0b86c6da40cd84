"""The platform's connection to NATS and the streams it relies on."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import nats
from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from fogline.bus.errors import BrokerUnavailable
from fogline.bus.subjects import Subjects

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HotStoreSettings:
    """Retention of the telemetry stream, the hot store in front of the SQL historian."""

    max_age_seconds: float = 7 * 24 * 3600
    max_bytes: int = 5 * 1024**3


def redact_url(url: str) -> str:
    """A URL fit for a log line: credentials removed."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    _, at, host = rest.rpartition("@")
    return f"{scheme}://***@{host}" if at else url


class Bus:
    def __init__(self, nc: Client, subjects: Subjects) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self.subjects = subjects
        self.telemetry_stream_id = ""

    @classmethod
    async def connect(
        cls, url: str, subjects: Subjects, user: str | None = None, password: str | None = None
    ) -> Bus:
        async def on_error(exc: Exception) -> None:
            log.warning("nats.error", extra={"fields": {"error": str(exc)}})

        async def on_disconnected() -> None:
            if not nc.is_closed and not nc.is_draining:  # not our own close
                log.warning("nats.disconnected")

        async def on_reconnected() -> None:
            log.info("nats.reconnected")

        options: dict[str, Any] = {}
        if user is not None:
            options.update(user=user, password=password)
        try:
            nc = await nats.connect(
                url,
                name="fogline-platform",
                connect_timeout=5,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                error_cb=on_error,
                disconnected_cb=on_disconnected,
                reconnected_cb=on_reconnected,
                allow_reconnect=True,
                **options,
            )
        except (TimeoutError, NatsError, OSError) as exc:
            raise BrokerUnavailable(f"cannot connect to NATS at {redact_url(url)}: {exc}") from None
        return cls(nc, subjects)

    async def describe_streams(self) -> None:
        """Learn the telemetry stream's identity without changing it (the platform made it)."""
        try:
            info = await self.js.stream_info(self.subjects.telemetry_stream)
        except NatsError as exc:
            raise BrokerUnavailable(f"the telemetry stream is missing: {exc}") from None
        self._remember(info)

    def _remember(self, info: Any) -> None:
        created = info.created.isoformat() if info.created else "unknown"
        self.telemetry_stream_id = f"{info.config.name}@{created}"

    async def ensure_streams(self, hot: HotStoreSettings) -> None:
        config = StreamConfig(
            name=self.subjects.telemetry_stream,
            subjects=self.subjects.stream_subjects,
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=hot.max_age_seconds,
            max_bytes=hot.max_bytes,
            discard=DiscardPolicy.OLD,
            duplicate_window=120.0,
        )
        try:
            await self.js.stream_info(self.subjects.telemetry_stream)
            info = await self.js.update_stream(config)
        except NotFoundError:
            info = await self.js.add_stream(config)
        except NatsError as exc:
            raise BrokerUnavailable(f"JetStream is not available on this NATS: {exc}") from None
        # The creation time tells one incarnation of the stream from another.
        self._remember(info)

    async def close(self) -> None:
        """Flush what we published, then close. Not drain: draining a pull subscription waits
        out its pending fetch requests, up to half a minute."""
        if self.nc.is_closed:
            return
        with contextlib.suppress(NatsError, asyncio.TimeoutError):
            await self.nc.flush(timeout=2)
        await self.nc.close()
