"""Sagas: long-running work in ordered steps, each persisted, undone in reverse when a later
step fails, and resumed after a crash (the engine is `fogline.saga`).

Here are the words and the rules, no I/O: who owns a saga, the saga names, the statuses of a
saga and of its steps, and the transition tables every status change is checked against.

A step's attempts go started -> failed -> started ... -> done; a done step may later be
compensated. A saga is running until it is done, or compensating (undoing its done steps) and
then failed. Anything else is refused, like the model lifecycle (`domain/lifecycle.py`) does.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from fogline.domain.errors import Conflict


class SagaOwner(StrEnum):
    """The kinds of things that run sagas; one saga at a time per owner."""

    MODEL = "model"  # deploy, update, stop, restore


class SagaName(StrEnum):
    DEPLOY = "deploy"
    UPDATE = "update"  # the new version deploys and takes over; the old one is stopped
    STOP = "stop"
    RESTORE = "restore"  # an active model of a previous run, started again
    RETIRE = "retire"  # a stopped model back to draft
    # Not sagas of their own: records kept beside a model's sagas, in the same history.
    HEALTH = "health"  # the health monitor's restarts
    RECOVER = "recover"  # what a restart found and did (leftovers stopped, sagas resumed)


class SagaStatus(StrEnum):
    RUNNING = "running"
    COMPENSATING = "compensating"  # a step failed for good: the done ones are being undone
    DONE = "done"
    FAILED = "failed"


class StepStatus(StrEnum):
    STARTED = "started"  # an attempt began
    DONE = "done"
    FAILED = "failed"  # an attempt failed; another may follow
    COMPENSATED = "compensated"  # undone after a later step failed


St = StepStatus

STEP_TRANSITIONS: dict[StepStatus | None, frozenset[StepStatus]] = {
    None: frozenset({St.STARTED}),  # not tried yet in this run
    St.STARTED: frozenset({St.DONE, St.FAILED}),
    St.FAILED: frozenset({St.STARTED}),  # the next attempt
    St.DONE: frozenset({St.COMPENSATED}),
    St.COMPENSATED: frozenset(),
}

Sa = SagaStatus

SAGA_TRANSITIONS: dict[SagaStatus, frozenset[SagaStatus]] = {
    Sa.RUNNING: frozenset({Sa.DONE, Sa.COMPENSATING, Sa.FAILED}),
    Sa.COMPENSATING: frozenset({Sa.FAILED}),
    Sa.DONE: frozenset(),
    Sa.FAILED: frozenset(),
}

UNFINISHED = (SagaStatus.RUNNING, SagaStatus.COMPENSATING)


class IllegalSagaTransition(Conflict):
    """A step or saga status change the tables do not allow."""


def next_step_status(current: StepStatus | None, new: StepStatus) -> StepStatus:
    if new not in STEP_TRANSITIONS[current]:
        allowed = sorted(str(s) for s, nexts in STEP_TRANSITIONS.items() if new in nexts)
        raise IllegalSagaTransition(
            f"a step that is {current or 'not started'} cannot become {new}; "
            f"'{new}' follows: {', '.join(allowed) or 'nothing'}"
        )
    return new


def next_saga_status(current: SagaStatus, new: SagaStatus) -> SagaStatus:
    if new not in SAGA_TRANSITIONS[current]:
        raise IllegalSagaTransition(f"a saga that is {current} cannot become {new}")
    return new


@dataclass(frozen=True)
class SagaKey:
    """Whose saga: the owner's kind (a `SagaOwner`) and its id (a model's, a rollout's)."""

    owner: str
    id: str


@dataclass(frozen=True)
class SagaRecord:
    """Where an owner's latest saga stands. `run` counts the sagas of this owner; the steps
    of this saga carry it."""

    key: SagaKey
    tenant: str
    name: str
    run: int
    status: SagaStatus
    step: str | None  # the step last recorded
    detail: str | None  # why it failed
    updated_at: int

    @property
    def unfinished(self) -> bool:
        return self.status in UNFINISHED


@dataclass(frozen=True)
class SagaStepRecord:
    """One attempt, outcome or compensation of a step, or a record kept beside the sagas
    (see `SagaName.HEALTH`, `SagaName.RECOVER`)."""

    saga: str
    step: str
    status: StepStatus
    attempt: int
    detail: str | None
    at: int
