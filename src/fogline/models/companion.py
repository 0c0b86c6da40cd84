"""The data companion: one per deployed model. It collects exactly the data the manifest asks
for, calls the model, and writes the model's outputs back as telemetry of the mapped assets.

- REAL_TIME: every committed reading of a mapped asset (the historian's live events), each
  completed with the asset's latest values of the other inputs, micro-batched: while a call is
  in flight, what arrives is gathered into the next one.
- TIME_WINDOW: windows on the readings' own timestamps (event time, `windows.py`): every
  committed reading of a mapped asset (the same live feed, so history replayed, readings
  backfilled through the API and a device's late store-and-forward go the same way) joins the
  windows of `timeWindowSize` ms, starting every `frequency` ms, that hold its time. Each asset
  is its own stream: a window closes when the asset's newest reading time minus
  `allowedLateness` passes its end, or when the asset sent nothing for `idleTimeout` ms, and
  the call carries the window's readings in time order with `window: {start, end}` (windows of
  several assets closing together with the same span share a call). A stateless model gets
  every reading of each window; a stateful one each reading once, in its first open window. A
  reading whose windows have all closed is dead-lettered as `late`, never dropped unseen; one
  more than a minute ahead of the wall clock as `future` (the watermark never passes the wall
  clock, so a clock that runs ahead cannot make the readings after it late). A window with no
  reading of its own (all in an earlier window) is not sent; each reading is counted once.
  Many readings dead-lettered late or future lately make the model degraded (`trouble`).
  Values are the reading's own (readings of an asset at one ts merge), never completed with
  other readings' values: the window is the same whatever order the readings came in.
- A stateful model gets one call at a time, in order; a stateless one up to the manifest's
  `concurrency`, which is also what the SDK's server runs at once: no call waits inside it.
- A synchronous model answers the call; an asynchronous one answers on the callback URL the
  companion gives it (or, over AMQP, on the reply queue); its call is in flight until then.

Every reading the companion accepts ends in exactly one state, counted per reading: scored,
dead-lettered with a reason (kept in the model's dead letters, one record per call or per batch
of drops), queued, or in flight. A call is never sent twice while the model may still be working
on it: after a timeout the model is restarted and the call retried once; a model that is down
gets the call once more when it is back; a model that answers with an error has seen the
readings, and they are dead-lettered at once. What is queued or in flight when the companion
stops is dead-lettered as discarded. The companion lives as long as the deployment: a model
restart pauses it (readings keep queueing) and resumes it with the new client.

- Outputs are checked value by value and published on the model version's outputs subject in
  the telemetry stream (`outputs.py`), so the historian validates, stores and streams them like
  any device's readings; an output may only be at the time of a reading of its call, and each
  refused value is a dead letter of its own (`refused-output`, with why).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import orjson

from fogline.bus.connection import Bus, Subscription
from fogline.domain.errors import Conflict, InvalidInput, Problem
from fogline.domain.models import LossReason, ModelDeadLetter, StaleRequest
from fogline.domain.timeseries import now_ms
from fogline.models.manifest import Trigger, TriggerType
from fogline.models.mappings import ResolvedAsset
from fogline.models.outputs import OutputRefusal, OutputWriter, RefusedOutput, allowed_timestamps
from fogline.models.runtimes.base import ModelSpec
from fogline.models.transport import (
    CallTimedOut,
    MalformedAnswer,
    ModelAnswered,
    ModelBusy,
    ModelCallFailed,
    ModelClient,
    ModelUnreachable,
)
from fogline.models.windows import FUTURE_MS, ClosedWindow, EventWindows
from fogline.store.deployments import DeploymentStore
from fogline.store.telemetry import TelemetryStore

log = logging.getLogger(__name__)

Resolver = Callable[[], Awaitable[list[ResolvedAsset]]]
RestartRequest = Callable[[str], None]
BUSY_BACKOFF_S = 0.05  # a busy model is asked again after this, doubled up to BUSY_BACKOFF_MAX_S
BUSY_BACKOFF_MAX_S = 1.0
UNREACHABLE_GRACE_S = 2.0  # how long a call waits for a restart before its one retry
FLUSH_S = 1.0  # dead letters are written to the database at most this often
PAYLOAD_READINGS = 20  # how many readings a dead letter keeps as a sample
PAYLOAD_BYTES = 4096
MAX_UNWRITTEN_LETTERS = 10_000  # kept in memory while the database is away
MAX_BACKFILL_SPAN_MS = 86_400_000  # a day of history per backfill
RECENT_READINGS = 100  # TIME_WINDOW: the last readings looked at for trouble (late en masse)
RECENT_S = 300.0  # ... within this many seconds
RECENT_TROUBLE = 0.5  # ... of which at least this share dead-lettered late or future is trouble
WRITTEN_MEMORY = 20_000  # (asset, ts) of the latest outputs written, to count overwrites
BACKFILL_PAGE = 1000  # readings read from the history at once by a backfill


class Batch(list[dict[str, Any]]):
    """The readings of one call, with how many of them the accounting counts there: a reading
    in several sliding windows is counted once, by its first window (the rest were counted by
    an earlier call)."""

    def __init__(self, readings: list[dict[str, Any]], counted: int) -> None:
        super().__init__(readings)
        self.counted = counted


def counted(readings: list[dict[str, Any]]) -> int:
    return readings.counted if isinstance(readings, Batch) else len(readings)


class StuckBusy(CallTimedOut):
    """The model refused a call as busy for longer than a call may take."""


@dataclass(frozen=True)
class CompanionSettings:
    max_batch: int = 500
    max_queue: int = 100_000
    # A backlog whose oldest reading has waited longer than this (or 3 x the call timeout, if
    # longer) makes the model degraded: it cannot keep up.
    backlog_age_s: float = 60.0
    # The platform's max_message_bytes: no chunk of outputs is larger (the historian would
    # refuse it whole).
    max_message_bytes: int = 256 * 1024


@dataclass
class CompanionStats:
    asset_count: int = 0
    received: int = 0  # readings of mapped inputs that arrived
    incomplete: int = 0  # held back: some input never seen yet for that asset
    calls: int = 0  # calls answered
    failures: int = 0  # calls that failed (each dead-letters its readings)
    timeouts: int = 0  # calls that got no answer in time (retried once after a restart)
    busy: int = 0  # calls the model refused as busy (sent again: it never started on them)
    scored: int = 0  # readings the model answered
    outputs: int = 0  # output values written back (acknowledged by the hot store)
    unmapped_outputs: int = 0
    refused_outputs: int = 0  # output values (or items) not written, unmapped ones included
    stale: int = 0  # asynchronous requests never answered in time
    pending: int = 0  # asynchronous requests waiting for their answer
    windows: int = 0  # TIME_WINDOW: windows closed and sent
    late: int = 0  # TIME_WINDOW: readings dead-lettered as late (all their windows had closed)
    future: int = 0  # TIME_WINDOW: readings dead-lettered as too far ahead of the wall clock
    covered_windows: int = 0  # TIME_WINDOW: windows not sent, every reading in an earlier one
    window_memberships: int = 0  # TIME_WINDOW: (reading, window) pairs sent (sliding overlap)
    outputs_overwritten: int = 0  # output items written where this companion wrote one before
    late_missed_windows: int = 0  # sliding windows a reading came too late for (it got others)
    merged: int = 0  # TIME_WINDOW: readings merged into one of the asset at the same ts
    last_call_ms: float | None = None
    last_error: str | None = None


@dataclass
class Accounting:
    """Where every reading the companion accepted is: accepted = scored + dead-lettered +
    queued + in flight, at any moment."""

    accepted: int = 0
    scored: int = 0
    in_flight: int = 0
    dead_lettered: Counter[str] = field(default_factory=Counter)

    def describe(self, queued: int, oldest_age_s: float | None) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "scored": self.scored,
            "dead_lettered": sum(self.dead_lettered.values()),
            "dead_lettered_by_reason": dict(self.dead_lettered),
            "queued": queued,
            "in_flight": self.in_flight,
            "oldest_queued_age_s": None if oldest_age_s is None else round(oldest_age_s, 3),
        }


@dataclass
class _Pending:
    """An asynchronous request waiting for its answer; it holds a call slot until then."""

    sent_at: int
    readings: list[dict[str, Any]]
    deadline: float
    sent: bool = False  # the call returned: from here only its answer or its going stale ends it


@dataclass
class _AssetState:
    mapping: ResolvedAsset
    latest: dict[str, Any] = field(default_factory=dict)  # input column -> latest value


@dataclass
class BackfillReport:
    """What a backfill did: readings read from the history, windows closed (TIME_WINDOW),
    calls answered, readings scored, outputs written (at the readings' own times), and what was
    lost: readings not scored and output values refused, each kept as a dead letter."""

    asset: str
    start: int
    end: int
    readings_read: int = 0
    incomplete: int = 0  # REAL_TIME: held back, some input not seen yet in the range
    windows: int = 0
    covered_windows: int = 0  # TIME_WINDOW: not sent, every reading in an earlier window
    calls: int = 0
    scored: int = 0  # readings, each once (sliding windows overlap)
    outputs_written: int = 0
    outputs_overwritten: int = 0  # output items at an (asset, time) this backfill wrote before
    refused_outputs: int = 0
    dead_lettered: int = 0  # readings whose call failed
    dead_letters: int = 0  # dead-letter records written (failed calls and refused outputs)


class ReadingQueue:
    """The readings waiting for a call, oldest first, bounded; each keeps when it came."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: deque[tuple[float, dict[str, Any]]] = deque()
        self._filled = asyncio.Event()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, reading: dict[str, Any]) -> bool:
        if len(self._items) >= self.capacity:
            return False
        self._items.append((time.monotonic(), reading))
        self._filled.set()
        return True

    async def take(self, most: int) -> list[dict[str, Any]]:
        """At least one reading (waiting for it), at most `most`."""
        while not self._items:
            self._filled.clear()
            await self._filled.wait()
        return self.take_now(most)

    def take_now(self, most: int | None = None) -> list[dict[str, Any]]:
        count = len(self._items) if most is None else min(most, len(self._items))
        return [self._items.popleft()[1] for _ in range(count)]

    def oldest_age_s(self) -> float | None:
        return time.monotonic() - self._items[0][0] if self._items else None


