"""The historian: telemetry from the JetStream hot store into SQL, exactly once.

It pulls large batches from a durable consumer, validates them, commits values, dead letters,
device counters and the stream offset in one transaction, and only then acks (ack-all, so one
ack covers the batch). A crash before the commit redelivers the batch; a crash after the commit
but before the ack redelivers messages that the committed offset then skips, and the readings'
primary key ignores any value that still arrives twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import orjson
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from fogline.bus.connection import Bus
from fogline.domain.telemetry import DeadLetter, DeadLetterReason, DeviceActivity, Reading
from fogline.ingest.cache import RegistryCache
from fogline.ingest.validation import IngestLimits, MessageContext, validate_message
from fogline.store.telemetry import StreamOffset, TelemetryStore

log = logging.getLogger(__name__)

CONSUMER = "historian"


@dataclass
class HistorianStats:
    messages: int = 0
    values: int = 0
    dead_letters: int = 0
    batches: int = 0
    skipped_redeliveries: int = 0
    last_commit_ms: int | None = None
    last_error: str | None = None


@dataclass
class _Batch:
    """What one fetched batch turned into."""

    readings: list[Reading] = field(default_factory=list)
    values: int = 0
    dead_letters: list[DeadLetter] = field(default_factory=list)
    activity: list[DeviceActivity] = field(default_factory=list)
    live: list[tuple[str, bytes]] = field(default_factory=list)
    last_seq: int = 0
    messages: int = 0
    skipped: int = 0
    redelivered_only: bool = False


class Historian:
    def __init__(
        self,
        bus: Bus,
        store: TelemetryStore,
        cache: RegistryCache,
        limits: IngestLimits,
        batch_size: int = 2000,
    ) -> None:
        self.bus = bus
        self.store = store
        self.cache = cache
        self.limits = limits
        self.batch_size = batch_size
        self.stats = HistorianStats()
        self._offset: StreamOffset | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

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
        subjects = self.bus.subjects
        config = ConsumerConfig(
            durable_name=CONSUMER,
            ack_policy=AckPolicy.ALL,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=60,
            max_deliver=-1,
            max_ack_pending=100_000,
            max_waiting=16,
            filter_subjects=subjects.stream_subjects,
        )
        # Created or brought up to date (an older platform filtered devices only).
        await self.bus.js.add_consumer(subjects.telemetry_stream, config)
        self._sub = await self.bus.js.pull_subscribe(
            subjects.telemetry_filter,
            durable=CONSUMER,
            stream=subjects.telemetry_stream,
            config=config,
        )
        self._task = asyncio.create_task(self._run(), name="historian")

    @property
    def _consumer_name(self) -> str:
        return f"{self.bus.subjects.telemetry_stream}/{CONSUMER}"

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def _run(self) -> None:
        """Fetch, validate, commit, ack. Validation and the commit run on the event loop's own
        thread: the historian has a process of its own (see `worker.py`), and one thread avoids
        the GIL hand-offs that a worker thread costs on every SQL step."""
        while not self._stopping.is_set():
            try:
                msgs = await self._sub.fetch(self.batch_size, timeout=0.5)
            except (TimeoutError, NatsTimeoutError):
                continue
            except NatsError as exc:
                log.warning("historian.fetch_failed", extra={"fields": {"error": str(exc)}})
                await asyncio.sleep(0.5)
                continue
            if msgs:
                await self._commit_and_ack(self._prepare(msgs), msgs[-1])

    async def _commit_and_ack(self, batch: _Batch, last_msg: Any) -> None:
        delay = 0.2
        while True:
            try:
                self._commit(batch)
                break
            except Exception as exc:  # the database may be briefly away; keep the batch
                self.stats.last_error = str(exc)
                log.error("historian.commit_failed", extra={"fields": {"error": str(exc)}})
                if self._stopping.is_set():
                    return  # not acked: redelivered to the next run
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        try:
            await last_msg.ack()
        except NatsError as exc:  # the committed offset makes the redelivery harmless
            log.warning("historian.ack_failed", extra={"fields": {"error": str(exc)}})
        self._record(batch)
        for subject, payload in batch.live:
            await self.bus.nc.publish(subject, payload)

    def _record(self, batch: _Batch) -> None:
        s = self.stats
        s.messages += batch.messages
        s.values += batch.values
        s.dead_letters += len(batch.dead_letters)
        s.skipped_redeliveries += batch.skipped
        s.batches += 1
        s.last_commit_ms = int(time.time() * 1000)
        s.last_error = None

    def _prepare(self, msgs: list[Any]) -> _Batch:
        """Validate one batch into what will be committed and published."""
        batch = _Batch()
        activity: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
        live: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        subjects = self.bus.subjects
        committed = self._offset.last_seq if self._offset else 0
        for msg in msgs:
            meta = msg.metadata
            seq = meta.sequence.stream
            batch.last_seq = max(batch.last_seq, seq)
            if seq <= committed:
                batch.skipped += 1
                continue
            received_at = int(meta.timestamp.timestamp() * 1000)
            parsed = subjects.parse_source(msg.subject)
            if parsed is None:
                parts = msg.subject.split(".")
                refused = MessageContext(parts[1][:64], parts[3][:64], received_at, seq)
                batch.dead_letters.append(
                    refused.dead_letter(
                        DeadLetterReason.BAD_SHAPE,
                        f"subject {msg.subject!r} does not name a tenant and device by id",
                        None,
                    )
                )
                continue
            kind, tenant, source = parsed
            from_model = kind == "model"
            # A model's outputs are labelled "model:<name>" where a device id would be.
            device = f"model:{source}" if from_model else source
            ctx = MessageContext(tenant, device, received_at, seq, trusted_source=from_model)
            outcome = validate_message(ctx, msg.data, self.cache, self.limits)
            batch.messages += 1
            batch.readings.extend(outcome.readings)
            batch.values += outcome.value_count
            batch.dead_letters.extend(outcome.dead_letters)
            for reading in outcome.readings:
                live[(tenant, reading.asset)].append({"ts": reading.ts, "values": reading.values})
            if from_model:
                continue  # device counters are for devices
            counters = activity[(tenant, device)]
            counters[0] += 1
            counters[1] += outcome.value_count
            counters[2] += len(outcome.dead_letters)
            counters[3] = max(counters[3], received_at)
        # One live event per asset and batch: subscribers get every reading, and the bus is
        # spared a publish per message.
        batch.live = [
            (
                subjects.live(tenant, asset),
                orjson.dumps({"tenant": tenant, "asset": asset, "readings": readings}),
            )
            for (tenant, asset), readings in live.items()
        ]
        batch.activity = [
            DeviceActivity(t, d, c[0], c[1], c[2], c[3]) for (t, d), c in activity.items()
        ]
        batch.redelivered_only = batch.skipped == len(msgs)
        return batch

    def _commit(self, batch: _Batch) -> None:
        if batch.redelivered_only:
            return  # all of it was committed before a restart: nothing to write
        offset = StreamOffset(self._consumer_name, self.bus.telemetry_stream_id, batch.last_seq)
        self.store.commit_batch(batch.readings, batch.dead_letters, batch.activity, offset)
        self._offset = offset
