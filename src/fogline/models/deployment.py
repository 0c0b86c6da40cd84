"""Deploying, stopping and updating models: saga definitions on the saga engine
(`fogline.saga`), which persists every step and its compensation; what runs is watched by the
health monitor (`health.py`).

Deploy: provision the runtime -> start the model -> wait until healthy -> start the data
companion -> mark active. A failing step is retried with backoff; when it still fails, the
steps already done are compensated in reverse and the model goes back to draft with the reason.
Stop: stop the companion -> stop the model -> mark stopped. Update: the new version goes
through the deploy steps beside the old one and takes over; then the old one goes through the
stop steps (a saga `update` of its own) and is marked updated.

A platform killed in the middle of any of this leaves no model process behind (each dies with
the platform) and, on its next start, `recover` resumes or compensates every unfinished saga
from what the store says: a deploying model is deployed again from the start, a stopping one
is stopped, an active one is started again, an interrupted update is undone (unless the new
version had already taken over: then the old one's stop is finished).

One version of a model name is live at a time (`LIVE`): a deploy of a second one is refused
(an update replaces the live one), and the requests of one name decide one at a time
(`_deciding`). Two versions of a name running, which an older Fogline allowed, are brought
down to one by `recover` (`_one_version_each`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from fogline.bus.connection import Bus, Subscription
from fogline.bus.events import DeploymentStep, EventType, ModelRestarted, PlatformEvent
from fogline.domain.errors import (
    Conflict,
    FoglineError,
    InvalidInput,
    NotFound,
    Problem,
    Unavailable,
)
from fogline.domain.lifecycle import ModelEvent, ModelState, allowed_events, next_state
from fogline.domain.models import ModelRecord, StoredModelDeadLetter, output_source
from fogline.domain.sagas import SagaKey, SagaName, SagaOwner, StepStatus
from fogline.domain.timeseries import now_ms
from fogline.models.companion import (
    MAX_BACKFILL_SPAN_MS,
    BackfillReport,
    Companion,
    CompanionSettings,
)
from fogline.models.health import Health, HealthMonitor, HealthSettings
from fogline.models.lifecycle import ModelLifecycle
from fogline.models.manifest import check_manifest
from fogline.models.mappings import ModelMappingService
from fogline.models.packages import PackageStore
from fogline.models.runtimes.base import ModelSpec, Runtime, RuntimeHandle
from fogline.models.transport import AmqpConnections, AmqpModelClient, HttpModelClient, ModelClient
from fogline.retry import wait_until
from fogline.saga.engine import (
    Resume,
    RetryPolicy,
    Saga,
    SagaEngine,
    SagaFailed,
    SagaStore,
    Step,
    StepRecorded,
)
from fogline.store.deployments import DeploymentStore
from fogline.store.models import ModelStore
from fogline.store.telemetry import TelemetryStore

log = logging.getLogger(__name__)
RUNNING_STATES = (ModelState.ACTIVE, ModelState.DEGRADED, ModelState.UPDATING)

# States a saga ends in; SETTLE_S is how long a call waits for such a saga to finish recording.
SETTLED = (ModelState.ACTIVE, ModelState.STOPPED, ModelState.DRAFT)
SETTLE_S = 5.0
# States in which a version holds its model's name: it runs, or is being started or stopped.
# One version of a name at a time (an update's two versions are one decision).
# A version that serves: active, or degraded (running, not well).
RUNNING = (ModelState.ACTIVE, ModelState.DEGRADED)
LIVE = (
    ModelState.DEPLOYING,
    ModelState.ACTIVE,
    ModelState.DEGRADED,
    ModelState.UPDATING,
    ModelState.STOPPING,
)


@dataclass(frozen=True)
class SagaSettings:
    attempts: int = 3  # per step
    backoff_s: float = 0.5  # doubled after each failed attempt
    health_timeout_s: float = 30.0  # for the model to answer its health check after a start
    health_interval_s: float = 2.0
    max_health_failures: int = 3  # failed recoveries in a row before the model goes to draft
    restart_limit: int = 5  # restarts within restart_window_s before the model goes to draft
    restart_window_s: float = 600.0
    restart_backoff_cap_s: float = 30.0
    stable_s: float = 10.0  # a degraded model well for this long is active again
    companion: CompanionSettings = field(default_factory=CompanionSettings)


@dataclass
class _Running:
    """A model this platform has started (or is starting): what the deploy steps work on."""

    model: ModelRecord
    spec: ModelSpec
    runtime: Runtime
    handle: RuntimeHandle | None = None
    client: ModelClient | None = None
    companion: Companion | None = None
    monitor: HealthMonitor | None = None
    health: Health = field(default_factory=Health)
    restart_request: str | None = None  # why the companion asked for a restart, until done


@dataclass
class _Stopping:
    """What the stop steps work on: the model, and what of it runs here, if anything (after a
    restart nothing does)."""

    model: ModelRecord
    running: _Running | None


@dataclass
class _Retiring:
    """What the retire step works on; `model` is the record once it moved."""

    model: ModelRecord


Finish = Callable[[_Running], Awaitable[None]]
C = TypeVar("C")


class DeploymentManager:
    def __init__(
        self,
        models: ModelStore,
        deployments: DeploymentStore,
        sagas: SagaStore,
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
        self.sagas = SagaEngine(
            sagas,
            RetryPolicy(self.settings.attempts, self.settings.backoff_s),
            on_step=self._publish_step,
        )
        # Whose saga a key is, for the deployment.step events: filled as sagas start.
        self._saga_models: dict[str, ModelRecord] = {}
        self._health_settings = HealthSettings(
            interval_s=self.settings.health_interval_s,
            max_failures=self.settings.max_health_failures,
            backoff_s=self.settings.backoff_s,
            backoff_cap_s=self.settings.restart_backoff_cap_s,
            restart_limit=self.settings.restart_limit,
            restart_window_s=self.settings.restart_window_s,
            stable_s=self.settings.stable_s,
        )
        self._running: dict[int, _Running] = {}
        # Models whose health could not be recovered (sent back to draft), with why: shown by
        # `health_summary` until a deploy is asked for again (or the platform restarts).
        self._lost_models: dict[int, tuple[ModelRecord, str]] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._by_token: dict[str, _Running] = {}
        # The last companion's counters of each model no companion feeds now (stopped, or
        # sent to draft), since this platform started.
        self._last_accounts: dict[int, dict[str, Any]] = {}
        # The same, for the metrics: what each such model did while it ran (since the start).
        self._gone: dict[int, dict[str, Any]] = {}
        # One lock per (tenant, model name): see `_deciding`.
        self._decisions: dict[tuple[str, str], asyncio.Lock] = {}

    def _key(self, model: ModelRecord) -> SagaKey:
        self._saga_models[str(model.id)] = model
        return SagaKey(SagaOwner.MODEL, str(model.id))

    async def _publish_step(self, recorded: StepRecorded) -> None:
        model = self._saga_models.get(recorded.key.id)
        if model is None:
            return
        await self.bus.publish_event(
            DeploymentStep(
                tenant=recorded.tenant,
                model=model.name,
                version=model.version,
                saga=recorded.saga,
                step=recorded.step,
                status=recorded.status.value,
                attempt=recorded.attempt,
                detail=recorded.detail,
            )
        )

    # -- what users ask for -----------------------------------------------------------------

    async def deploy(self, tenant: str, name: str, version: str) -> ModelRecord:
        """Deploy a version of `name` while no other version of it is live (see
        `_refuse_another_live`). The manifest has no canary split (two versions sharing the
        readings) yet: the rollouts issue adds it; until then a second version is an update."""
        async with self._deciding(tenant, name):
            model = await asyncio.to_thread(self.models.get_model, tenant, name, version)
            await self._refuse_another_live(model)
            await self._check_deployable(model)
            model = await self._move(model, ModelEvent.DEPLOY, "deploy requested")
        self._lost_models.pop(model.id, None)
        self._last_accounts.pop(model.id, None)
        self._launch(model, self._deploy_saga(model))
        return model

    async def stop(self, tenant: str, name: str, version: str) -> ModelRecord:
        async with self._deciding(tenant, name):
            model = await asyncio.to_thread(self.models.get_model, tenant, name, version)
            await self._refuse_if_busy(model)
            model = await self._move(model, ModelEvent.STOP, "stop requested")
        self._launch(model, self._stop_saga(model))
        return model

    async def retire(self, tenant: str, name: str, version: str) -> ModelRecord:
        """A stopped model goes back to draft (to be edited, re-mapped or removed). A move the
        lifecycle table refuses is refused at once, before any saga begins."""
        async with self._deciding(tenant, name):
            model = await asyncio.to_thread(self.models.get_model, tenant, name, version)
            await self._refuse_if_busy(model)
            next_state(model.state, ModelEvent.RETIRE)
            retiring = _Retiring(model)
            failure = await self._go(model, self._retiring(), retiring, None)
        if failure is not None:
            raise Unavailable(f"model {name} {version} could not be retired: {failure.reason}")
        return retiring.model

    async def update(self, tenant: str, name: str, to_version: str) -> ModelRecord:
        """Replace the active version of `name` by `to_version`: the new one is deployed beside
        it and takes over; if it fails, the old one never stopped. An update refused here, or
        lost to a concurrent one, changes nothing: no state, and not the new version's
        mappings (it holds the old one's from `inherit` only once the update is under way)."""
        async with self._deciding(tenant, name):
            new = await asyncio.to_thread(self.models.get_model, tenant, name, to_version)
            old = await self._version_to_replace(new)
            next_state(new.state, ModelEvent.DEPLOY)  # the new version is a draft or stopped
            await self._refuse_if_busy(old)
            inheritance = await self.mappings.inherit(old, new)
            try:
                await self._check_deployable(new)
                old = await self._move(old, ModelEvent.UPDATE, f"being replaced by {to_version}")
                try:
                    new = await self._move(new, ModelEvent.DEPLOY, f"replacing {old.version}")
                except BaseException:
                    reason = f"{to_version} could not start"
                    await self._move(old, ModelEvent.UPDATE_FAILED, reason, quiet=True)
                    raise
            except BaseException:
                await self.mappings.undo(inheritance)
                raise
        self._launch(new, self._update_saga(old, new))
        return new

    def _deciding(self, tenant: str, name: str) -> asyncio.Lock:
        """Deploy, update, stop and retire of the versions of one name take turns at checking
        and moving (not for their sagas), so that two of them never both pass the checks on
        the same states: two deploys of two versions, or two updates to two versions. In
        memory, which is enough: one platform process decides for its database."""
        return self._decisions.setdefault((tenant, name), asyncio.Lock())

    async def _live_versions(self, tenant: str, name: str) -> list[ModelRecord]:
        """The versions of `name` that hold it (`LIVE`): one, or an update's two."""
        models = await asyncio.to_thread(self.models.list_models, tenant)
        return [m for m in models if m.name == name and m.state in LIVE]

    async def _refuse_another_live(self, model: ModelRecord) -> None:
        """One version of a model runs at a time: two would score the same readings and write
        the same outputs under the same name, one silently overwriting the other."""
        live = [m for m in await self._live_versions(model.tenant, model.name) if m.id != model.id]
        if not live:
            return
        name, version, first = model.name, model.version, live[0].version
        raise Conflict(
            f"model {name} {_holding(live)}: one version of a model runs at a time. To run "
            f"{version} instead, update to it (`fogline model update {name} --to {version}`, "
            f"or POST .../models/{name}/update) or stop {first} first (`fogline model stop "
            f"{name} {first}`){_wait_hint(live)}"
        )

    async def _version_to_replace(self, new: ModelRecord) -> ModelRecord:
        """The live version of the name that an update to `new` replaces: one the lifecycle
        table lets update (active), or a Conflict that says what holds the name instead."""
        if new.state in LIVE:
            raise Conflict(f"model {new.name} {new.version} is already {new.state.value}")
        live = await self._live_versions(new.tenant, new.name)
        if not live:
            raise Conflict(
                f"model {new.name} has no active version to update; deploy {new.version} "
                f"(`fogline model deploy {new.name} {new.version}`)"
            )
        updatable = [m for m in live if ModelEvent.UPDATE in allowed_events(m.state)]
        if len(live) > 1 or not updatable:
            raise Conflict(
                f"model {new.name} {_holding(live)}: an update replaces an active version"
                f"{_wait_hint(live)}"
            )
        return updatable[0]

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
        await self._refuse_if_busy(model)

    async def _refuse_if_busy(self, model: ModelRecord) -> None:
        task = self._tasks.get(model.id)
        if task is None or task.done():
            return
        if model.state in SETTLED:
            # The saga has made its last move and is recording it: a user who saw the model
            # active (or stopped) and acts at once waits that moment out, not a 409.
            await asyncio.wait({task}, timeout=SETTLE_S)
            if task.done():
                return
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

        self._tasks[model.id] = asyncio.create_task(run(), name=f"saga-{model.id}")

    def _starting(self, name: SagaName, finish: Finish) -> Saga[_Running]:
        """Deploy, update (of the new version) and restore: the same steps, their own end."""
        return Saga(
            name,
            (
                Step("provision", self._provision),
                Step("start-model", self._start_model, self._stop_model),
                Step("wait-healthy", self._wait_healthy),
                Step("start-companion", self._start_companion, self._stop_companion),
                Step("mark-active", finish),
            ),
        )

    def _stopping(self, name: SagaName, event: ModelEvent, reason: str) -> Saga[_Stopping]:
        """Stop, and the end of an update (of the old version)."""

        async def mark(s: _Stopping) -> None:
            await self._move(s.model, event, reason, quiet=True)

        return Saga(
            name,
            (
                Step("stop-companion", self._stop_watching),
                Step("stop-model", self._stop_running),
                Step(f"mark-{event.value}", mark),
            ),
        )

    def _retiring(self) -> Saga[_Retiring]:
        async def mark_draft(r: _Retiring) -> None:
            # Idempotent, so that a restart can resume it: already in draft is done.
            current = await asyncio.to_thread(
                self.models.get_model, r.model.tenant, r.model.name, r.model.version
            )
            if current.state is ModelState.DRAFT:
                r.model = current
                return
            r.model = await self._move(current, ModelEvent.RETIRE, "retired by a user")

        return Saga(SagaName.RETIRE, (Step("mark-draft", mark_draft),))

    async def _retire_saga(self, model: ModelRecord, how: Resume) -> None:
        failure = await self._go(model, self._retiring(), _Retiring(model), how)
        if failure is not None:
            log.error("saga.retire_failed", extra={"fields": {"model": model.id}})

    async def _go(
        self, model: ModelRecord, saga: Saga[C], context: C, how: Resume | None
    ) -> SagaFailed | None:
        """A new saga of this model, or the interrupted one resumed `how`."""
        if how is None:
            return await self.sagas.run(self._key(model), model.tenant, saga, context)
        return await self.sagas.resume(self._key(model), model.tenant, saga, context, how)

    async def _start(
        self, model: ModelRecord, saga: Saga[_Running], how: Resume | None = None
    ) -> SagaFailed | None:
        """Run a starting saga; what it starts is watched once it is done, and forgotten if it
        failed (after the compensation)."""
        running = self._prepare(model)
        self._running[model.id] = running
        failure = await self._go(model, saga, running, how)
        if failure is not None:
            self._running.pop(model.id, None)
            return failure
        # A restored model's restarts by the previous run still count (a crash loop across
        # platform restarts reaches the limit); a deploy or an update starts afresh.
        await self._watch(running, seed=saga.name == SagaName.RESTORE)
        return None

    async def _deploy_saga(self, model: ModelRecord, how: Resume | None = None) -> None:
        async def mark_active(r: _Running) -> None:
            r.model = await self._move(r.model, ModelEvent.DEPLOYED, "healthy and fed")

        failure = await self._start(model, self._starting(SagaName.DEPLOY, mark_active), how)
        if failure is not None:
            await self._move(model, ModelEvent.DEPLOY_FAILED, failure.reason, quiet=True)

    async def _restore_saga(self, model: ModelRecord) -> None:
        """An active model of a previous run: started again, state unchanged."""

        async def keep_active(r: _Running) -> None:
            return None

        failure = await self._start(model, self._starting(SagaName.RESTORE, keep_active))
        if failure is not None:
            reason = f"could not be restored: {failure.reason}"
            await self._move(model, ModelEvent.UNHEALTHY, reason, quiet=True)

    async def _update_saga(self, old: ModelRecord, new: ModelRecord) -> None:
        async def take_over(r: _Running) -> None:
            r.model = await self._move(r.model, ModelEvent.DEPLOYED, f"replaced {old.version}")

        failure = await self._start(new, self._starting(SagaName.UPDATE, take_over))
        if failure is not None:
            await self._move(new, ModelEvent.DEPLOY_FAILED, failure.reason, quiet=True)
            reason = f"{new.version} failed: {failure.reason}"
            await self._move(old, ModelEvent.UPDATE_FAILED, reason, quiet=True)
            return
        await self._replaced_saga(old, f"replaced by {new.version}")

    async def _stop_saga(
        self, model: ModelRecord, reason: str = "stopped by a user", how: Resume | None = None
    ) -> None:
        await self._run_stopping(
            model, self._stopping(SagaName.STOP, ModelEvent.STOPPED, reason), how
        )

    async def _replaced_saga(
        self, old: ModelRecord, reason: str, how: Resume | None = None
    ) -> None:
        """The old version of an update, once the new one has taken over."""
        await self._run_stopping(
            old, self._stopping(SagaName.UPDATE, ModelEvent.UPDATED, reason), how
        )

    async def _run_stopping(
        self, model: ModelRecord, saga: Saga[_Stopping], how: Resume | None
    ) -> None:
        stopping = _Stopping(model, self._running.pop(model.id, None))
        failure = await self._go(model, saga, stopping, how)
        if failure is not None:  # the model stays where it is; the platform's next start goes on
            log.error(
                "saga.stop_failed",
                extra={"fields": {"model": model.id, "error": failure.reason}},
            )

    async def _undo_update(
        self, new: ModelRecord, reason: str, name: SagaName = SagaName.UPDATE
    ) -> None:
        """The new version of an update a restart interrupted (or, `name` deploy, a deploy):
        what it had done is undone (its processes died with the platform) and it goes back to
        draft."""

        async def never(r: _Running) -> None:
            return None

        saga = self._starting(name, never)
        running = self._prepare(new)
        await self.sagas.resume(
            self._key(new), new.tenant, saga, running, Resume.COMPENSATE, reason
        )
        await self._move(new, ModelEvent.DEPLOY_FAILED, reason, quiet=True)

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
        await asyncio.to_thread(
            self.deployments.set_runtime, r.model.id, r.model.tenant, r.handle.to_json()
        )
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
            await asyncio.to_thread(self.deployments.set_runtime, r.model.id, r.model.tenant, None)

    async def _wait_healthy(self, r: _Running) -> None:
        """Until the model answers its health check. A process that died is started again
        first, so a retry of this step is a real second chance."""
        if r.handle is None or not r.runtime.alive(r.handle):
            await self._stop_model(r)
            await self._start_model(r)
        handle, client = r.handle, r.client
        assert handle is not None and client is not None
        reason = "no answer yet"

        async def healthy() -> bool:
            nonlocal reason
            if not r.runtime.alive(handle):  # no answer will ever come
                raise Unavailable(f"the model process exited while starting{self._log_tail(r)}")
            ok, reason = await client.health(timeout=2.0)
            return ok

        timeout = self.settings.health_timeout_s
        if not await wait_until(healthy, timeout, interval_s=0.1):
            raise Unavailable(f"not healthy within {timeout:.0f}s: {reason}{self._log_tail(r)}")
        r.health.last, r.health.ok = "ok", True

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

        def restart(reason: str) -> None:
            r.restart_request = r.restart_request or reason

        companion = Companion(
            r.spec,
            r.client,
            self.bus,
            self.telemetry,
            self.deployments,
            resolve,
            self.callback_base(),
            self.settings.companion,
            restart,
        )
        await companion.start()
        r.companion = companion
        self._by_token[companion.token] = r

    async def _stop_companion(self, r: _Running, why: str = "the model was stopped") -> None:
        if r.companion is not None:
            self._by_token.pop(r.companion.token, None)
            await r.companion.stop(why)
            # What it did stays readable (`describe`) until the model is deployed again.
            self._last_accounts[r.model.id] = {**r.companion.describe(), "stopped": why}
            self._gone[r.model.id] = {
                "id": r.spec.key,
                "restarts": r.health.restarts,
                "degraded": False,
                "readings": r.companion.readings(),
            }
            r.companion = None

    async def _stop_watching(self, s: _Stopping) -> None:
        """The first stop step: the monitor, then the companion."""
        if s.running is not None:
            if s.running.monitor is not None:
                await s.running.monitor.stop()
                s.running.monitor = None
            await self._stop_companion(s.running)

    async def _stop_running(self, s: _Stopping) -> None:
        if s.running is not None:
            await self._stop_model(s.running)
            await s.running.runtime.deprovision(s.running.spec)

    # -- health ---------------------------------------------------------------------------

    async def _watch(self, r: _Running, seed: bool = False) -> None:
        self._lost_models.pop(r.model.id, None)
        if r.model.state is ModelState.DEGRADED:  # restored after a platform restart
            r.health.problem = r.model.state_reason or "degraded before the platform restarted"
        r.monitor = HealthMonitor(_Watched(self, r), r.health, self._health_settings)
        if seed:
            r.monitor.seed_restarts(await self._recent_restarts(r.model))
        r.monitor.start(f"health-{r.model.id}")

    async def _recent_restarts(self, model: ModelRecord) -> list[int]:
        """When this model's restarts within the window began (epoch ms), as its saga history
        (saga `health`) has them."""
        since = now_ms() - int(self._health_settings.restart_window_s * 1000)
        steps = await self.sagas.history(self._key(model), 200)
        return [
            s.at
            for s in steps
            if s.saga == SagaName.HEALTH and s.status is StepStatus.STARTED and s.at >= since
        ]

    async def _restart(self, r: _Running) -> None:
        """The model process again; its companion pauses meanwhile (readings keep queueing)
        and goes on with the new process."""
        why = r.restart_request or "the model was restarted"
        r.restart_request = None
        if r.companion is not None:
            r.companion.pause(why)
        await self._stop_model(r)
        await self._start_model(r)
        await self._wait_healthy(r)
        assert r.client is not None
        if r.companion is None:
            await self._start_companion(r)
        else:
            await r.companion.resume(r.client)

    async def _degraded(self, r: _Running, reason: str | None) -> None:
        """The monitor's verdict, kept as the model's state (and published as a transition)."""
        current = r.model.state
        if reason is not None and current is ModelState.ACTIVE:
            r.model = await self._move(r.model, ModelEvent.DEGRADE, reason, quiet=True)
        elif reason is None and current is ModelState.DEGRADED:
            r.model = await self._move(r.model, ModelEvent.RECOVER, "well again", quiet=True)

    async def _restarted(self, r: _Running, reason: str, attempt: int, backoff_s: float) -> None:
        m = r.model
        log.warning(
            "model.restarting",
            extra={"fields": {"model": r.spec.key, "attempt": attempt, "reason": reason[:300]}},
        )
        await self.bus.publish_event(
            ModelRestarted(
                tenant=m.tenant,
                model=m.name,
                version=m.version,
                reason=reason[:2000],
                attempt=attempt,
                backoff_s=backoff_s,
            )
        )

    async def _lost(self, r: _Running, reason: str) -> None:
        """Health not recovered: nothing of the model keeps running, and it goes to draft."""
        await self._stop_companion(r, f"the model went to draft ({reason[:200]})")
        with contextlib.suppress(Exception):
            await self._stop_model(r)
        self._running.pop(r.model.id, None)
        self._lost_models[r.model.id] = (r.model, reason)
        await self._move(r.model, ModelEvent.UNHEALTHY, reason, quiet=True)

    # -- the platform's own start and stop --------------------------------------------------

    async def recover(self) -> None:
        """Resume or compensate what a previous run left unfinished (see the module doc)."""
        states = [
            ModelState.DEPLOYING,
            ModelState.STOPPING,
            ModelState.ACTIVE,
            ModelState.DEGRADED,
            ModelState.UPDATING,
        ]
        found = await asyncio.to_thread(self.models.in_states, states)
        for model in await self._one_version_each(found):
            await self._stop_leftover(model)
            saga = await self.sagas.get(self._key(model))
            in_update = saga is not None and saga.name == SagaName.UPDATE
            if model.state is ModelState.DEPLOYING and in_update:
                reason = "interrupted by a restart during an update"
                self._launch(model, self._undo_update(model, reason))
            elif model.state is ModelState.DEPLOYING:
                self._launch(model, self._deploy_saga(model, Resume.FROM_START))
            elif model.state is ModelState.STOPPING:
                reason = "stop finished after a restart"
                self._launch(model, self._stop_saga(model, reason, Resume.FROM_STEP))
            elif model.state is ModelState.UPDATING and in_update and saga and saga.unfinished:
                # The old version's own update saga begins only once the new one took over.
                reason = "replaced; its stop finished after a restart"
                self._launch(model, self._replaced_saga(model, reason, Resume.FROM_STEP))
            elif model.state is ModelState.UPDATING:
                moved = await self._move(
                    model, ModelEvent.UPDATE_FAILED, "update interrupted by a restart", quiet=True
                )
                self._launch(moved, self._restore_saga(moved))
            else:
                self._launch(model, self._restore_saga(model))
        await self._recover_retires()

    async def _one_version_each(self, models: list[ModelRecord]) -> list[ModelRecord]:
        """An older Fogline let a second version of a name deploy beside an active one. Of the
        versions of a name that would run again (active, or deploying but not in an update),
        one is kept: an active one before a deploying one, then the one that got there last
        (the latest decision); each other one is stopped, or its deploy undone, with the
        reason. What is left for `recover` is returned."""
        running: dict[tuple[str, str], list[ModelRecord]] = {}
        for model in models:
            if model.state in RUNNING or (
                model.state is ModelState.DEPLOYING and not await self._in_update(model)
            ):
                running.setdefault((model.tenant, model.name), []).append(model)
        set_aside: set[int] = set()
        for versions in running.values():
            kept = max(versions, key=lambda m: (m.state in RUNNING, m.updated_at, m.id))
            for model in versions:
                if model.id != kept.id:
                    set_aside.add(model.id)
                    await self._set_aside(model, kept)
        return [m for m in models if m.id not in set_aside]

    async def _set_aside(self, model: ModelRecord, kept: ModelRecord) -> None:
        """A second running version found by `recover`: stopped, or its deploy undone."""
        reason = (
            f"one version of a model runs at a time and {kept.version} is "
            f"{kept.state.value}: this one was set aside after a restart"
        )
        log.warning(
            "deployment.second_version_set_aside",
            extra={"fields": {"model": f"{model.name}:{model.version}", "kept": kept.version}},
        )
        await self._stop_leftover(model)
        if model.state is ModelState.DEPLOYING:
            self._launch(model, self._undo_update(model, reason, SagaName.DEPLOY))
            return
        async with self._deciding(model.tenant, model.name):  # the API serves meanwhile
            stopping = await self._move(model, ModelEvent.STOP, reason, quiet=True)
        self._launch(stopping, self._stop_saga(stopping, reason))

    async def _in_update(self, model: ModelRecord) -> bool:
        saga = await self.sagas.get(self._key(model))
        return saga is not None and saga.name == SagaName.UPDATE

    async def _recover_retires(self) -> None:
        """A retire a restart cut short is finished (its one step is idempotent)."""
        unfinished = await self.sagas.unfinished(SagaOwner.MODEL)
        retiring = {r.key.id for r in unfinished if r.name == SagaName.RETIRE}
        if not retiring:
            return
        states = [ModelState.STOPPED, ModelState.DRAFT]
        for model in await asyncio.to_thread(self.models.in_states, states):
            if str(model.id) in retiring:
                self._launch(model, self._retire_saga(model, Resume.FROM_STEP))

    async def _stop_leftover(self, model: ModelRecord) -> None:
        """A model process the previous run started (it should have died with it)."""
        runtime = await asyncio.to_thread(self.deployments.runtime, model.id)
        if not runtime:
            return
        handle = RuntimeHandle.from_json(runtime)
        kind = self.runtimes.get(handle.kind)
        if kind is not None:
            await kind.stop(handle)
        await asyncio.to_thread(self.deployments.set_runtime, model.id, model.tenant, None)
        await self.sagas.note(
            self._key(model),
            model.tenant,
            SagaName.RECOVER,
            "stop-model",
            StepStatus.COMPENSATED,
            1,
            "left by the previous run",
        )

    async def shutdown(self) -> None:
        """Stop every model process and companion; states stay as they are, so the next start
        restores active models and resumes unfinished sagas."""
        for task in self._tasks.values():
            task.cancel()
        for task in list(self._tasks.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for r in list(self._running.values()):
            if r.monitor is not None:
                await r.monitor.stop()
            with contextlib.suppress(Exception):
                await self._stop_companion(r, "the platform stopped")
            with contextlib.suppress(Exception):
                if r.client is not None:
                    await r.client.close()
                if r.handle is not None:
                    await r.runtime.stop(r.handle)
        self._running.clear()
        await self.amqp.close()

    # -- queries and events ---------------------------------------------------------------

    def check_callback(self, token: str) -> None:
        """NotFound unless a running companion gave out this callback address."""
        r = self._by_token.get(token)
        if r is None or r.companion is None:
            raise NotFound("no running companion has this callback address")

    async def on_callback(self, token: str, request_id: str, answer: dict[str, Any]) -> None:
        self.check_callback(token)
        r = self._by_token[token]
        assert r.companion is not None
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
        record = await self.sagas.get(self._key(model))
        steps = await self.sagas.history(self._key(model), 50)
        stale = await asyncio.to_thread(self.deployments.stale, model.id, 20)
        r = self._running.get(model.id)
        runtime = r.handle.to_json() if r is not None and r.handle is not None else None
        return {
            "state": model.state.value,
            "state_reason": model.state_reason,
            "saga": None
            if record is None
            else {
                "name": record.name,
                "status": str(record.status),
                "step": record.step,
                "detail": record.detail,
            },
            "runtime": runtime,
            "health": None
            if r is None
            else {
                "last": r.health.last,
                "failures": r.health.failures,
                "restarts": r.health.restarts,
                "problem": r.health.problem,
                "restarts_in_window": r.health.restarts_in_window,
                "next_backoff_s": r.health.next_backoff_s,
            },
            "dead_letters": await asyncio.to_thread(self.deployments.dead_letter_counts, model.id),
            # Outputs published but refused when stored (e.g. a device writes that telemetry).
            "outputs_refused_by_historian": await asyncio.to_thread(
                self.telemetry.dead_letter_counts, tenant, output_source(name, version)
            ),
            "companion": r.companion.describe()
            if r is not None and r.companion
            else self._last_accounts.get(model.id),
            "steps": [{**asdict(s), "status": str(s.status)} for s in steps],
            "stale_requests": [asdict(s) for s in stale],
        }

    async def backfill(
        self,
        tenant: str,
        name: str,
        version: str,
        asset: str,
        start: int,
        end: int,
        stateful_ok: bool = False,
    ) -> BackfillReport:
        """Run a deployed model over the stored history of one of its assets (see
        `Companion.backfill`). Refused: an inverted or empty range, one longer than
        MAX_BACKFILL_SPAN_MS, one that starts in the future, a model not running here, an
        asset not mapped to it, a stateful model unless `stateful_ok`."""
        problems = []
        if start > now_ms():
            problems.append(
                Problem("from", "is in the future: there is no stored history there to score")
            )
        elif end <= start:
            problems.append(Problem("to", "must be after from: the range is empty or inverted"))
        elif end - start > MAX_BACKFILL_SPAN_MS:
            problems.append(
                Problem(
                    "to",
                    f"at most {MAX_BACKFILL_SPAN_MS // 3_600_000} h per backfill; run one per "
                    "day for a longer range",
                )
            )
        if problems:
            raise InvalidInput.of(problems)
        model = await asyncio.to_thread(self.models.get_model, tenant, name, version)
        r = self._running.get(model.id)
        if r is None or r.companion is None or model.state not in RUNNING_STATES:
            raise Conflict(
                f"model {name} {version} is {model.state.value}, not running: deploy it "
                f"first (`fogline model deploy {name} {version}`)"
            )
        return await r.companion.backfill(asset, start, end, stateful_ok)

    async def dead_letters(
        self, tenant: str, name: str, version: str, limit: int, before_id: int | None
    ) -> list[StoredModelDeadLetter]:
        model = await asyncio.to_thread(self.models.get_model, tenant, name, version)
        return await asyncio.to_thread(self.deployments.dead_letters, model.id, limit, before_id)

    async def log_file(self, tenant: str, name: str, version: str) -> Path:
        """The model's process log on this platform; NotFound for a model of the tenant never
        started here (or hosted elsewhere: an external model's log is not the platform's)."""
        model = await asyncio.to_thread(self.models.get_model, tenant, name, version)
        where = getattr(self.runtimes.get("local"), "log_file", None)
        path = None if where is None else Path(where(model.tenant, model.name, model.version))
        if path is None or not await asyncio.to_thread(path.is_file):
            raise NotFound(
                f"model {name} {version} has no log on this platform: it was never started here"
            )
        return path

    def model_figures(self) -> list[dict[str, Any]]:
        """Each model this platform has run since it started, running or not: its restarts,
        whether it is degraded, and where the readings its companion accepted are (the last
        companion's, for a model no companion feeds now). For the metrics."""
        figures = dict(self._gone)
        for model_id, r in list(self._running.items()):
            figures[model_id] = {
                "id": r.spec.key,
                "restarts": r.health.restarts,
                "degraded": r.model.state is ModelState.DEGRADED,
                "readings": None if r.companion is None else r.companion.readings(),
            }
        return list(figures.values())

    def health_summary(self) -> list[dict[str, Any]]:
        """Each model this platform runs or is starting, and each it gave up on: state, health
        and restarts, from memory (no database), for `/api/v1/ready` and `fogline status`."""
        items = []
        for r in list(self._running.values()):
            h, m = r.health, r.model
            problem = None
            if h.ok is False:
                problem = f"unhealthy ({h.last})" if not h.failures else f"restarting ({h.last})"
            elif h.problem is not None:
                problem = f"degraded ({h.problem})"
            items.append(
                {
                    "id": f"{m.tenant}/{m.name}/{m.version}",
                    "state": m.state.value,
                    "healthy": h.ok,
                    "last": h.last,
                    "failures": h.failures,
                    "restarts": h.restarts,
                    "problem": problem,
                    "readings": None if r.companion is None else r.companion.readings(),
                }
            )
        for m, reason in list(self._lost_models.values()):
            items.append(
                {
                    "id": f"{m.tenant}/{m.name}/{m.version}",
                    "state": ModelState.DRAFT.value,
                    "healthy": False,
                    "last": reason,
                    "failures": 0,
                    "restarts": self._gone.get(m.id, {}).get("restarts", 0),
                    "problem": f"could not be brought back: {reason}",
                }
            )
        return items

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

    def _prepare(self, model: ModelRecord) -> _Running:
        spec = self._spec(model)
        return _Running(model, spec, self._runtime_for(spec))

    def _runtime_for(self, spec: ModelSpec) -> Runtime:
        kind = "external" if spec.manifest.model.hosted == "external" else "local"
        return self.runtimes[kind]


def _holding(live: list[ModelRecord]) -> str:
    """'0.1.0 is active' (or each of them, comma-separated)."""
    return ", ".join(f"{m.version} is {m.state.value}" for m in live)


def _wait_hint(live: list[ModelRecord]) -> str:
    """For a version on its way in or out: what to wait for before asking again."""
    waits = {
        ModelState.DEPLOYING: "wait until it is active (or back in draft, if it fails)",
        ModelState.UPDATING: "wait until its update ends",
        ModelState.STOPPING: "wait until it is stopped",
    }
    for m in live:
        if m.state in waits:
            return f"; {m.version} is {m.state.value}: {waits[m.state]}"
    return ""


class _Watched:
    """A running model as its health monitor sees it."""

    def __init__(self, manager: DeploymentManager, running: _Running) -> None:
        self.manager = manager
        self.running = running

    def alive(self) -> bool:
        r = self.running
        return r.handle is not None and r.runtime.alive(r.handle)

    async def check(self) -> tuple[bool, str]:
        assert self.running.client is not None
        return await self.running.client.health(timeout=2.0)

    def exit_reason(self) -> str:
        return f"the model process exited{self.manager._log_tail(self.running)}"

    def restart_requested(self) -> str | None:
        return self.running.restart_request

    def trouble(self) -> str | None:
        companion = self.running.companion
        return None if companion is None else companion.trouble()

    async def degraded(self, reason: str | None) -> None:
        await self.manager._degraded(self.running, reason)

    def hold(self, reason: str) -> None:
        if self.running.companion is not None:
            self.running.companion.pause(reason)

    async def restart(self) -> None:
        await self.manager._restart(self.running)

    async def restarted(self, reason: str, attempt: int, backoff_s: float) -> None:
        await self.manager._restarted(self.running, reason, attempt, backoff_s)

    async def give_up(self, reason: str) -> None:
        await self.manager._lost(self.running, reason)

    async def record(self, status: StepStatus, attempt: int, detail: str | None) -> None:
        model = self.running.model
        await self.manager.sagas.note(
            self.manager._key(model),
            model.tenant,
            SagaName.HEALTH,
            "restart",
            status,
            attempt,
            detail,
        )
