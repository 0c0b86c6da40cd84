"""The saga engine.

A saga is an ordered list of steps, each with an optional compensation. The engine runs them
in order and persists every attempt and outcome; a step that fails is retried with backoff
(`RetryPolicy`); when it still fails, the steps already done are compensated in reverse and the
saga fails with the reason. Every status change is checked against the tables of
`domain/sagas.py`.

The engine knows nothing of what the steps do or whom they are for: a saga belongs to an owner
(`SagaKey`: a model, a rollout, a pipeline), one at a time, and the owner hands each step the
context it works on. After a crash, the owner finds its unfinished sagas (`unfinished`) and
decides how each goes on (`resume`): from the start (what the last run did is gone), from the
step it stopped at (what was done is not done again), or compensated.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Generic, Protocol, TypeVar

from fogline.domain.errors import FoglineError, InvalidInput
from fogline.domain.sagas import (
    SagaKey,
    SagaName,
    SagaRecord,
    SagaStatus,
    SagaStepRecord,
    StepStatus,
    next_saga_status,
    next_step_status,
)
from fogline.retry import retrying

log = logging.getLogger(__name__)

C = TypeVar("C")  # what a saga's steps work on: the owner builds it, each step gets it


@dataclass(frozen=True)
class Step(Generic[C]):
    name: str
    run: Callable[[C], Awaitable[None]]
    compensate: Callable[[C], Awaitable[None]] | None = None  # undoes `run`


@dataclass(frozen=True)
class Saga(Generic[C]):
    name: str  # a `SagaName`
    steps: Sequence[Step[C]]


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3  # per step
    backoff_s: float = 0.5  # before the second attempt, doubled before each next
    retry_on: tuple[type[Exception], ...] = (FoglineError, OSError)
    never_retry: tuple[type[Exception], ...] = (InvalidInput,)  # bad input stays bad


@dataclass(frozen=True)
class SagaFailed:
    step: str  # the step that failed for good
    reason: str


class Resume(StrEnum):
    """How an interrupted saga goes on after a restart; its owner decides."""

    FROM_START = "from-start"  # a new run of every step: what the last one did is gone
    FROM_STEP = "from-step"  # the done steps are skipped, the interrupted one runs again
    COMPENSATE = "compensate"  # the done steps are undone in reverse and the saga fails


INTERRUPTED = "interrupted by a restart"


class SagaStore(Protocol):
    def begin(self, key: SagaKey, tenant: str, saga: str) -> int: ...
    def record(
        self,
        key: SagaKey,
        tenant: str,
        run: int | None,
        saga: str,
        step: str,
        status: StepStatus,
        attempt: int,
        detail: str | None,
    ) -> None: ...
    def set_status(self, key: SagaKey, status: SagaStatus, detail: str | None = None) -> None: ...
    def get(self, key: SagaKey) -> SagaRecord | None: ...
    def unfinished(self, owner: str) -> list[SagaRecord]: ...
    def steps(
        self, key: SagaKey, limit: int = 200, run: int | None = None
    ) -> list[SagaStepRecord]: ...


@dataclass
class _Run:
    """One saga of one owner as it goes: where each step stands, checked against the table."""

    key: SagaKey
    tenant: str
    number: int
    name: str
    status: SagaStatus = SagaStatus.RUNNING
    steps: dict[str, StepStatus] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class StepRecorded:
    """What the engine has just persisted: told to the owner's observer (which publishes it)."""

    key: SagaKey
    tenant: str
    saga: str
    step: str
    status: StepStatus
    attempt: int
    detail: str | None


StepObserver = Callable[[StepRecorded], Awaitable[None]]