class Companion:
    def __init__(
        self,
        spec: ModelSpec,
        client: ModelClient,
        bus: Bus,
        telemetry: TelemetryStore,
        deployments: DeploymentStore,
        resolve: Resolver,
        callback_base: str | None,
        settings: CompanionSettings | None = None,
        request_restart: RestartRequest | None = None,
    ) -> None:
        self.spec = spec
        self.client = client
        self.bus = bus
        self.telemetry = telemetry
        self.deployments = deployments
        self.resolve = resolve
        self.settings = settings or CompanionSettings()
        # Asked when a call timed out: the model may still be working on it, so it is
        # restarted (by the health monitor) before the call is sent again.
        self.request_restart = request_restart or (lambda _reason: None)
        self.token = uuid.uuid4().hex + uuid.uuid4().hex
        self.callback_base = callback_base
        self.stats = CompanionStats()
        self.account = Accounting()
        m = spec.manifest
        self.trigger = m.trigger
        self.stateful = m.model.stateful
        self.is_async = m.model.is_async
        self.timeout_s = m.model.timeout_ms / 1000
        self.concurrency = 1 if self.stateful else m.model.concurrency
        self.outputs = OutputWriter(spec, bus, self.settings.max_message_bytes)
        self.since_ms = now_ms()
        self._windows = event_windows(self.trigger, self.stateful)
        self._closed: deque[ClosedWindow] = deque()  # closed windows waiting for their call
        self._closed_readings = 0
        self._window_ready = asyncio.Event()
        # (asset, late or future) -> such readings, to dead-letter
        self._late: dict[tuple[str, LossReason], list[dict[str, Any]]] = {}
        self._late_count: Counter[tuple[str, LossReason]] = Counter()
        # (when, late or future?) of the last readings: trouble when many were
        self._recent: deque[tuple[float, bool]] = deque(maxlen=RECENT_READINGS)
        self._written_at: deque[tuple[str, int]] = deque(maxlen=WRITTEN_MEMORY)
        self._written_set: Counter[tuple[str, int]] = Counter()
        self._assets: dict[str, _AssetState] = {}
        self._subscriptions: dict[str, Subscription] = {}
        self._queue = ReadingQueue(self.settings.max_queue)
        self._pending: dict[str, _Pending] = {}
        self._slots = asyncio.Semaphore(self.concurrency)
        self._tasks: list[asyncio.Task[None]] = []
        self._calls: set[asyncio.Task[None]] = set()
        self._refresh_lock = asyncio.Lock()
        self._usable = asyncio.Event()  # cleared while the model restarts
        self._usable.set()
        self._generation = 0  # the model's incarnation: one more at each restart
        self._restarted = asyncio.Condition()
        self._last_call_failed = False
        self._letters: list[ModelDeadLetter] = []
        self._overload = 0  # drops not yet written as a dead letter
        self._overload_sample: list[dict[str, Any]] = []
        self.unwritten_letters = 0  # dead letters lost because the database stayed away

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        await self.refresh()
        if self.trigger.type is TriggerType.REAL_TIME:
            self._spawn(self._send_loop(), "companion")
        else:
            self._spawn(self._window_send_loop(), "window")
            self._spawn(self._idle_loop(), "idle")
        if self.is_async:
            self._spawn(self._stale_loop(), "stale")
        self._spawn(self._flush_loop(), "dead-letters")

    def _spawn(self, work: Coroutine[Any, Any, None], what: str) -> None:
        self._tasks.append(asyncio.create_task(work, name=f"{what}-{self.spec.key}"))

    async def stop(self, why: str = "the model was stopped") -> None:
        """Stop feeding the model. What is queued, in flight or pending is dead-lettered as
        discarded, and every dead letter is written before this returns."""
        for sub in self._subscriptions.values():
            await sub.close()
        self._subscriptions.clear()
        loops = [t for t in self._tasks if not t.get_name().startswith("dead-letters")]
        for task in [*loops, *self._calls]:
            task.cancel()
        for task in [*loops, *self._calls]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        discarded = f"{why} while these readings waited for the model"
        queued = self._queue.take_now()
        self._lose(queued, LossReason.DISCARDED_AT_STOP, discarded, in_flight=False)
        if self._windows is not None:
            windows = [*self._closed, *self._windows.flush()]
            held = Batch([r for w in windows for r in w.readings], sum(w.new for w in windows))
            self._closed.clear()
            self._closed_readings = 0
            text = f"{why} while these readings waited for their window to close"
            self._lose(held, LossReason.DISCARDED_AT_STOP, text, in_flight=False)
        for request_id, pending in list(self._pending.items()):
            self._forget_pending(request_id)
            self._lose(pending.readings, LossReason.DISCARDED_AT_STOP, discarded, request_id)
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        await self._flush()

    def pause(self, why: str) -> None:
        """The model is being restarted: nothing is sent until `resume`. Asynchronous requests
        it had not answered never will be (the process that had them is gone)."""
        self._usable.clear()
        for request_id, pending in list(self._pending.items()):
            if not pending.sent:
                continue  # its call fails and is sent once more when the model is back
            self._forget_pending(request_id)
            self.stats.stale += 1
            reason = f"the model restarted before answering ({why})"
            self._lose(pending.readings, LossReason.MODEL_DOWN, reason, request_id)

    async def resume(self, client: ModelClient) -> None:
        self.client = client
        async with self._restarted:
            self._generation += 1
            self._restarted.notify_all()
        self._usable.set()

    async def refresh(self) -> None:
        """Follow the mappings: assets added to a mapped type are fed from now on, removed ones
        are let go. Called on start and whenever mappings or the registry change."""
        async with self._refresh_lock:
            resolved = {r.asset: r for r in await self.resolve() if r.inputs}
            for asset in set(self._assets) - set(resolved):
                del self._assets[asset]
                if self._windows is not None:
                    gone = self._windows.forget(asset)
                    held = Batch([r for w in gone for r in w.readings], sum(w.new for w in gone))
                    text = "the asset is no longer mapped to the model"
                    self._lose(held, LossReason.DISCARDED_AT_STOP, text, in_flight=False)
                sub = self._subscriptions.pop(asset, None)
                if sub is not None:
                    await sub.close()
            for asset, mapping in resolved.items():
                state = self._assets.get(asset)
                if state is None:
                    self._assets[asset] = _AssetState(mapping)
                else:
                    state.mapping = mapping
                if asset not in self._subscriptions:
                    self._subscriptions[asset] = await self.bus.subscribe_live(
                        self.spec.tenant, asset, self._on_live
                    )
            self.stats.asset_count = len(self._assets)

    @property
    def assets(self) -> list[str]:
        return sorted(self._assets)

    def trouble(self) -> str | None:
        """Why the model is not well as far as its calls show, or None: its last call failed,
        or its backlog waits too long."""
        if self._last_call_failed:
            return f"its last call failed: {self.stats.last_error}"
        age = self._queue.oldest_age_s()
        limit = max(self.settings.backlog_age_s, 3 * self.timeout_s)
        if age is not None and age > limit:
            return f"it cannot keep up: the oldest queued reading has waited {age:.0f} s"
        since = time.monotonic() - RECENT_S
        recent = [lost for at, lost in self._recent if at >= since]
        lost = sum(recent)
        if lost >= 10 and lost >= RECENT_TROUBLE * len(recent):
            return (
                f"{lost} of its last {len(recent)} readings were dead-lettered as late or "
                "future (see `fogline model dead-letters`): a device's clock is wrong, or its "
                "readings come after their windows closed"
            )
        return None

    # -- feeding: the live feed (both triggers) ---------------------------------------------

    async def _on_live(self, data: bytes) -> None:
        event = orjson.loads(data)
        state = self._assets.get(event.get("asset"))
        if state is None:
            return
        inputs = state.mapping.inputs
        for reading in event.get("readings", ()):
            values = reading.get("values", {})
            if self._windows is not None:
                own = {c: values[t] for c, t in inputs.items() if t in values}
                if own:  # not e.g. the model's own outputs, or telemetry it does not read
                    self.stats.received += 1
                    self._to_window(
                        {"asset": state.mapping.asset, "ts": reading["ts"], "values": own}
                    )
                continue
            seen = False
            for column, telemetry in inputs.items():
                if telemetry in values:
                    state.latest[column] = values[telemetry]
                    seen = True
            if not seen:
                continue  # e.g. the model's own outputs, or telemetry it does not read
            self.stats.received += 1
            if len(state.latest) < len(inputs):
                self.stats.incomplete += 1
                continue
            self._accept(
                {"asset": state.mapping.asset, "ts": reading["ts"], "values": dict(state.latest)}
            )

    def _accept(self, reading: dict[str, Any]) -> None:
        self.account.accepted += 1
        if self._queue.put(reading):
            return
        self._overloaded(reading)

    def _overloaded(self, reading: dict[str, Any]) -> None:
        self.account.dead_lettered[LossReason.OVERLOAD.value] += 1
        self._overload += 1
        if len(self._overload_sample) < PAYLOAD_READINGS:
            self._overload_sample.append(reading)
        if self._overload % 1000 == 1:
            log.warning("companion.queue_full", extra={"fields": {"model": self.spec.key}})

    async def _send_loop(self) -> None:
        while True:
            batch = await self._queue.take(self.settings.max_batch)
            self.account.in_flight += len(batch)
            await self._dispatch(batch, None)

    # -- feeding: TIME_WINDOW -------------------------------------------------------------

    def _to_window(self, reading: dict[str, Any]) -> None:
        assert self._windows is not None
        if self._queued() >= self.settings.max_queue:
            self.account.accepted += 1
            self._overloaded(reading)
            return
        added, closed = self._windows.add(reading, time.monotonic(), now_ms())
        self.stats.late_missed_windows += added.missed if added.windows else 0
        if added.merged:
            self.stats.merged += 1
        elif added.late or added.future:
            reason = LossReason.LATE if added.late else LossReason.FUTURE
            self.account.accepted += 1
            self.account.dead_lettered[reason.value] += 1
            if added.late:
                self.stats.late += 1
            else:
                self.stats.future += 1
            key = (reading["asset"], reason)
            self._late_count[key] += 1
            sample = self._late.setdefault(key, [])
            if len(sample) < PAYLOAD_READINGS:
                sample.append(reading)
        else:
            self.account.accepted += 1  # once, however many windows hold it
        self._recent.append((time.monotonic(), added.late or added.future))
        self._enqueue(closed)

    def _enqueue(self, closed: list[ClosedWindow]) -> None:
        for window in closed:
            self._closed.append(window)
            self._closed_readings += window.new
        if closed:
            self._window_ready.set()
        assert self._windows is not None
        self.stats.covered_windows = self._windows.covered_windows

    async def _idle_loop(self) -> None:
        assert self._windows is not None
        tick = min(1.0, self.trigger.idle_ms / 4000)
        while True:
            await asyncio.sleep(tick)
            self._enqueue(self._windows.idle(time.monotonic()))

    async def _window_send_loop(self) -> None:
        """Closed windows to calls, in the order they closed; windows of several assets with
        the same span go in one call, up to `max_batch` readings (a window is never split)."""
        while True:
            while not self._closed:
                self._window_ready.clear()
                await self._window_ready.wait()
            first = self._closed.popleft()
            together, new = list(first.readings), first.new
            while (
                self._closed
                and (self._closed[0].start, self._closed[0].end) == (first.start, first.end)
                and len(together) + len(self._closed[0].readings) <= self.settings.max_batch
            ):
                window = self._closed.popleft()
                together += window.readings
                new += window.new
            readings = Batch(together, new)
            self._closed_readings -= new
            self.stats.windows += 1
            self.stats.window_memberships += len(readings)
            self.account.in_flight += new
            await self._dispatch(readings, {"start": first.start, "end": first.end})

    # -- calling the model ----------------------------------------------------------------

    async def _dispatch(
        self, readings: list[dict[str, Any]], window: dict[str, int] | None
    ) -> None:
        """Send once a call slot is free: one for a stateful model (the stream stays in
        order), `concurrency` for a stateless one. The readings are in flight from here."""
        try:
            await self._slots.acquire()
        except asyncio.CancelledError:
            self._lose(readings, LossReason.DISCARDED_AT_STOP, "the model was stopped")
            raise
        if self.stateful:
            await self._call(readings, window)
            return
        task = asyncio.create_task(self._call(readings, window))
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)

    def _request(
        self, request_id: str, readings: list[dict[str, Any]], window: dict[str, int] | None
    ) -> bytes:
        callback = None
        if self.is_async and self.callback_base:
            callback = f"{self.callback_base}/{self.token}/{request_id}"
        return orjson.dumps(
            {
                "request_id": request_id,
                "model": self.spec.name,
                "version": self.spec.version,
                "trigger": self.trigger.type.value,
                "stateful": self.stateful,
                "window": window,
                "callback_url": callback,
                "readings": readings,
            }
        )

    async def _call(self, readings: list[dict[str, Any]], window: dict[str, int] | None) -> None:
        """One call, holding a slot. Each reading leaves `in flight` as scored or dead-lettered.
        An asynchronous request is pending (and holds the slot) from before it is sent, since
        its answer may come before the call returns, until its answer comes or it goes stale."""
        if self.is_async:
            await self._call_async(readings, window)
            return
        request_id = uuid.uuid4().hex
        try:
            try:
                answer = await self._send(request_id, self._request(request_id, readings, window))
            except asyncio.CancelledError:
                reason = "the model was stopped"
                self._lose(readings, LossReason.DISCARDED_AT_STOP, reason, request_id)
                raise
            except ModelCallFailed as exc:
                self._failed(request_id, readings, exc)
                return
            # Scored from here: a stop while its outputs are written does not lose them twice.
            await self._answered(request_id, readings, answer)
        finally:
            self._slots.release()

    async def _call_async(
        self, readings: list[dict[str, Any]], window: dict[str, int] | None
    ) -> None:
        request_id = uuid.uuid4().hex
        pending = _Pending(now_ms(), readings, time.monotonic() + self.timeout_s)
        self._pending[request_id] = pending  # the slot is the pending request's from here
        self.stats.pending = len(self._pending)
        try:
            await self._send(request_id, self._request(request_id, readings, window))
        except asyncio.CancelledError:
            if self._forget_pending(request_id) is not None:
                reason = "the model was stopped"
                self._lose(readings, LossReason.DISCARDED_AT_STOP, reason, request_id)
            raise
        except ModelCallFailed as exc:
            if self._forget_pending(request_id) is not None:
                self._failed(request_id, readings, exc)
            return
        pending.sent = True
        pending.deadline = time.monotonic() + self.timeout_s

    async def _send(self, request_id: str, body: bytes) -> Any:
        """The call, sent again only when that is safe: the model refused it as busy (it never
        started on it), or once more after the model was restarted or came back. Raises the
        last failure."""
        busy_wait = BUSY_BACKOFF_S
        busy_since: float | None = None
        retried = False
        while True:
            await self._usable.wait()
            generation = self._generation
            started = time.perf_counter()
            try:
                answer = await self.client.score(
                    request_id, body, self.timeout_s, not self.is_async
                )
            except ModelBusy as busy:
                self.stats.busy += 1
                busy_since = busy_since or time.monotonic()
                if time.monotonic() - busy_since < self.timeout_s:
                    await asyncio.sleep(busy_wait)
                    busy_wait = min(busy_wait * 2, BUSY_BACKOFF_MAX_S)
                    continue
                # Busy for longer than a call may take: stuck on something (a call it was
                # timed out on, or it never serves): as good as a timeout.
                busy_since = None
                exc = StuckBusy(
                    f"the model refused every call as busy for {self.timeout_s:g} s "
                    f"({busy.message})"
                )
                if not await self._after_timeout_or_down(exc, generation, retried):
                    raise exc from None
                retried = True
                continue
            except (CallTimedOut, ModelUnreachable) as failed:
                if not await self._after_timeout_or_down(failed, generation, retried):
                    raise
                retried = True
                continue
            self.stats.last_call_ms = round((time.perf_counter() - started) * 1000, 2)
            return answer

    async def _after_timeout_or_down(
        self, exc: ModelCallFailed, generation: int, retried: bool
    ) -> bool:
        """After a call timed out (the model is restarted: it may still be working on it, or
        be stuck) or found no model: True once it is back and the call may be sent once more;
        False when it was sent once more already."""
        if isinstance(exc, CallTimedOut):
            self.stats.timeouts += 1
            self.request_restart(
                exc.message
                if isinstance(exc, StuckBusy)
                else f"a call got no answer within {self.timeout_s:g} s; the model may still "
                "be working on it"
            )
        if retried:
            return False
        grace = None if isinstance(exc, CallTimedOut) else UNREACHABLE_GRACE_S
        await self._restarted_since(generation, grace)
        return True

    async def _restarted_since(self, generation: int, grace_s: float | None) -> None:
        """Until the model was restarted after `generation` (or, with a grace, until that has
        passed: a model that is up again without a restart), and is usable."""
        async with self._restarted:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._restarted.wait_for(lambda: self._generation > generation), grace_s
                )
        await self._usable.wait()

    async def _answered(self, request_id: str, readings: list[dict[str, Any]], answer: Any) -> None:
        if not isinstance(answer, dict) or not isinstance(answer.get("outputs"), list):
            exc = MalformedAnswer("the model's answer has no 'outputs' list")
            self._failed(request_id, readings, exc)
            return
        self.stats.calls += 1
        self._last_call_failed = False
        self.account.in_flight -= counted(readings)
        self.account.scored += counted(readings)
        self.stats.scored += counted(readings)
        await self._write(request_id, readings, answer)

    def _failed(
        self, request_id: str, readings: list[dict[str, Any]], exc: ModelCallFailed
    ) -> None:
        self.stats.failures += 1
        self.stats.last_error = exc.message
        self._last_call_failed = True
        self._lose(readings, _loss_reason(exc), exc.message, request_id)

    # -- backfill -------------------------------------------------------------------------

    async def backfill(
        self, asset: str, start: int, end: int, stateful_ok: bool = False
    ) -> BackfillReport:
        """Run the model over the stored history of `asset` in [start, end), as live: event-time
        windows (every window that overlaps the range, whole) or the readings in order, each
        completed with the asset's latest values within the range (REAL_TIME). Outputs are
        written as telemetry at the readings' own times. Reads a page at a time."""
        state = self._assets.get(asset)
        if state is None:
            mapped = ", ".join(self.assets) or "none"
            raise InvalidInput.of(
                [Problem("asset", f"{asset!r} is not mapped to this model (mapped: {mapped})")]
            )
        if self.is_async:
            raise Conflict(
                "an asynchronous model answers on a callback; backfill runs synchronous models only"
            )
        if self.stateful and not stateful_ok:
            raise Conflict(
                f"model {self.spec.name} {self.spec.version} is stateful: a backfill runs on "
                "the live process, so its state would learn these old readings in the middle "
                "of the live stream (polluting what it scores live from now on), and the past "
                "outputs would be scored from today's state, not as they were live; pass "
                "stateful_ok (CLI: --stateful-ok) to run it anyway"
            )
        report = BackfillReport(asset, start, end)
        windows = event_windows(self.trigger, self.stateful)
        read_from, read_to = start, end
        if windows is not None:
            read_from = windows.starts_of(start)[0]  # whole windows at the edges
            read_to = windows.starts_of(end - 1)[-1] + windows.size
        inputs, latest = state.mapping.inputs, {}
        written: set[tuple[str, int]] = set()  # (asset, ts) of the outputs it wrote
        batch: list[dict[str, Any]] = []
        after: int | None = None
        while True:
            page = await asyncio.to_thread(
                self.telemetry.readings_page,
                self.spec.tenant,
                asset,
                read_from,
                read_to,
                after,
                BACKFILL_PAGE,
            )
            for row in page:
                own = {c: row.values[t] for c, t in inputs.items() if t in row.values}
                if not own:
                    continue
                if start <= row.ts < end:
                    report.readings_read += 1
                if windows is not None:
                    reading = {"asset": asset, "ts": row.ts, "values": own}
                    for window in windows.add(reading, 0.0)[1]:
                        await self._backfill_window(window, report, written)
                    continue
                latest.update(own)
                if len(latest) < len(inputs):
                    report.incomplete += 1
                    continue
                batch.append({"asset": asset, "ts": row.ts, "values": dict(latest)})
                if len(batch) >= self.settings.max_batch:
                    await self._backfill_call(batch, None, report, written)
                    batch = []
            if len(page) < BACKFILL_PAGE:
                break
            after = page[-1].ts
        if batch:
            await self._backfill_call(batch, None, report, written)
        for window in [] if windows is None else windows.flush():
            await self._backfill_window(window, report, written)
        if windows is not None:
            report.covered_windows = windows.covered_windows
        await self._flush()
        return report

    async def _backfill_window(
        self, window: ClosedWindow, report: BackfillReport, written: set[tuple[str, int]]
    ) -> None:
        if window.end <= report.start or window.start >= report.end:
            return  # read only to complete the windows at the edges
        report.windows += 1
        await self._backfill_call(
            Batch(window.readings, window.new),
            {"start": window.start, "end": window.end},
            report,
            written,
        )

    async def _backfill_call(
        self,
        readings: list[dict[str, Any]],
        window: dict[str, int] | None,
        report: BackfillReport,
        written: set[tuple[str, int]],
    ) -> None:
        """One call of a backfill, holding a call slot like a live one (a stateful model's
        calls stay one at a time). A failed call is one dead letter; nothing is retried beyond
        what a live call is."""
        await self._slots.acquire()
        try:
            request_id = uuid.uuid4().hex
            try:
                answer = await self._send(request_id, self._request(request_id, readings, window))
                if not isinstance(answer, dict) or not isinstance(answer.get("outputs"), list):
                    raise MalformedAnswer("the model's answer has no 'outputs' list")
            except ModelCallFailed as exc:
                report.dead_lettered += counted(readings)
                report.dead_letters += 1
                text = f"backfill: {exc.message}"
                self._keep(self._letter(readings, _loss_reason(exc), text, request_id))
                return
            report.calls += 1
            report.scored += counted(readings)
            mappings = {asset: s.mapping for asset, s in self._assets.items()}
            result = await self.outputs.write(answer, allowed_timestamps(readings), mappings)
            report.outputs_written += result.written
            for key in result.written_at:
                report.outputs_overwritten += key in written
                written.add(key)
            for refusal in result.refused:
                report.refused_outputs += 1
                report.dead_letters += 1
                self._keep(self._refused_letter(request_id, refusal))
        finally:
            self._slots.release()

    async def on_answer(self, request_id: str, answer: dict[str, Any]) -> bool:
        """An asynchronous model's answer. False when the request is unknown or went stale."""
        pending = self._forget_pending(request_id)
        if pending is None:
            return False
        await self._answered(request_id, pending.readings, answer)
        return True

    def _forget_pending(self, request_id: str) -> _Pending | None:
        pending = self._pending.pop(request_id, None)
        if pending is not None:
            self._slots.release()
            self.stats.pending = len(self._pending)
        return pending

    async def _stale_loop(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self.timeout_s / 2))
            now = time.monotonic()
            for request_id, p in list(self._pending.items()):
                if not p.sent or p.deadline > now or self._forget_pending(request_id) is None:
                    continue
                self.stats.stale += 1
                self.stats.timeouts += 1
                # The model may still be working on it, or be stuck: the next request must
                # find a process that is not.
                self.request_restart(
                    f"an asynchronous request got no answer within {self.timeout_s:g} s"
                )
                stale = StaleRequest(request_id, len(p.readings), p.sent_at, now_ms())
                self._failed(
                    request_id,
                    p.readings,
                    CallTimedOut(f"no answer on the callback within {self.timeout_s:g} s"),
                )
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(
                        self.deployments.record_stale, self.spec.model_id, stale
                    )

    # -- dead letters ---------------------------------------------------------------------

    def _lose(
        self,
        readings: list[dict[str, Any]],
        reason: LossReason,
        text: str,
        request_id: str | None = None,
        in_flight: bool = True,
    ) -> None:
        """Readings that will not be scored: counted at once, kept as one dead letter.
        `in_flight`: they had left the queue (False: taken from the queue to be discarded)."""
        if not readings:
            return
        if in_flight:
            self.account.in_flight -= counted(readings)
        self.account.dead_lettered[reason.value] += counted(readings)
        self._keep(self._letter(readings, reason, text, request_id))
        log.warning(
            "companion.readings_lost",
            extra={
                "fields": {
                    "model": self.spec.key,
                    "reason": reason.value,
                    "readings": counted(readings),
                    "detail": text[:300],
                }
            },
        )

    def _letter(
        self,
        readings: list[dict[str, Any]],
        reason: LossReason,
        text: str,
        request_id: str | None,
    ) -> ModelDeadLetter:
        one = readings[0] if len(readings) == 1 else None
        return ModelDeadLetter(
            tenant=self.spec.tenant,
            model_id=self.spec.model_id,
            at=now_ms(),
            reason_code=reason,
            reason=text[:2000],
            readings=counted(readings),
            request_id=request_id,
            asset=one["asset"] if one else None,
            ts=one["ts"] if one else None,
            payload=_sample(readings),
        )

    def _keep(self, letter: ModelDeadLetter) -> None:
        if len(self._letters) >= MAX_UNWRITTEN_LETTERS:
            self._letters.pop(0)
            self.unwritten_letters += 1
        self._letters.append(letter)

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_S)
            await self._flush()

    async def _flush(self) -> None:
        """Write the dead letters kept since the last flush (drops on overload as one)."""
        if self._overload:
            text = (
                f"the companion's queue was full ({self.settings.max_queue} readings): the "
                "model is slower than its input"
            )
            letter = self._letter(self._overload_sample, LossReason.OVERLOAD, text, None)
            self._keep(replace(letter, readings=self._overload))
            self._overload, self._overload_sample = 0, []
        for (asset, reason), late in self._late.items():
            count = self._late_count.pop((asset, reason))
            if reason is LossReason.LATE:
                text = (
                    f"{count} readings of {asset} came after every window holding them had "
                    f"closed (more than allowedLateness {self.trigger.lateness_ms} ms behind "
                    "the asset's newest reading, or after its windows closed on idleTimeout)"
                )
            else:
                text = (
                    f"{count} readings of {asset} were more than {FUTURE_MS // 1000} s ahead "
                    "of the platform's clock: the device's clock is wrong; they would close "
                    "windows that have not happened yet"
                )
            letter = self._letter(late, reason, text, None)
            self._keep(replace(letter, readings=count))
        self._late.clear()
        letters, self._letters = self._letters, []
        if not letters:
            return
        try:
            await asyncio.to_thread(self.deployments.record_dead_letters, letters)
        except Exception as exc:  # the database may be away: kept for the next flush
            self._letters = letters + self._letters
            log.warning(
                "companion.dead_letters_not_written",
                extra={"fields": {"model": self.spec.key, "error": str(exc)[:300]}},
            )

    def readings(self) -> dict[str, Any]:
        """Where the readings it accepted are (see `Accounting`): waiting in a window still
        open, or in a closed one not yet sent, counts as queued."""
        return self.account.describe(self._queued(), self._queue.oldest_age_s())

    def _queued(self) -> int:
        held = 0 if self._windows is None else self._windows.held_readings
        return len(self._queue) + held + self._closed_readings

    def describe(self) -> dict[str, Any]:
        return {
            **asdict(self.stats),
            "dropped": self.account.dead_lettered[LossReason.OVERLOAD.value],
            "concurrency": self.concurrency,
            "since_ms": self.since_ms,
            "readings": self.readings(),
            "windowing": None
            if self._windows is None
            else {
                "allowed_lateness_ms": self.trigger.lateness_ms,
                "idle_timeout_ms": self.trigger.idle_ms,
                "open_windows": self._windows.open_windows(),
            },
            "dead_letters_unwritten": len(self._letters) + self.unwritten_letters,
            "assets": self.assets,
        }

    # -- outputs --------------------------------------------------------------------------

    async def _write(
        self, request_id: str, readings: list[dict[str, Any]], answer: dict[str, Any]
    ) -> None:
        """Write the answer's outputs, at the times of `readings` only; each value refused is a
        dead letter of its own."""
        mappings = {asset: state.mapping for asset, state in self._assets.items()}
        result = await self.outputs.write(answer, allowed_timestamps(readings), mappings)
        self.stats.outputs += result.written
        self.stats.outputs_overwritten += self._overwrites(result.written_at)
        for refusal in result.refused:
            self.stats.refused_outputs += 1
            if refusal.reason_code == OutputRefusal.UNMAPPED:
                self.stats.unmapped_outputs += 1
            elif refusal.reason_code == OutputRefusal.PUBLISH_FAILED:
                self.stats.last_error = refusal.reason
            self._keep(self._refused_letter(request_id, refusal))

    def _overwrites(self, written_at: list[tuple[str, int]]) -> int:
        """How many of the output items just written are at an (asset, time) this companion
        wrote an output at before (among the latest WRITTEN_MEMORY): each replaced it."""
        again = 0
        for key in written_at:
            if self._written_set[key]:
                again += 1
            if len(self._written_at) == self._written_at.maxlen:
                old = self._written_at[0]
                self._written_set[old] -= 1
                if not self._written_set[old]:
                    del self._written_set[old]
            self._written_at.append(key)
            self._written_set[key] += 1
        if again:
            log.warning(
                "companion.outputs_overwritten",
                extra={"fields": {"model": self.spec.key, "items": again}},
            )
        return again

    def _refused_letter(self, request_id: str, refusal: RefusedOutput) -> ModelDeadLetter:
        return ModelDeadLetter(
            tenant=self.spec.tenant,
            model_id=self.spec.model_id,
            at=now_ms(),
            reason_code=LossReason.REFUSED_OUTPUT,
            reason=refusal.reason[:2000],
            readings=0,
            detail_code=refusal.reason_code,
            request_id=request_id,
            asset=refusal.asset,
            ts=refusal.ts,
            column=refusal.column,
            payload=refusal.value,
        )


def _loss_reason(exc: ModelCallFailed) -> LossReason:
    if isinstance(exc, CallTimedOut):
        return LossReason.TIMEOUT
    if isinstance(exc, MalformedAnswer):
        return LossReason.MALFORMED_ANSWER
    if isinstance(exc, ModelAnswered):
        return LossReason.MODEL_ERROR
    return LossReason.MODEL_DOWN


def event_windows(trigger: Trigger, stateful: bool) -> EventWindows | None:
    """The event-time windows of a TIME_WINDOW trigger (None for REAL_TIME)."""
    if trigger.type is not TriggerType.TIME_WINDOW:
        return None
    assert trigger.frequency is not None and trigger.time_window_size is not None
    return EventWindows(
        trigger.time_window_size,
        trigger.frequency,
        trigger.lateness_ms,
        trigger.idle_ms,
        each_once=stateful,
    )


def _sample(readings: list[dict[str, Any]]) -> str:
    """The first readings as JSON, clipped: enough to see what was lost."""
    text = orjson.dumps(readings[:PAYLOAD_READINGS]).decode()
    return text if len(text) <= PAYLOAD_BYTES else text[: PAYLOAD_BYTES - 1] + "…"
