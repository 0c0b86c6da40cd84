"""The historian: telemetry from the JetStream hot store into SQL, exactly once.

It pulls batches (bounded in messages and in bytes) from a durable consumer, validates them,
commits values, dead letters, device counters and the stream offset in one transaction, and
only then acks (ack-all, so one ack covers the batch). A crash before the commit redelivers the
batch; a crash after the commit but before the ack redelivers messages that the committed
offset then skips, and the readings' primary key ignores any value that still arrives twice.
The offset is checked inside the commit's transaction too: a commit whose answer was lost (the
database went away during COMMIT) is found committed when retried, and is neither written nor
counted again.

No input can stop it:
- live events are split so that none is over the size limit;
- a batch whose commit fails while the database is writable is split in halves, down to the
  one message that fails, which becomes an `unprocessable` dead letter; a database that is
  away is waited for, without splitting;
- anything else that goes wrong restarts the loop from the committed offset (the durable
  consumer is made again there), and the worker process restarts the historian if the loop
  ever ends; every failure is logged and counted in the stats the platform shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from fogline.bus.connection import Bus
from fogline.bus.errors import BrokerUnavailable, BusError
from fogline.bus.pull import BoundedPull
from fogline.bus.refusals import refusal_of
from fogline.domain.telemetry import (
    DeadLetter,
    DeadLetterReason,
    DeviceActivity,
    Reading,
    SourceKind,
)
from fogline.ingest.cache import DeviceTelemetry, RegistryCache
from fogline.ingest.validation import (
    IngestLimits,
    MessageContext,
    Outcome,
    clip_payload,
    validate_message,
)
from fogline.retry import Backoff
from fogline.store.telemetry import AlreadyCommitted, StreamOffset, TelemetryStore

log = logging.getLogger(__name__)

CONSUMER = "historian"
# A batch is at most this many bytes of messages (or one message of up to max_payload):
# enough for 2,000 typical messages, and a bound on memory and on one commit's time.
FETCH_MAX_BYTES = 4 * 1024 * 1024
# Live events are split above this size (and are never over the server's max_payload).
LIVE_EVENT_BYTES = 256 * 1024
# Attempts at a one-message batch, with the database writable, before it is a dead letter.
POISON_ATTEMPTS = 3
MAX_BACKOFF_S = 5.0


def _now_ms() -> int:
    return int(time.time() * 1000)


def describe_error(exc: BaseException) -> str:
    """One line about an error, for stats and logs: the driver's own message, not SQLAlchemy's
    rendering (which carries the statement and every parameter, that is tenants' data)."""
    cause = getattr(exc, "orig", None) or exc
    text = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
    text = f"{type(cause).__name__}: {text}" if text else type(cause).__name__
    return text if len(text) <= 300 else text[:300] + "…"


@dataclass
class HistorianStats:
    messages: int = 0
    values: int = 0
    dead_letters: int = 0
    batches: int = 0
    skipped_redeliveries: int = 0
    last_commit_ms: int | None = None
    last_error: str | None = None  # what the batch in hand failed with; None once it commits
    failures: int = 0  # failed attempts of any step: fetch, commit, live publish, the loop
    last_failure: str | None = None  # the newest failure, kept after recovery
    last_failure_ms: int | None = None
    failing_since_ms: int | None = None  # the batch in hand has failed since then
    poison_messages: int = 0  # messages that could not be stored, kept as dead letters
    loop_restarts: int = 0  # the loop started over from the committed offset
    live_events: int = 0
    live_failures: int = 0
    backlog: int | None = None  # messages left in the hot store after the last fetch
    heartbeat_ms: int | None = None  # the loop's last turn


@dataclass
class _Batch:
    """What one fetched batch turned into."""

    readings: list[Reading] = field(default_factory=list)
    values: int = 0
    dead_letters: list[DeadLetter] = field(default_factory=list)
    activity: list[DeviceActivity] = field(default_factory=list)
    live: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    first_seq: int | None = None  # the first message not committed before
    last_seq: int = 0
    messages: int = 0
    skipped: int = 0
    redelivered_only: bool = False


@dataclass
class _DevicesInBatch:
    """The telemetry devices wrote in a batch so far, per asset. Indexed only when a model's
    message comes, from where it was left: a batch of devices' readings costs nothing here."""

    names: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    indexed: int = 0

    def catch_up(self, readings: list[Reading]) -> None:
        for r in readings[self.indexed :]:
            if r.source is SourceKind.DEVICE:
                self.names.setdefault((r.tenant, r.asset), set()).update(r.values)
        self.indexed = len(readings)


class _Stopping(Exception):
    """The historian was asked to stop while a batch could not be committed: it is not acked,
    and the next start gets it again."""


def live_events(
    tenant: str, asset: str, readings: list[dict[str, Any]], limit: int
) -> Iterator[bytes]:
    """One asset's readings as live events of at most `limit` bytes each (a single reading
    larger than that goes alone), in order."""
    payload = orjson.dumps({"tenant": tenant, "asset": asset, "readings": readings})
    if len(payload) <= limit or len(readings) == 1:
        yield payload
        return
    # Parts sized from this first try, so most of them are written once more only.
    parts = min(len(readings), math.ceil(len(payload) / (limit * 0.9)))
    step = math.ceil(len(readings) / parts)
    for start in range(0, len(readings), step):
        yield from live_events(tenant, asset, readings[start : start + step], limit)


class Historian:
    def __init__(
        self,
        bus: Bus,
        store: TelemetryStore,
        cache: RegistryCache,
        limits: IngestLimits,
        batch_size: int = 2000,
        live_event_bytes: int = LIVE_EVENT_BYTES,
    ) -> None:
        self.bus = bus
        self.store = store
        self.cache = cache
        self.device_telemetry = DeviceTelemetry(store, cache)
        self.limits = limits
        self.batch_size = batch_size
        self.stats = HistorianStats()
        # Any stored message must fit a batch, or the consumer could never move past it.
        self.fetch_max_bytes = max(FETCH_MAX_BYTES, bus.max_payload + 64 * 1024)
        self.live_event_bytes = min(live_event_bytes, bus.max_payload - 4096)
        self._offset: StreamOffset | None = None
        self._pull: BoundedPull | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._task

    async def start(self) -> None:
        self._offset = self.store.read_offset(self._consumer_name)
        if self._offset is not None and self._offset.stream_id != self.bus.telemetry_stream_id:
            log.warning(
                "historian.stream_replaced",
                extra={
                    "fields": {"was": self._offset.stream_id, "now": self.bus.telemetry_stream_id}
                },
            )
            self._offset = None
        await self._subscribe()
        self._task = asyncio.create_task(self._run(), name="historian")

    async def _subscribe(self) -> None:
        """The durable consumer, made afresh at the committed offset. Messages an earlier run
        fetched but did not commit come again at once (not after an ack wait), and cannot be
        covered by an ack-all of later messages."""
        start = self._offset.last_seq + 1 if self._offset is not None else None
        if self._pull is not None:
            await self._pull.close()
            self._pull = None
        self._pull = await self.bus.telemetry_pull(CONSUMER, start)

    @property
    def _consumer_name(self) -> str:
        return f"{self.bus.subjects.telemetry_stream}/{CONSUMER}"

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            await self._task
            self._task = None

    # -- the loop -------------------------------------------------------------------------

    async def _run(self) -> None:
        """Fetch, validate, commit, ack. Validation and the commit run on the event loop's own
        thread: the historian has a process of its own (see `worker.py`), and one thread avoids
        the GIL hand-offs that a worker thread costs on every SQL step."""
        backoff = Backoff(0.5, MAX_BACKOFF_S)
        while not self._stopping.is_set():
            try:
                await self._turn()
                backoff.reset()
            except _Stopping:
                return
            except Exception as exc:  # a failure no step handled: start over, never stop
                self._failed("loop", exc, exc_info=True)
                self.stats.loop_restarts += 1
                await self._pause(backoff.next())
                try:
                    await self._subscribe()
                except Exception as again:  # NATS away: the next turn tries again
                    self._failed("resubscribe", again)

    async def _turn(self) -> None:
        self.stats.heartbeat_ms = _now_ms()
        assert self._pull is not None
        try:
            msgs = await self._pull.fetch(self.batch_size, self.fetch_max_bytes, timeout=0.5)
        except (BusError, BrokerUnavailable) as exc:
            self._failed("fetch", exc, level=logging.WARNING)
            await self._pause(0.5)
            return
        self._recovered()  # nothing is failing while the loop can fetch
        if not msgs:
            self.stats.backlog = 0
            return
        last = msgs[-1]
        self.stats.backlog = last.metadata.num_pending
        await self._store(msgs)
        try:
            await last.ack()
        except BusError as exc:  # the committed offset makes the redelivery harmless
            log.warning("historian.ack_failed", extra={"fields": {"error": str(exc)}})

    async def _store(self, msgs: list[Any]) -> None:
        """Commit these messages, or split them until the one that cannot be committed is
        found; then publish their live events."""
        attempts = 0
        backoff = Backoff(0.2, MAX_BACKOFF_S)
        while True:
            try:
                batch = self._prepare(msgs)
                self._commit(batch)
                break
            except AlreadyCommitted as done:
                # Committed before (its answer was lost): prepared again, what the database
                # holds is skipped and not counted twice.
                log.warning(
                    "historian.already_committed",
                    extra={"fields": {"committed_seq": done.stored.last_seq}},
                )
                self._offset = done.stored
                self.device_telemetry.forget()  # what that commit held was not learned
                continue
            except Exception as exc:
                self._failed("commit", exc)
                if self._stopping.is_set():
                    raise _Stopping from None
                if not self._database_writable():
                    # The database is away or locked: no message is to blame. Keep the batch.
                    await self._pause(backoff.next())
                    continue
                attempts += 1
                if len(msgs) > 1:
                    middle = len(msgs) // 2
                    log.warning(
                        "historian.batch_split",
                        extra={"fields": {"messages": len(msgs), "error": describe_error(exc)}},
                    )
                    await self._store(msgs[:middle])
                    await self._store(msgs[middle:])
                    return
                if attempts < POISON_ATTEMPTS:
                    await self._pause(backoff.next())
                    continue
                await self._store_poison(msgs[0], exc)
                return
        self._recovered()
        self._record(batch)
        self.device_telemetry.learn(batch.readings)
        await self._publish_live(batch)

    async def _store_poison(self, msg: Any, exc: Exception) -> None:
        """A message that passed validation but cannot be committed: kept as a dead letter, so
        everything after it can be."""
        meta = msg.metadata
        seq = meta.sequence.stream
        received_at = int(meta.timestamp.timestamp() * 1000)
        ctx = self._context(msg.subject, received_at, seq)
        letter = ctx.dead_letter(
            DeadLetterReason.UNPROCESSABLE,
            f"this message could not be stored: {describe_error(exc)}",
            clip_payload(msg.data),
        )
        batch = _Batch(dead_letters=[letter], first_seq=seq, last_seq=seq, messages=1)
        if not ctx.trusted_source:
            batch.activity = [DeviceActivity(ctx.tenant, ctx.device, 1, 0, 1, received_at)]
        log.error(
            "historian.poison_message",
            extra={"fields": {"stream_seq": seq, "subject": msg.subject}},
        )
        backoff = Backoff(0.2, MAX_BACKOFF_S)
        while True:
            try:
                self._commit(batch)
                break
            except AlreadyCommitted as done:  # kept before, by a commit whose answer was lost
                self._offset = done.stored
                self._recovered()
                return
            except Exception as again:
                self._failed("commit", again)
                if self._stopping.is_set():
                    raise _Stopping from None
                await self._pause(backoff.next())
        self.stats.poison_messages += 1
        self._recovered()
        self._record(batch)

    def _database_writable(self) -> bool:
        try:
            self.store.check_writable()
        except Exception as exc:
            log.warning(
                "historian.database_unavailable", extra={"fields": {"error": describe_error(exc)}}
            )
            return False
        return True

    async def _pause(self, seconds: float) -> None:
        """Wait, unless asked to stop; the heartbeat shows the loop is alive meanwhile."""
        self.stats.heartbeat_ms = _now_ms()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
        self.stats.heartbeat_ms = _now_ms()

    def _failed(
        self, step: str, exc: BaseException, level: int = logging.ERROR, exc_info: bool = False
    ) -> None:
        s = self.stats
        text = describe_error(exc)
        s.failures += 1
        s.last_error = text
        s.last_failure = f"{step}: {text}"
        s.last_failure_ms = _now_ms()
        if s.failing_since_ms is None:
            s.failing_since_ms = s.last_failure_ms
        log.log(
            level,
            f"historian.{step}_failed",
            extra={"fields": {"error": text, "failures": s.failures}},
            exc_info=exc_info,
        )

    def _recovered(self) -> None:
        s = self.stats
        if s.failing_since_ms is not None:
            log.info(
                "historian.recovered",
                extra={"fields": {"after_ms": _now_ms() - s.failing_since_ms}},
            )
        s.failing_since_ms = None
        s.last_error = None

    async def _publish_live(self, batch: _Batch) -> None:
        """One live event per asset and batch (or several, each under the size limit):
        subscribers get every reading, and the bus is spared a publish per message."""
        for (tenant, asset), readings in batch.live.items():
            for payload in live_events(tenant, asset, readings, self.live_event_bytes):
                try:
                    await self.bus.publish_live(tenant, asset, payload)
                    self.stats.live_events += 1
                except BusError as exc:
                    self.stats.live_failures += 1
                    self._failed("live_publish", exc)

    def _record(self, batch: _Batch) -> None:
        s = self.stats
        s.messages += batch.messages
        s.values += batch.values
        s.dead_letters += len(batch.dead_letters)
        s.skipped_redeliveries += batch.skipped
        s.batches += 1
        s.last_commit_ms = _now_ms()

    def _context(self, subject: str, received_at: int, seq: int) -> MessageContext:
        parsed = self.bus.subjects.parse_source(subject)
        if parsed is None:
            parts = (subject.split(".") + ["?"] * 5)[:5]
            return MessageContext(parts[1][:64], parts[3][:64], received_at, seq)
        kind, tenant, source = parsed
        if kind is SourceKind.MODEL:
            # A model's outputs are labelled "model:<name>@<version>" where a device id would
            # be (the subject carries the version).
            return MessageContext(tenant, f"model:{source}", received_at, seq, trusted_source=True)
        return MessageContext(tenant, source, received_at, seq)

    def _prepare(self, msgs: list[Any]) -> _Batch:
        """Validate one batch into what will be committed and published."""
        batch = _Batch()
        activity: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
        live: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        subjects = self.bus.subjects
        committed = self._offset.last_seq if self._offset else 0
        devices = _DevicesInBatch()
        for msg in msgs:
            meta = msg.metadata
            seq = meta.sequence.stream
            batch.last_seq = max(batch.last_seq, seq)
            if seq <= committed:
                batch.skipped += 1
                continue
            if batch.first_seq is None:
                batch.first_seq = seq
            received_at = int(meta.timestamp.timestamp() * 1000)
            if subjects.parse_source(msg.subject) is None:
                refused = self._context(msg.subject, received_at, seq)
                batch.dead_letters.append(
                    refused.dead_letter(
                        DeadLetterReason.BAD_SHAPE,
                        f"subject {msg.subject!r} does not name a tenant and device by id",
                        None,
                    )
                )
                continue
            ctx = self._context(msg.subject, received_at, seq)
            refusal = refusal_of(msg.headers)
            if refusal is not None and not ctx.trusted_source:
                # Refused before it reached the stream whole (see bus/refusals.py).
                letter = ctx.dead_letter(
                    DeadLetterReason.TOO_LARGE, refusal, clip_payload(msg.data) or None
                )
                batch.messages += 1
                batch.dead_letters.append(letter)
                counters = activity[(ctx.tenant, ctx.device)]
                counters[0] += 1
                counters[2] += 1
                counters[3] = max(counters[3], received_at)
                continue
            outcome = validate_message(ctx, msg.data, self.cache, self.limits)
            if ctx.trusted_source and outcome.readings:
                devices.catch_up(batch.readings)
                self._refuse_device_telemetry(ctx, outcome, devices)
            batch.messages += 1
            batch.readings.extend(outcome.readings)
            batch.values += outcome.value_count
            batch.dead_letters.extend(outcome.dead_letters)
            for reading in outcome.readings:
                live[(ctx.tenant, reading.asset)].append(
                    {"ts": reading.ts, "values": reading.values}
                )
            if ctx.trusted_source:
                continue  # device counters are for devices
            counters = activity[(ctx.tenant, ctx.device)]
            counters[0] += 1
            counters[1] += outcome.value_count
            counters[2] += len(outcome.dead_letters)
            counters[3] = max(counters[3], received_at)
        batch.live = live
        batch.activity = [
            DeviceActivity(t, d, c[0], c[1], c[2], c[3]) for (t, d), c in activity.items()
        ]
        batch.redelivered_only = batch.skipped == len(msgs)
        return batch

    def _refuse_device_telemetry(
        self, ctx: MessageContext, outcome: Outcome, devices: _DevicesInBatch
    ) -> None:
        """A model's values of telemetry that a device writes on that asset (before, or
        earlier in this batch) are refused: a model never overwrites a device's readings."""
        kept: list[Reading] = []
        for reading in outcome.readings:
            key = (reading.tenant, reading.asset)
            owned = self.device_telemetry.of(*key)
            in_batch = devices.names.get(key, ())
            clash = [n for n in reading.values if n in owned or n in in_batch]
            if not clash:
                kept.append(reading)
                continue
            for name in clash:
                outcome.dead_letters.append(
                    ctx.dead_letter(
                        DeadLetterReason.DEVICE_TELEMETRY,
                        f"a device writes {name!r} on asset {reading.asset!r}; a model's output "
                        "never replaces a device's telemetry",
                        clip_payload(orjson.dumps({name: reading.values[name]})),
                        asset=reading.asset,
                        telemetry=name,
                    )
                )
            outcome.value_count -= len(clash)
            values = {n: v for n, v in reading.values.items() if n not in clash}
            if values:
                kept.append(reading._replace(values=values))
        outcome.readings = kept

    def _commit(self, batch: _Batch) -> None:
        if batch.redelivered_only:
            return  # all of it was committed before a restart: nothing to write
        offset = StreamOffset(self._consumer_name, self.bus.telemetry_stream_id, batch.last_seq)
        self.store.commit_batch(
            batch.readings, batch.dead_letters, batch.activity, offset, batch.first_seq
        )
        self._offset = offset