class SagaEngine:
    def __init__(
        self,
        store: SagaStore,
        retry: RetryPolicy | None = None,
        on_step: StepObserver | None = None,
    ) -> None:
        self.store = store
        self.retry = retry or RetryPolicy()
        self.on_step = on_step

    # -- running ------------------------------------------------------------------------------

    async def run(self, key: SagaKey, tenant: str, saga: Saga[C], context: C) -> SagaFailed | None:
        """Run every step of a new saga of this owner; None when all succeeded, else why it
        failed (after the compensation)."""
        number = await asyncio.to_thread(self.store.begin, key, tenant, saga.name)
        return await self._go_on(_Run(key, tenant, number, saga.name), saga, context)

    async def resume(
        self,
        key: SagaKey,
        tenant: str,
        saga: Saga[C],
        context: C,
        how: Resume,
        reason: str = INTERRUPTED,
    ) -> SagaFailed | None:
        """Go on with the owner's interrupted saga as `how` says. With no unfinished saga of
        that name, FROM_START and FROM_STEP run a new one and COMPENSATE has nothing to undo.
        `reason` is why the interrupted attempt failed, or why the compensated saga did."""
        record = await self.get(key)
        resumable = record is not None and record.unfinished and record.name == saga.name
        if how is Resume.COMPENSATE:
            failure = SagaFailed((record.step if record else None) or "", reason)
            if record is not None and resumable:
                await self._compensate(await self._reload(record), saga, context, failure)
            return failure
        await self._note_resume(key, tenant, saga, record)
        if how is Resume.FROM_START or record is None or not resumable:
            return await self.run(key, tenant, saga, context)
        run = await self._reload(record)
        if run.status is SagaStatus.COMPENSATING:  # half undone: it can only go on undoing
            failure = SagaFailed(record.step or "", record.detail or reason)
            await self._compensate(run, saga, context, failure)
            return failure
        return await self._go_on(run, saga, context, reason)

    async def _note_resume(
        self, key: SagaKey, tenant: str, saga: Saga[C], record: SagaRecord | None
    ) -> None:
        if record is not None and record.name == saga.name:
            where = f"{saga.name} interrupted at {record.step}"
        else:  # its owner moved on before the saga began
            where = f"{saga.name} interrupted before its first step"
        await self.note(key, tenant, SagaName.RECOVER, "resume", StepStatus.STARTED, 1, where)

    async def _go_on(
        self, run: _Run, saga: Saga[C], context: C, interrupted: str = INTERRUPTED
    ) -> SagaFailed | None:
        for step in saga.steps:
            if run.steps.get(step.name) is StepStatus.DONE:
                continue  # done before a restart
            failure = await self._attempt(run, step, context, interrupted)
            if failure is not None:
                await self._compensate(run, saga, context, failure)
                return failure
        await self._set_status(run, SagaStatus.DONE)
        return None

    async def _attempt(
        self, run: _Run, step: Step[C], context: C, interrupted: str
    ) -> SagaFailed | None:
        """Run one step, retried as the policy says. A crash counts as a failed attempt."""
        policy = self.retry
        tried = run.attempts.get(step.name, 0)
        if run.steps.get(step.name) is StepStatus.STARTED:
            await self._record(run, step.name, StepStatus.FAILED, tried, interrupted)
        number = tried
        try:
            async for attempt in retrying(
                max(1, policy.attempts - tried),
                policy.backoff_s,
                policy.retry_on,
                policy.never_retry,
            ):
                with attempt:
                    number = tried + attempt.retry_state.attempt_number
                    await self._record(run, step.name, StepStatus.STARTED, number)
                    try:
                        await step.run(context)
                    except policy.retry_on as exc:
                        await self._record(
                            run, step.name, StepStatus.FAILED, number, self._describe(exc)
                        )
                        raise
        except policy.retry_on as exc:
            error = self._describe(exc)
            # The policy's attempts, even when the error was never retried: the reason users
            # have always read.
            return SagaFailed(
                step.name, f"{step.name} failed after {policy.attempts} attempts: {error}"
            )
        await self._record(run, step.name, StepStatus.DONE, number)
        return None

    def _describe(self, exc: Exception) -> str:
        """A final error tells everything (the problems of bad input); a retried one its
        message."""
        if isinstance(exc, self.retry.never_retry) or not isinstance(exc, FoglineError):
            return str(exc)
        return exc.message

    async def _compensate(self, run: _Run, saga: Saga[C], context: C, failure: SagaFailed) -> None:
        """Undo the done steps in reverse, then fail the saga. A compensation that fails is
        logged and the next one still runs: undoing as much as can be undone is the point."""
        undo = [
            step
            for step in reversed(saga.steps)
            if step.compensate is not None and run.steps.get(step.name) is StepStatus.DONE
        ]
        if undo and run.status is not SagaStatus.COMPENSATING:
            await self._set_status(run, SagaStatus.COMPENSATING, failure.reason)
        for step in undo:
            assert step.compensate is not None
            try:
                await step.compensate(context)
            except Exception:
                log.warning(
                    "saga.compensation_failed",
                    extra={"fields": {"saga": run.name, "step": step.name, "owner": run.key.id}},
                    exc_info=True,
                )
            await self._record(run, step.name, StepStatus.COMPENSATED, 1)
        await self._set_status(run, SagaStatus.FAILED, failure.reason)

    # -- persistence ----------------------------------------------------------------------------

    async def _reload(self, record: SagaRecord) -> _Run:
        """An interrupted saga as its steps left it, replayed through the transition table."""
        run = _Run(record.key, record.tenant, record.run, record.name, record.status)
        steps = await asyncio.to_thread(self.store.steps, record.key, 10_000, record.run)
        for s in steps:
            run.steps[s.step] = next_step_status(run.steps.get(s.step), s.status)
            if s.status is StepStatus.STARTED:
                run.attempts[s.step] = s.attempt
        return run

    async def _record(
        self, run: _Run, step: str, status: StepStatus, attempt: int, detail: str | None = None
    ) -> None:
        run.steps[step] = next_step_status(run.steps.get(step), status)
        if status is StepStatus.STARTED:
            run.attempts[step] = attempt
        await asyncio.to_thread(
            self.store.record,
            run.key,
            run.tenant,
            run.number,
            run.name,
            step,
            status,
            attempt,
            detail,
        )
        await self._observed(
            StepRecorded(run.key, run.tenant, run.name, step, status, attempt, detail)
        )

    async def _observed(self, recorded: StepRecorded) -> None:
        """Tell the observer after the record is stored; an observer that fails does not fail
        the saga (the store has the record, which is what a restart goes by)."""
        if self.on_step is None:
            return
        try:
            await self.on_step(recorded)
        except Exception:
            log.exception("saga.observer_failed", extra={"fields": {"step": recorded.step}})

    async def _set_status(self, run: _Run, status: SagaStatus, detail: str | None = None) -> None:
        run.status = next_saga_status(run.status, status)
        await asyncio.to_thread(self.store.set_status, run.key, status, detail)

    # -- what owners read and note -------------------------------------------------------------

    async def note(
        self,
        key: SagaKey,
        tenant: str,
        saga: str,
        step: str,
        status: StepStatus,
        attempt: int,
        detail: str | None,
    ) -> None:
        """A record kept beside the owner's sagas, in the same history, outside any run (a
        health monitor's restarts, what a restart found); the saga itself is left as it is."""
        await asyncio.to_thread(
            self.store.record, key, tenant, None, saga, step, status, attempt, detail
        )
        await self._observed(StepRecorded(key, tenant, saga, step, status, attempt, detail))

    async def get(self, key: SagaKey) -> SagaRecord | None:
        return await asyncio.to_thread(self.store.get, key)

    async def unfinished(self, owner: str) -> list[SagaRecord]:
        """The owner kind's sagas a crash (or a shutdown) interrupted."""
        return await asyncio.to_thread(self.store.unfinished, owner)

    async def history(self, key: SagaKey, limit: int) -> list[SagaStepRecord]:
        """The owner's latest step records, of every saga, oldest first."""
        return await asyncio.to_thread(self.store.steps, key, limit)
