"""The data companion: one per deployed model. It collects exactly the data the manifest asks
for, calls the model, and writes the model's outputs back as telemetry of the mapped assets.

- REAL_TIME: every committed reading of a mapped asset (the historian's live events), each
  completed with the asset's latest values of the other inputs, micro-batched: while a call is
  in flight, what arrives is gathered into the next one.
- TIME_WINDOW: every `frequency` ms, the last `timeWindowSize` ms of the mapped telemetry from
  the history.
- A stateful model gets the stream: one call at a time, in order, and in TIME_WINDOW only the
  readings it has not seen. A stateless model gets self-contained batches (the whole window),
  up to `concurrency` calls at once.
- A synchronous model answers the call; an asynchronous one answers on the callback URL the
  companion gives it (or, over AMQP, on the reply queue); an answer that does not come within
  `timeoutMs` is recorded as a stale request.
- Outputs are checked value by value and published on the model version's outputs subject in
  the telemetry stream (`outputs.py`), so the historian validates, stores and streams them like
  any device's readings; an output may only be at the time of a reading of its request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from fogline.bus.connection import Bus, Subscription
from fogline.domain.errors import FoglineError
from fogline.domain.models import StaleRequest
from fogline.domain.timeseries import now_ms
from fogline.models.manifest import TriggerType
from fogline.models.mappings import ResolvedAsset
from fogline.models.outputs import (
    Allowed,
    OutputRefusal,
    OutputWriter,
    allowed_timestamps,
)
from fogline.models.runtimes.base import ModelSpec
from fogline.models.transport import ModelClient
from fogline.retry import retrying
from fogline.store.deployments import DeploymentStore
from fogline.store.telemetry import TelemetryStore

log = logging.getLogger(__name__)

Resolver = Callable[[], Awaitable[list[ResolvedAsset]]]
CALL_BACKOFF_S = 0.1  # before a call's second attempt, doubled before each next


@dataclass(frozen=True)
class CompanionSettings:
    max_batch: int = 500
    max_queue: int = 100_000
    concurrency: int = 4  # stateless models only
    call_attempts: int = 3
    # The platform's max_message_bytes: no chunk of outputs is larger (the historian would
    # refuse it whole).
    max_message_bytes: int = 256 * 1024


@dataclass
class CompanionStats:
    asset_count: int = 0
    received: int = 0  # readings of mapped inputs that arrived
    incomplete: int = 0  # held back: some input never seen yet for that asset
    dropped: int = 0  # the queue was full (the model is far slower than its input)
    calls: int = 0
    scored: int = 0  # readings sent in successful calls
    outputs: int = 0  # output values written back (acknowledged by the hot store)
    unmapped_outputs: int = 0
    refused_outputs: int = 0  # output values (or items) refused, unmapped ones included
    failures: int = 0
    stale: int = 0
    pending: int = 0
    windows: int = 0
    last_call_ms: float | None = None
    last_error: str | None = None


@dataclass
class _Pending:
    sent_at: int
    readings: int
    deadline: float
    allowed: Allowed  # the times its answer may write outputs at


@dataclass
class _AssetState:
    mapping: ResolvedAsset
    latest: dict[str, Any] = field(default_factory=dict)  # input column -> latest value
    last_sent_ts: int = 0  # TIME_WINDOW stateful: what the model has already seen


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
    ) -> None:
        self.spec = spec
        self.client = client
        self.bus = bus
        self.telemetry = telemetry
        self.deployments = deployments
        self.resolve = resolve
        self.settings = settings or CompanionSettings()
        self.token = uuid.uuid4().hex + uuid.uuid4().hex
        self.callback_base = callback_base
        self.stats = CompanionStats()
        m = spec.manifest
        self.trigger = m.trigger
        self.stateful = m.model.stateful
        self.is_async = m.model.is_async
        self.timeout_s = m.model.timeout_ms / 1000
        self.outputs = OutputWriter(spec, bus, self.settings.max_message_bytes)
        self._assets: dict[str, _AssetState] = {}
        self._subscriptions: dict[str, Subscription] = {}
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(self.settings.max_queue)
        self._pending: dict[str, _Pending] = {}
        self._slots = asyncio.Semaphore(1 if self.stateful else self.settings.concurrency)
        self._tasks: list[asyncio.Task[None]] = []
        self._calls: set[asyncio.Task[None]] = set()
        self._refresh_lock = asyncio.Lock()

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        await self.refresh()
        if self.trigger.type is TriggerType.REAL_TIME:
            self._tasks.append(
                asyncio.create_task(self._send_loop(), name=f"companion-{self.spec.key}")
            )
        else:
            self._tasks.append(
                asyncio.create_task(self._window_loop(), name=f"window-{self.spec.key}")
            )
        if self.is_async:
            self._tasks.append(
                asyncio.create_task(self._stale_loop(), name=f"stale-{self.spec.key}")
            )

    async def stop(self) -> None:
        for sub in self._subscriptions.values():
            await sub.close()
        self._subscriptions.clear()
        for task in [*self._tasks, *self._calls]:
            task.cancel()
        for task in [*self._tasks, *self._calls]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()

    async def refresh(self) -> None:
        """Follow the mappings: assets added to a mapped type are fed from now on, removed ones
        are let go. Called on start and whenever mappings or the registry change."""
        async with self._refresh_lock:
            resolved = {r.asset: r for r in await self.resolve() if r.inputs}
            for asset in set(self._assets) - set(resolved):
                del self._assets[asset]
                sub = self._subscriptions.pop(asset, None)
                if sub is not None:
                    await sub.close()
            for asset, mapping in resolved.items():
                state = self._assets.get(asset)
                if state is None:
                    self._assets[asset] = _AssetState(mapping)
                else:
                    state.mapping = mapping
                if self.trigger.type is TriggerType.REAL_TIME and asset not in self._subscriptions:
                    self._subscriptions[asset] = await self.bus.subscribe_live(
                        self.spec.tenant, asset, self._on_live
                    )
            self.stats.asset_count = len(self._assets)

    @property
    def assets(self) -> list[str]:
        return sorted(self._assets)

    # -- REAL_TIME ------------------------------------------------------------------------

    async def _on_live(self, data: bytes) -> None:
        event = orjson.loads(data)
        state = self._assets.get(event.get("asset"))
        if state is None:
            return
        inputs = state.mapping.inputs
        for reading in event.get("readings", ()):
            values = reading.get("values", {})
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
            item = {"asset": state.mapping.asset, "ts": reading["ts"], "values": dict(state.latest)}
            try:
                self._queue.put_nowait(item)
            except asyncio.QueueFull:
                self.stats.dropped += 1
                if self.stats.dropped % 1000 == 1:
                    log.warning("companion.queue_full", extra={"fields": {"model": self.spec.key}})

    async def _send_loop(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.settings.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            await self._dispatch(batch, None)

    async def _dispatch(
        self, readings: list[dict[str, Any]], window: dict[str, int] | None
    ) -> None:
        """One call in flight for a stateful model (the stream stays in order); up to
        `concurrency` for a stateless one."""
        await self._slots.acquire()
        if self.stateful:
            try:
                await self._call(readings, window)
            finally:
                self._slots.release()
            return
        task = asyncio.create_task(self._call_and_release(readings, window))
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)

    async def _call_and_release(
        self, readings: list[dict[str, Any]], window: dict[str, int] | None
    ) -> None:
        try:
            await self._call(readings, window)
        finally:
            self._slots.release()

    # -- TIME_WINDOW ----------------------------------------------------------------------

    async def _window_loop(self) -> None:
        assert self.trigger.frequency is not None and self.trigger.time_window_size is not None
        period = self.trigger.frequency / 1000
        size = self.trigger.time_window_size
        next_at = time.monotonic() + period
        while True:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            next_at += period
            end = now_ms()
            try:
                readings = await asyncio.to_thread(self._window, end - size, end)
            except Exception as exc:  # the database may be briefly away: next window
                self.stats.last_error = f"reading the window failed: {exc}"
                continue
            self.stats.windows += 1
            if readings:
                await self._dispatch(readings, {"start": end - size, "end": end})

    def _window(self, start: int, end: int) -> list[dict[str, Any]]:
        readings: list[dict[str, Any]] = []
        for state in list(self._assets.values()):
            inputs = state.mapping.inputs
            by_name = self.telemetry.history(
                self.spec.tenant, state.mapping.asset, list(inputs.values()), start, end, 100_000
            )
            rows: dict[int, dict[str, Any]] = {}
            for column, telemetry in inputs.items():
                for point in by_name.get(telemetry, []):
                    rows.setdefault(point.ts, {})[column] = point.value
            since = state.last_sent_ts if self.stateful else 0
            for ts in sorted(t for t in rows if t > since):
                readings.append({"asset": state.mapping.asset, "ts": ts, "values": rows[ts]})
            if rows and self.stateful:
                state.last_sent_ts = max(rows)
        return readings

    # -- calling the model ----------------------------------------------------------------

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
        request_id = uuid.uuid4().hex
        body = self._request(request_id, readings, window)
        wait = not self.is_async
        try:
            async for attempt in retrying(
                self.settings.call_attempts, CALL_BACKOFF_S, retry_on=(FoglineError,)
            ):
                with attempt:
                    started = time.perf_counter()
                    answer = await self._score(request_id, body, readings, wait)
        except FoglineError as exc:
            self.stats.failures += 1
            log.warning(
                "companion.call_failed",
                extra={
                    "fields": {
                        "model": self.spec.key,
                        "readings": len(readings),
                        "error": exc.message,
                    }
                },
            )
            return
        self.stats.calls += 1
        self.stats.last_call_ms = round((time.perf_counter() - started) * 1000, 2)
        if wait:
            self.stats.scored += len(readings)
            await self._write(answer, allowed_timestamps(readings))
        self.stats.pending = len(self._pending)

    async def _score(
        self, request_id: str, body: bytes, readings: list[dict[str, Any]], wait: bool
    ) -> Any:
        """One attempt of a call. An asynchronous model's request is pending from now until its
        answer comes, or no longer when the call itself failed."""
        if not wait:
            self._pending[request_id] = _Pending(
                now_ms(),
                len(readings),
                time.monotonic() + self.timeout_s,
                allowed_timestamps(readings),
            )
        try:
            return await self.client.score(request_id, body, self.timeout_s, wait)
        except FoglineError as exc:
            self._pending.pop(request_id, None)
            self.stats.last_error = exc.message
            raise

    async def on_answer(self, request_id: str, answer: dict[str, Any]) -> bool:
        """An asynchronous model's answer. False when the request is unknown or went stale."""
        pending = self._pending.pop(request_id, None)
        if pending is None:
            return False
        self.stats.scored += pending.readings
        self.stats.pending = len(self._pending)
        await self._write(answer, pending.allowed)
        return True

    async def _stale_loop(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self.timeout_s / 2))
            now = time.monotonic()
            for request_id, p in list(self._pending.items()):
                if p.deadline > now or self._pending.pop(request_id, None) is None:
                    continue
                self.stats.stale += 1
                self.stats.pending = len(self._pending)
                stale = StaleRequest(request_id, p.readings, p.sent_at, now_ms())
                log.warning(
                    "companion.stale_request",
                    extra={"fields": {"model": self.spec.key, "request_id": request_id}},
                )
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(
                        self.deployments.record_stale, self.spec.model_id, stale
                    )

    # -- outputs --------------------------------------------------------------------------

    async def _write(self, answer: Any, allowed: Allowed) -> None:
        mappings = {asset: state.mapping for asset, state in self._assets.items()}
        result = await self.outputs.write(answer, allowed, mappings)
        self.stats.outputs += result.written
        for refusal in result.refused:
            self.stats.refused_outputs += 1
            if refusal.reason_code == OutputRefusal.UNMAPPED:
                self.stats.unmapped_outputs += 1
            elif refusal.reason_code == OutputRefusal.MALFORMED:
                self.stats.failures += 1
                self.stats.last_error = refusal.reason
            elif refusal.reason_code == OutputRefusal.PUBLISH_FAILED:
                self.stats.last_error = refusal.reason

    def describe(self) -> dict[str, Any]:
        return {**asdict(self.stats), "assets": self.assets}
