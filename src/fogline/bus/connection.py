"""The platform's connection to NATS: the only holder of the client. Contexts reach the bus
through the typed methods of `Bus` (telemetry in, model outputs, the live feed, the durable
pull of the telemetry stream, platform events), never through the raw client."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription
from nats.errors import ConnectionClosedError, StaleConnectionError
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import (
    APIError,
    BucketNotFoundError,
    KeyNotFoundError,
    NoKeysError,
    NotFoundError,
    ServiceUnavailableError,
)
from nats.js.kv import KeyValue

from fogline.bus.errors import BrokerUnavailable, PublishFateUnknown, PublishNotStored
from fogline.bus.events import (
    EventHandler,
    EventType,
    PlatformEvent,
    StoredEvent,
    decode_event,
    encode_event,
)
from fogline.bus.pull import BoundedPull
from fogline.bus.subjects import Subjects
from fogline.retry import Backoff, retrying, wait_until

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HotStoreSettings:
    """Retention of the telemetry stream, the hot store in front of the SQL historian."""

    max_age_seconds: float = 7 * 24 * 3600
    max_bytes: int = 5 * 1024**3


@dataclass(frozen=True)
class EventStoreSettings:
    """Retention of the platform-events stream: long enough to replay a month of changes."""

    max_age_seconds: float = 30 * 24 * 3600
    max_bytes: int = 256 * 1024**2


@dataclass(frozen=True)
class PublishAck:
    seq: int
    duplicate: bool


DataHandler = Callable[[bytes], Awaitable[None]]
# How long a publisher waits for this process's own subscribers to have handled its event:
# what a context changed is then seen by every other context here when its call returns.
LOCAL_DELIVERY_S = 5.0
# A telemetry publish (HTTP ingest) is tried again under its message id until this deadline:
# JetStream answers `duplicate` when an earlier try was stored, so the caller learns the fate.
TELEMETRY_PUBLISH_DEADLINE_S = 10.0
TELEMETRY_PUBLISH_TRY_S = 3.0
# How long the telemetry stream remembers message ids: a client retrying with the same
# `Idempotency-Key` within this time stores its readings once (docs/telemetry.md says so).
TELEMETRY_DUPLICATE_WINDOW_S = 600.0
# An event publish rides out JetStream being away for a moment (a config reload re-applying
# accounts): 0.1 s, then twice as long each time, about 3 s in all.
EVENT_PUBLISH_ATTEMPTS = 6


class Subscription:
    """A subscription a context holds; `close` ends it (and never raises)."""

    def __init__(self, sub: NatsSubscription, on_close: Callable[[], None] | None = None) -> None:
        self._sub = sub
        self._on_close = on_close

    async def close(self) -> None:
        on_close, self._on_close = self._on_close, None  # once, however often it is called
        if on_close is not None:
            on_close()
        with contextlib.suppress(NatsError):
            await self._sub.unsubscribe()


class KeyValueBucket:
    """A JetStream KV bucket: the latest value per key, kept with the stream's durability
    (the place for state such as a device twin's desired and reported state)."""

    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    async def get(self, key: str) -> bytes | None:
        """The key's value, or None when it was never put or was deleted."""
        try:
            entry = await self._kv.get(key)
        except KeyNotFoundError:
            return None
        return entry.value

    async def put(self, key: str, value: bytes) -> int:
        """Store the value; returns its revision (increasing across the bucket)."""
        return int(await self._kv.put(key, value))

    async def delete(self, key: str) -> None:
        await self._kv.delete(key)

    async def keys(self) -> list[str]:
        try:
            return sorted(await self._kv.keys())
        except NoKeysError:
            return []


class _LocalEventSubscription:
    """An event subscription of this process: publishers here wait until it has handled
    their event (see LOCAL_DELIVERY_S)."""

    def __init__(self, handler: EventHandler, types: frozenset[str] | None) -> None:
        self.handler = handler
        self.types = types
        self.waiting: dict[str, asyncio.Future[None]] = {}

    def wants(self, event: PlatformEvent) -> bool:
        return self.types is None or event.type in self.types

    def expect(self, event_id: str) -> asyncio.Future[None]:
        future = asyncio.get_running_loop().create_future()
        self.waiting[event_id] = future
        return future

    async def deliver(self, event: PlatformEvent) -> None:
        try:
            await self.handler(event)
        except Exception:
            log.exception("events.handler_failed", extra={"fields": {"type": event.type}})
        finally:
            future = self.waiting.pop(event.id, None)
            if future is not None and not future.done():
                future.set_result(None)


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
        self._local_events: list[_LocalEventSubscription] = []

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

    @property
    def connected(self) -> bool:
        return bool(self.nc.is_connected)

    @property
    def max_payload(self) -> int:
        """The largest message the server takes (what it told us when we connected)."""
        return int(self.nc.max_payload)

    async def ensure_streams(
        self, hot: HotStoreSettings, events: EventStoreSettings | None = None
    ) -> None:
        await self._ensure_telemetry_stream(hot)
        await self._ensure_stream(self._events_config(events or EventStoreSettings()))

    def _events_config(self, events: EventStoreSettings) -> StreamConfig:
        return StreamConfig(
            name=self.subjects.events_stream,
            subjects=[self.subjects.events_filter()],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=events.max_age_seconds,
            max_bytes=events.max_bytes,
            discard=DiscardPolicy.OLD,
            duplicate_window=120.0,  # an event published twice (a retried publish) is kept once
        )

    async def _ensure_stream(self, config: StreamConfig) -> Any:
        try:
            await self.js.stream_info(config.name or "")
            return await self.js.update_stream(config)
        except NotFoundError:
            return await self.js.add_stream(config)
        except NatsError as exc:
            raise BrokerUnavailable(f"JetStream is not available on this NATS: {exc}") from None

    async def _ensure_telemetry_stream(self, hot: HotStoreSettings) -> None:
        config = StreamConfig(
            name=self.subjects.telemetry_stream,
            subjects=self.subjects.stream_subjects,
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=hot.max_age_seconds,
            max_bytes=hot.max_bytes,
            discard=DiscardPolicy.OLD,
            duplicate_window=TELEMETRY_DUPLICATE_WINDOW_S,
        )
        # The creation time tells one incarnation of the stream from another.
        self._remember(await self._ensure_stream(config))

    # -- telemetry, model outputs, the historian's pull ------------------------------------

    async def publish_telemetry(
        self,
        tenant: str,
        device: str,
        payload: bytes,
        msg_id: str,
        deadline_s: float | None = None,
    ) -> PublishAck:
        """Into the hot store, as a device's MQTT publish would be, under `msg_id`.

        A try that gets no answer (a timeout, a connection that dropped) is tried again under
        the same id until `deadline_s`: the stream keeps the message once and answers
        `duplicate` when an earlier try was stored (`deadline_s`: by default
        TELEMETRY_PUBLISH_DEADLINE_S). Raises PublishNotStored when surely nothing was stored,
        PublishFateUnknown when that could not be learned in time."""
        return await self._publish_stored(
            self.subjects.telemetry(tenant, device), payload, msg_id, deadline_s
        )

    async def publish_model_outputs(
        self,
        tenant: str,
        model: str,
        version: str,
        payload: bytes,
        msg_id: str,
        deadline_s: float | None = None,
    ) -> PublishAck:
        """A data companion writes its model's outputs back as telemetry: tried again under
        the same `msg_id` as `publish_telemetry` is, and raising what it raises."""
        return await self._publish_stored(
            self.subjects.model_outputs(tenant, model, version), payload, msg_id, deadline_s
        )

    async def _publish_stored(
        self, subject: str, payload: bytes, msg_id: str, deadline_s: float | None
    ) -> PublishAck:
        """Publish into a stream, tried again under `msg_id` until stored or `deadline_s`."""
        headers = {"Nats-Msg-Id": msg_id}
        deadline_s = TELEMETRY_PUBLISH_DEADLINE_S if deadline_s is None else deadline_s
        deadline = asyncio.get_running_loop().time() + deadline_s
        backoff = Backoff(0.1, 1.0)
        in_doubt = False  # a try may have been stored without our hearing of it
        while True:
            left = deadline - asyncio.get_running_loop().time()
            try:
                ack = await self.js.publish(
                    subject,
                    payload,
                    headers=headers,
                    timeout=max(0.1, min(TELEMETRY_PUBLISH_TRY_S, left)),
                )
                return PublishAck(ack.seq, bool(ack.duplicate))
            except (
                NatsTimeoutError,
                TimeoutError,
                StaleConnectionError,
                ConnectionClosedError,
            ) as exc:
                in_doubt = True  # sent, perhaps stored, answer lost
                error: Exception = exc
                log.warning(
                    "bus.telemetry_publish_unanswered",
                    extra={"fields": {"subject": subject, "error": repr(exc)}},
                )
            except NatsError as exc:  # JetStream refused it, or nothing took it: not stored
                error = exc
                if isinstance(exc, APIError) and exc.code != 503:
                    break  # a refusal for good (not "JetStream is away for a moment")
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0 or self.nc.is_closed:  # closed: this process is stopping
                break
            await asyncio.sleep(min(backoff.next(), left))
        log.warning(
            "bus.telemetry_publish_failed",
            extra={"fields": {"subject": subject, "in_doubt": in_doubt, "error": repr(error)}},
        )
        if in_doubt:
            raise PublishFateUnknown(
                f"no answer from the hot store within {deadline_s:g} s ({error})"
            )
        raise PublishNotStored(f"the hot store did not take it ({error})")

    async def telemetry_stream_state(self) -> dict[str, Any]:
        """The telemetry stream as JetStream sees it; "unavailable" while JetStream's API is
        away for a moment (a reload re-applying accounts when a device was added)."""

        async def stream_info() -> Any:
            try:
                return await self.js.stream_info(self.subjects.telemetry_stream)
            except (ServiceUnavailableError, TimeoutError):
                return None

        try:
            info = await wait_until(stream_info, 3.0, interval_s=0.1)
        except (NatsError, OSError):  # the broker away: disconnected, closed, no responders
            info = None
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

    async def telemetry_pull(
        self, consumer: str, start_seq: int | None, max_ack_pending: int = 100_000
    ) -> BoundedPull:
        """The durable consumer of everything the telemetry stream takes in, made afresh to
        start at `start_seq` (the beginning when None), acked cumulatively."""
        stream = self.subjects.telemetry_stream
        config = ConsumerConfig(
            durable_name=consumer,
            ack_policy=AckPolicy.ALL,
            deliver_policy=DeliverPolicy.ALL
            if start_seq is None
            else DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=start_seq,
            ack_wait=60,
            max_deliver=-1,
            max_ack_pending=max_ack_pending,
            max_waiting=16,
            filter_subjects=self.subjects.stream_subjects,
        )
        with contextlib.suppress(NotFoundError):
            await self.js.delete_consumer(stream, consumer)
        await self.js.add_consumer(stream, config)
        return await BoundedPull.create(self.nc, stream, consumer)

    async def consumer_backlog(self, consumer: str, timeout: float = 2.0) -> int | None:
        """Messages of the telemetry stream a durable consumer has yet to ack (not delivered,
        or delivered and not acked), as JetStream counts them; None when it does not answer
        within `timeout` (the broker away, or the consumer being made afresh)."""
        try:
            info = await self.js.consumer_info(
                self.subjects.telemetry_stream, consumer, timeout=timeout
            )
        except (NatsError, TimeoutError, OSError):
            return None
        return int(info.num_pending or 0) + int(info.num_ack_pending or 0)

    # -- the live feed and the historian's counters (core NATS: fire and forget) -----------

    async def publish_live(self, tenant: str, asset: str, payload: bytes) -> None:
        await self.nc.publish(self.subjects.live(tenant, asset), payload)

    async def subscribe_live(self, tenant: str, asset: str, on_data: DataHandler) -> Subscription:
        return await self._subscribe_data(self.subjects.live(tenant, asset), on_data)

    async def publish_historian_stats(self, payload: bytes) -> None:
        await self.nc.publish(self.subjects.historian_stats, payload)

    async def subscribe_historian_stats(self, on_data: DataHandler) -> Subscription:
        return await self._subscribe_data(self.subjects.historian_stats, on_data)

    async def _subscribe_data(self, subject: str, on_data: DataHandler) -> Subscription:
        async def on_message(msg: Msg) -> None:
            await on_data(msg.data)

        return Subscription(await self.nc.subscribe(subject, cb=on_message))

    # -- key-value buckets --------------------------------------------------------------------

    async def key_value(self, name: str, history: int = 1) -> KeyValueBucket:
        """The installation's bucket `name`, made on first use (file storage; `history`
        values kept per key)."""
        bucket = self.subjects.kv_bucket(name)
        try:
            kv = await self.js.key_value(bucket)
        except BucketNotFoundError:
            kv = await self.js.create_key_value(
                KeyValueConfig(bucket=bucket, history=history, storage=StorageType.FILE)
            )
        return KeyValueBucket(kv)

    # -- platform events ------------------------------------------------------------------

    async def publish_event(self, event: PlatformEvent) -> None:
        """Store the event in the events stream; return once this process's own subscribers
        have handled it. A stream that stays away is logged (the change itself is already
        committed by its owner) and this process's subscribers are told directly."""
        local = [sub for sub in self._local_events if sub.wants(event)]
        waits = [sub.expect(event.id) for sub in local]
        subject = self.subjects.event(event.tenant, event.type)
        try:
            await self._publish_durably(subject, encode_event(event), event.id)
        except (NatsError, TimeoutError) as exc:
            log.error(
                "events.publish_failed",
                extra={"fields": {"type": event.type, "id": event.id, "error": str(exc)}},
            )
            for sub in local:
                await sub.deliver(event)
            return
        if waits:
            _, late = await asyncio.wait(waits, timeout=LOCAL_DELIVERY_S)
            if late:
                log.warning("events.local_delivery_slow", extra={"fields": {"type": event.type}})
                for sub in local:  # not waited for any longer
                    sub.waiting.pop(event.id, None)

    async def _publish_durably(self, subject: str, data: bytes, msg_id: str) -> None:
        # Retried under its id: the stream keeps an event published twice only once.
        async for attempt in retrying(EVENT_PUBLISH_ATTEMPTS, 0.1, (NatsError, TimeoutError)):
            with attempt:
                await self.js.publish(subject, data, headers={"Nats-Msg-Id": msg_id}, timeout=2)

    async def subscribe_events(
        self, handler: EventHandler, types: Iterable[EventType] | None = None
    ) -> Subscription:
        """New events (of `types`, or all) as they are published, by any process. Events of
        this process are handled before their publisher's call returns."""
        wanted = None if types is None else frozenset(str(t) for t in types)
        local = _LocalEventSubscription(handler, wanted)

        async def on_message(msg: Msg) -> None:
            try:
                event = decode_event(msg.data)
            except ValueError as exc:  # a newer platform's event: not ours to understand
                log.warning("events.undecodable", extra={"fields": {"error": str(exc)}})
                return
            if local.wants(event):
                await local.deliver(event)

        sub = await self.nc.subscribe(self.subjects.events_filter(), cb=on_message)
        self._local_events.append(local)
        return Subscription(sub, lambda: self._local_events.remove(local))

    async def read_events(
        self,
        after_seq: int = 0,
        tenant: str | None = None,
        types: Iterable[EventType] | None = None,
        limit: int = 1000,
    ) -> list[StoredEvent]:
        """Up to `limit` stored events after `after_seq`, oldest first."""
        found: list[StoredEvent] = []
        async for stored in self._replay(after_seq, tenant, types, follow=False):
            found.append(stored)
            if len(found) >= limit:
                break
        return found

    async def follow_events(
        self,
        after_seq: int = 0,
        tenant: str | None = None,
        types: Iterable[EventType] | None = None,
    ) -> AsyncIterator[StoredEvent]:
        """Stored events after `after_seq`, then new ones as they come, until the caller
        stops iterating."""
        async for stored in self._replay(after_seq, tenant, types, follow=True):
            yield stored

    async def _replay(
        self,
        after_seq: int,
        tenant: str | None,
        types: Iterable[EventType] | None,
        follow: bool,
    ) -> AsyncIterator[StoredEvent]:
        stream = self.subjects.events_stream
        # Each type once: JetStream refuses a consumer whose filters overlap.
        wanted = sorted({str(t) for t in types or ()})
        filters = [self.subjects.events_filter(tenant, t) for t in wanted]
        filters = filters or [self.subjects.events_filter(tenant)]
        name = self.nc.new_inbox().rsplit(".", 1)[-1]
        config = ConsumerConfig(
            name=name,
            ack_policy=AckPolicy.NONE,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=after_seq + 1,
            filter_subjects=filters,
            inactive_threshold=60.0,  # gone on its own should we not delete it
            mem_storage=True,
        )
        await self.js.add_consumer(stream, config)
        pull = await BoundedPull.create(self.nc, stream, name)
        try:
            while True:
                if follow:  # what there is, else the first to come within a second
                    msgs = await pull.fetch(256, 4 * 1024 * 1024, 1.0)
                else:
                    msgs = await pull.fetch_available(256, 4 * 1024 * 1024)
                for msg in msgs:
                    try:
                        event = decode_event(msg.data)
                    except ValueError:
                        continue
                    yield StoredEvent(msg.metadata.sequence.stream, event)
                if not msgs and not follow:
                    return
        finally:
            await pull.close()
            with contextlib.suppress(NatsError, TimeoutError):
                await self.js.delete_consumer(stream, name)

    async def close(self) -> None:
        """Flush what we published, then close. Not drain: draining a pull subscription waits
        out its pending fetch requests, up to half a minute."""
        if self.nc.is_closed:
            return
        if self.nc.is_connected:  # while reconnecting, a flush would only wait out its timeout
            with contextlib.suppress(NatsError, asyncio.TimeoutError):
                await self.nc.flush(timeout=2)
        try:
            await self.nc.close()
        except (NatsError, OSError, RuntimeError) as exc:
            # The server went first (killed, say): the socket is gone, and with it what was not
            # flushed; the client is closed all the same. One line, not a traceback.
            log.warning(
                "nats.closed_unclean",
                extra={"fields": {"error": f"{type(exc).__name__}: {exc}"[:200]}},
            )
