"""Deploying, stopping and updating models: sagas that persist every step and its
compensation, and a health monitor for what runs.

Deploy: provision the runtime -> start the model -> wait until healthy -> start the data
companion -> mark active. A failing step is retried with backoff; when it still fails, the
steps already done are compensated in reverse and the model goes back to draft with the reason.

A platform killed in the middle of any of this leaves no model process behind (each dies with
the platform) and, on its next start, `recover` resumes or compensates every unfinished saga
from what the store says: a deploying model is deployed again from the start, a stopping one
is stopped, an active one is started again, an interrupted update is undone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from fogline.bus.connection import Bus, Subscription
from fogline.bus.events import EventType, PlatformEvent
from fogline.domain.errors import (
    Conflict,
    FoglineError,
    InvalidInput,
    NotFound,
    Problem,
    Unavailable,
)
from fogline.domain.lifecycle import ModelEvent, ModelState
from fogline.domain.models import ModelRecord
from fogline.models.companion import Companion, CompanionSettings
from fogline.models.lifecycle import ModelLifecycle
from fogline.models.manifest import check_manifest
from fogline.models.mappings import ModelMappingService
from fogline.models.packages import PackageStore
from fogline.models.runtimes.base import ModelSpec, Runtime, RuntimeHandle
from fogline.models.transport import AmqpConnections, AmqpModelClient, HttpModelClient, ModelClient
from fogline.store.deployments import DeploymentStore
from fogline.store.models import ModelStore
from fogline.store.telemetry import TelemetryStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SagaSettings:
    attempts: int = 3  # per step
    backoff_s: float = 0.5  # doubled after each failed attempt
    health_timeout_s: float = 30.0  # for the model to answer its health check after a start
    health_interval_s: float = 2.0
    max_health_failures: int = 3  # failed recoveries in a row before the model goes to draft
    companion: CompanionSettings = field(default_factory=CompanionSettings)


@dataclass
class _Running:
    """A model this platform has started (or is starting)."""

    model: ModelRecord
    spec: ModelSpec
    runtime: Runtime
    handle: RuntimeHandle | None = None
    client: ModelClient | None = None
    companion: Companion | None = None
    monitor: asyncio.Task[None] | None = None
    health_failures: int = 0
    restarts: int = 0
    last_health: str | None = None


@dataclass(frozen=True)
class _Step:
    name: str
    run: Callable[[_Running], Awaitable[None]]
    compensate: Callable[[_Running], Awaitable[None]] | None = None


class DeploymentManager:
    def __init__(
        self,
        models: ModelStore,
        deployments: DeploymentStore,
        telemetry: TelemetryStore,
        mappings: ModelMappingService,
        bus: Bus,
        runtimes: dict[str, Runtime],
        packages: PackageStore,
        amqp: AmqpConnections,
        callback_base: Callable[[], str | None],
        lifecycle: ModelLifecycle,
        settings: SagaSettings | None = None,
    ) -> None:
        self.models = models
        self.deployments = deployments
        self.telemetry = telemetry
        self.mappings = mappings
        self.bus = bus
        self.runtimes = runtimes
        self.packages = packages
        self.amqp = amqp
        self.callback_base = callback_base
        self.settings = settings or SagaSettings()
        self.lifecycle = lifecycle
        self._running: dict[int, _Running] = {}
        self._sagas: dict[int, asyncio.Task[None]] = {}
        self._by_token: dict[str, _Running] = {}

    # -- what users ask for -----------------------------------------------------------------

    async def deploy(self, tenant: str, name: str, version: str) -> ModelRecord:
        model = await asyncio.to_thread(self.models.get_model, tenant, name, version)
        await self._check_deployable(model)
        model = await self._move(model, ModelEvent.DEPLOY, "deploy requested")
        self._launch(model, self._deploy_saga(model))
        return model

    async def stop(self, tenant: str, name: str, version: str) -> ModelRecord:
        model = await asyncio.to_thread(self.models.get_model, tenant, name, version)
        self._refuse_if_busy(model)
        model = await self._move(model, ModelEvent.STOP, "stop requested")
        self._launch(model, self._stop_saga(model))
        return model

    async def retire(self, tenant: str, name: str, version: str) -> ModelRecord:
        """A stopped model goes back to draft (to be edited, re-mapped or removed)."""
        model = await asyncio.to_thread(self.models.get_model, tenant, name, version)
        return await self._move(model, ModelEvent.RETIRE, "retired by a user")

    async def update(self, tenant: str, name: str, to_version: str) -> ModelRecord:
        """Replace the active version of `name` by `to_version`: the new one is deployed beside
        it and takes over; if it fails, the old one never stopped."""
        new = await asyncio.to_thread(self.models.get_model, tenant, name, to_version)
        active = [
            m
            for m in await asyncio.to_thread(self.models.list_models, tenant)
            if m.name == name and m.state is ModelState.ACTIVE and m.version != to_version
        ]
        if not active:
            raise Conflict(f"model {name} has no active version to update; deploy {to_version}")
        old = active[0]
        self._refuse_if_busy(old)
        inherited = await self.mappings.inherit(old, new)
        try:
            await self._check_deployable(new)
        except FoglineError:
            if inherited:  # a refused update leaves the new version as it was
                await self.mappings.clear(new)
            raise
        old = await self._move(old, ModelEvent.UPDATE, f"being replaced by {to_version}")
        try:
            new = await self._move(new, ModelEvent.DEPLOY, f"replacing {old.version}")
        except FoglineError:
            await self._move(old, ModelEvent.UPDATE_FAILED, f"{to_version} could not start")
            raise
        self._launch(new, self._update_saga(old, new))
        return new

    async def _check_deployable(self, model: ModelRecord) -> None:
        problems: list[Problem] = []
        spec = self._spec(model)
        m = spec.manifest.model
        if m.hosted == "internal" and m.local is None:
            problems.append(
                Problem(
                    "manifest.model.local",
                    "the local runtime needs a start command; a container-only model needs "
                    "the Kubernetes runtime, which is not available yet",
                )
            )
        if m.type == "amqp" and self.amqp.url is None:
            problems.append(
                Problem("manifest.model.type", "AMQP models need FOGLINE_AMQP_URL on the platform")
            )
        resolved = await self.mappings.resolve(model.tenant, model.name, model.version)
        if not any(r.inputs for r in resolved):
            problems.append(
                Problem(
                    "mappings",
                    "no asset is mapped to the model's inputs; PUT its mappings first",
                )
            )
        if problems:
            raise InvalidInput.of(problems, "deployment")
        self._refuse_if_busy(model)

    def _refuse_if_busy(self, model: ModelRecord) -> None:
        task = self._sagas.get(model.id)
        if task is not None and not task.done():
            raise Conflict(f"model {model.name} {model.version} is busy with another step")

    # -- sagas ----------------------------------------------------------------------------

    def _launch(self, model: ModelRecord, saga: Awaitable[None]) -> None:
        async def run() -> None:
            try:
                await saga
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("saga.crashed", extra={"fields": {"model": model.id}})

        self._sagas[model.id] = asyncio.create_task(run(), name=f"saga-{model.id}")

    def _deploy_steps(self, finish: Callable[[_Running], Awaitable[None]]) -> list[_Step]:
        return [
            _Step("provision", self._provision),
            _Step("start-model", self._start_model, self._stop_model),
            _Step("wait-healthy", self._wait_healthy),
            _Step("start-companion", self._start_companion, self._stop_companion),
            _Step("mark-active", finish),
        ]

    async def _deploy_saga(self, model: ModelRecord, saga: str = "deploy") -> None:
        async def mark_active(r: _Running) -> None:
            r.model = await self._move(r.model, ModelEvent.DEPLOYED, "healthy and fed")

        error = await self._run(model, saga, self._deploy_steps(mark_active))
        if error is not None:
            await self._move(model, ModelEvent.DEPLOY_FAILED, error, quiet=True)

    async def _restore_saga(self, model: ModelRecord) -> None:
        """An active model of a previous run: started again, state unchanged."""

        async def keep_active(r: _Running) -> None:
            return None

        error = await self._run(model, "restore", self._deploy_steps(keep_active))
        if error is not None:
            await self._move(
                model, ModelEvent.UNHEALTHY, f"could not be restored: {error}", quiet=True
            )

    async def _update_saga(self, old: ModelRecord, new: ModelRecord) -> None:
        async def take_over(r: _Running) -> None:
            r.model = await self._move(r.model, ModelEvent.DEPLOYED, f"replaced {old.version}")

        error = await self._run(new, "update", self._deploy_steps(take_over))
        if error is not None:
            await self._move(new, ModelEvent.DEPLOY_FAILED, error, quiet=True)
            await self._move(
                old, ModelEvent.UPDATE_FAILED, f"{new.version} failed: {error}", quiet=True
            )
            return
        await self._teardown(old.id, "update")
        await self._move(old, ModelEvent.UPDATED, f"replaced by {new.version}", quiet=True)

    async def _stop_saga(self, model: ModelRecord) -> None:
        await asyncio.to_thread(self.deployments.begin, model.id, model.tenant, "stop")
        await self._teardown(model.id, "stop")
        await self._move(model, ModelEvent.STOPPED, "stopped by a user", quiet=True)
        await asyncio.to_thread(self.deployments.finish, model.id, "done")

    async def _run(self, model: ModelRecord, saga: str, steps: list[_Step]) -> str | None:
        """Run the steps; None when all succeeded, else the reason, after compensation."""
        spec = self._spec(model)
        running = _Running(model, spec, self._runtime_for(spec))
        self._running[model.id] = running
        await asyncio.to_thread(self.deployments.begin, model.id, model.tenant, saga)
        done: list[_Step] = []
        for step in steps:
            error = await self._attempt(running, saga, step)
            if error is None:
                done.append(step)
                continue
            for finished in reversed(done):
                if finished.compensate is not None:
                    with contextlib.suppress(Exception):
                        await finished.compensate(running)
                    await self._record(model.id, saga, finished.name, "compensated", 1, None)
            self._running.pop(model.id, None)
            reason = f"{step.name} failed after {self.settings.attempts} attempts: {error}"
            await asyncio.to_thread(self.deployments.finish, model.id, "failed", reason)
            return reason
        await asyncio.to_thread(self.deployments.finish, model.id, "done")
        running.monitor = asyncio.create_task(self._monitor(running), name=f"health-{model.id}")
        return None

    async def _attempt(self, running: _Running, saga: str, step: _Step) -> str | None:
        delay = self.settings.backoff_s
        error = "not attempted"
        for attempt in range(1, self.settings.attempts + 1):
            await self._record(running.model.id, saga, step.name, "started", attempt, None)
            try:
                await step.run(running)
            except InvalidInput as exc:
                await self._record(running.model.id, saga, step.name, "failed", attempt, str(exc))
                return str(exc)  # retrying cannot help
            except (FoglineError, OSError) as exc:
                error = exc.message if isinstance(exc, FoglineError) else str(exc)
                await self._record(running.model.id, saga, step.name, "failed", attempt, error)
                if attempt < self.settings.attempts:
                    await asyncio.sleep(delay)
                    delay *= 2
                continue
            await self._record(running.model.id, saga, step.name, "done", attempt, None)
            return None
        return error

    async def _record(
        self, model_id: int, saga: str, step: str, status: str, attempt: int, detail: str | None
    ) -> None:
        await asyncio.to_thread(
            self.deployments.step, model_id, saga, step, status, attempt, detail
        )

    async def _move(
        self, model: ModelRecord, event: ModelEvent, reason: str, quiet: bool = False
    ) -> ModelRecord:
        try:
            return await self.lifecycle.move(model, event, reason)
        except FoglineError as exc:
            if not quiet:
                raise
            log.error(
                "saga.transition_refused",
                extra={"fields": {"model": model.id, "error": exc.message}},
            )
            return model

    # -- steps ----------------------------------------------------------------------------

    async def _provision(self, r: _Running) -> None:
        await r.runtime.provision(r.spec)

    async def _start_model(self, r: _Running) -> None:
        r.handle = await r.runtime.start(r.spec)
        await asyncio.to_thread(self.deployments.set_runtime, r.model.id, r.handle.to_json())
        r.client = await self._client(r)

    async def _client(self, r: _Running) -> ModelClient:
        assert r.handle is not None
        m = r.spec.manifest.model
        if m.type == "amqp":

            async def forward(request_id: str, answer: dict[str, Any]) -> None:
                if r.companion is not None:
                    await r.companion.on_answer(request_id, answer)

            assert r.handle.score_queue and r.handle.health_queue
            return AmqpModelClient(
                await self.amqp.get(), r.handle.score_queue, r.handle.health_queue, forward
            )
        assert r.handle.endpoint is not None
        return HttpModelClient(r.handle.endpoint, m.score_endpoint, m.health_check_endpoint)

    async def _stop_model(self, r: _Running) -> None:
        if r.client is not None:
            await r.client.close()
            r.client = None
        if r.handle is not None:
            await r.runtime.stop(r.handle)
            r.handle = None
            await asyncio.to_thread(self.deployments.set_runtime, r.model.id, None)

    async def _wait_healthy(self, r: _Running) -> None:
        """Until the model answers its health check. A process that died is started again
        first, so a retry of this step is a real second chance."""
        if r.handle is None or not r.runtime.alive(r.handle):
            await self._stop_model(r)
            await self._start_model(r)
        assert r.handle is not None and r.client is not None
        deadline = time.monotonic() + self.settings.health_timeout_s
        reason = "no answer yet"
        while time.monotonic() < deadline:
            if not r.runtime.alive(r.handle):
                raise Unavailable(f"the model process exited while starting{self._log_tail(r)}")
            ok, reason = await r.client.health(timeout=2.0)
            if ok:
                r.last_health = "ok"
                return
            await asyncio.sleep(0.1)
        raise Unavailable(
            f"not healthy within {self.settings.health_timeout_s:.0f}s: {reason}{self._log_tail(r)}"
        )

    def _log_tail(self, r: _Running) -> str:
        tail = getattr(r.runtime, "log_tail", None)
        if tail is None or r.handle is None:
            return ""
        text = str(tail(r.handle, 5)).strip()
        return f"; its log ends: {text[-600:]}" if text else ""

    async def _start_companion(self, r: _Running) -> None:
        assert r.client is not None
        model = r.model

        async def resolve() -> Any:
            return await self.mappings.resolve(model.tenant, model.name, model.version)

        companion = Companion(
            r.spec,
            r.client,
            self.bus,
            self.telemetry,
            self.deployments,
            resolve,
            self.callback_base(),
            self.settings.companion,
        )
        await companion.start()
        r.companion = companion
        self._by_token[companion.token] = r

    async def _stop_companion(self, r: _Running) -> None:
        if r.companion is not None:
            self._by_token.pop(r.companion.token, None)
            await r.companion.stop()
            r.companion = None

    async def _teardown(self, model_id: int, saga: str) -> None:
        r = self._running.pop(model_id, None)
        if r is None:
            return
        if r.monitor is not None:
            r.monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await r.monitor
        await self._stop_companion(r)
        await self._record(model_id, saga, "stop-companion", "done", 1, None)
        await self._stop_model(r)
        await self._record(model_id, saga, "stop-model", "done", 1, None)
        await r.runtime.deprovision(r.spec)

    # -- health ---------------------------------------------------------------------------

    async def _monitor(self, r: _Running) -> None:
        """Watch a running model: a crash is noticed within half a second, a failing health
        check within `health_interval_s`. Each time, the model is started again; after
        `max_health_failures` failed recoveries in a row it goes back to draft."""
        next_check = time.monotonic() + self.settings.health_interval_s
        while True:
            await asyncio.sleep(0.5)
            assert r.handle is not None and r.client is not None
            if r.runtime.alive(r.handle):
                if time.monotonic() < next_check:
                    continue
                next_check = time.monotonic() + self.settings.health_interval_s
                ok, reason = await r.client.health(timeout=2.0)
                r.last_health = reason
                if ok:
                    continue
            else:
                reason = f"the model process exited{self._log_tail(r)}"
                r.last_health = reason
            if await self._recover(r, reason):
                next_check = time.monotonic() + self.settings.health_interval_s
                continue
            return

    async def _recover(self, r: _Running, reason: str) -> bool:
        model_id = r.model.id
        while r.health_failures < self.settings.max_health_failures:
            r.health_failures += 1
            await self._record(model_id, "health", "restart", "started", r.health_failures, reason)
            await self._stop_companion(r)
            try:
                await self._stop_model(r)
                await self._start_model(r)
                await self._wait_healthy(r)
                await self._start_companion(r)
            except (FoglineError, OSError) as exc:
                reason = exc.message if isinstance(exc, FoglineError) else str(exc)
                await self._record(
                    model_id, "health", "restart", "failed", r.health_failures, reason
                )
                await asyncio.sleep(self.settings.backoff_s * 2 ** (r.health_failures - 1))
                continue
            r.restarts += 1
            r.health_failures = 0
            await self._record(model_id, "health", "restart", "done", 1, None)
            return True
        await self._stop_companion(r)
        with contextlib.suppress(Exception):
            await self._stop_model(r)
        self._running.pop(model_id, None)
        await self._move(
            r.model,
            ModelEvent.UNHEALTHY,
            f"health not recovered after {self.settings.max_health_failures} attempts: {reason}",
            quiet=True,
        )
        return False

    # -- the platform's own start and stop --------------------------------------------------

    async def recover(self) -> None:
        """Resume or compensate what a previous run left unfinished (see the module doc)."""
        states = [ModelState.DEPLOYING, ModelState.STOPPING, ModelState.ACTIVE, ModelState.UPDATING]
        for model in await asyncio.to_thread(self.models.in_states, states):
            record = await asyncio.to_thread(self.deployments.get, model.id)
            if record is not None and record.runtime:
                handle = RuntimeHandle.from_json(record.runtime)
                runtime = self.runtimes.get(handle.kind)
                if runtime is not None:
                    await runtime.stop(handle)
                await asyncio.to_thread(self.deployments.set_runtime, model.id, None)
                await self._record(
                    model.id, "recover", "stop-model", "compensated", 1, "left by the previous run"
                )
            saga = record.saga if record else "deploy"
            if model.state is ModelState.DEPLOYING and saga == "update":
                await self._move(
                    model,
                    ModelEvent.DEPLOY_FAILED,
                    "interrupted by a restart during an update",
                    quiet=True,
                )
            elif model.state is ModelState.DEPLOYING:
                await self._record(
                    model.id,
                    "recover",
                    "resume",
                    "started",
                    1,
                    f"{saga} interrupted at {record.step if record else '?'}",
                )
                self._launch(model, self._deploy_saga(model))
            elif model.state is ModelState.STOPPING:
                await self._move(
                    model, ModelEvent.STOPPED, "stop finished after a restart", quiet=True
                )
                await asyncio.to_thread(self.deployments.finish, model.id, "done")
            elif model.state is ModelState.UPDATING:
                moved = await self._move(
                    model, ModelEvent.UPDATE_FAILED, "update interrupted by a restart", quiet=True
                )
                self._launch(moved, self._restore_saga(moved))
            else:
                self._launch(model, self._restore_saga(model))

    async def shutdown(self) -> None:
        """Stop every model process and companion; states stay as they are, so the next start
        restores active models and resumes unfinished sagas."""
        for task in self._sagas.values():
            task.cancel()
        for task in list(self._sagas.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for r in list(self._running.values()):
            if r.monitor is not None:
                r.monitor.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await r.monitor
            with contextlib.suppress(Exception):
                await self._stop_companion(r)
            with contextlib.suppress(Exception):
                if r.client is not None:
                    await r.client.close()
                if r.handle is not None:
                    await r.runtime.stop(r.handle)
        self._running.clear()
        await self.amqp.close()

    # -- queries and events ---------------------------------------------------------------

    async def on_callback(self, token: str, request_id: str, answer: dict[str, Any]) -> None:
        r = self._by_token.get(token)
        if r is None or r.companion is None:
            raise NotFound("no running companion has this callback address")
        if not await r.companion.on_answer(request_id, answer):
            raise Conflict(f"request {request_id} is not pending: unknown, answered or stale")

    async def follow_changes(self, bus: Bus) -> Subscription:
        """Companions follow their assets: mappings replaced, assets or types come and go."""

        async def on_change(_event: PlatformEvent) -> None:
            await self.refresh_mappings()

        return await bus.subscribe_events(
            on_change, [EventType.MAPPINGS_CHANGED, EventType.REGISTRY_CHANGED]
        )

    async def refresh_mappings(self) -> None:
        """Mappings or the registry changed: every running companion follows."""
        for r in list(self._running.values()):
            if r.companion is not None:
                try:
                    await r.companion.refresh()
                except Exception as exc:
                    log.warning("companion.refresh_failed", extra={"fields": {"error": str(exc)}})

    async def describe(self, tenant: str, name: str, version: str) -> dict[str, Any]:
        model = await asyncio.to_thread(self.models.get_model, tenant, name, version)
        record = await asyncio.to_thread(self.deployments.get, model.id)
        steps = await asyncio.to_thread(self.deployments.steps, model.id, 50)
        stale = await asyncio.to_thread(self.deployments.stale, model.id, 20)
        r = self._running.get(model.id)
        runtime = r.handle.to_json() if r is not None and r.handle is not None else None
        return {
            "state": model.state.value,
            "state_reason": model.state_reason,
            "saga": None
            if record is None
            else {
                "name": record.saga,
                "status": record.status,
                "step": record.step,
                "detail": record.detail,
            },
            "runtime": runtime,
            "health": None
            if r is None
            else {"last": r.last_health, "failures": r.health_failures, "restarts": r.restarts},
            "companion": r.companion.describe() if r is not None and r.companion else None,
            "steps": [asdict(s) for s in steps],
            "stale_requests": [asdict(s) for s in stale],
        }

    # -- helpers --------------------------------------------------------------------------

    def _spec(self, model: ModelRecord) -> ModelSpec:
        manifest = check_manifest(model.manifest).manifest
        return ModelSpec(
            model.id,
            model.tenant,
            model.name,
            model.version,
            manifest,
            self.packages.find(model.tenant, model.name, model.version),
        )

    def _runtime_for(self, spec: ModelSpec) -> Runtime:
        kind = "external" if spec.manifest.model.hosted == "external" else "local"
        return self.runtimes[kind]
