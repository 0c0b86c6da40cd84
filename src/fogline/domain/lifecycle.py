"""The model lifecycle as an explicit transition table: (state, event) -> state.

Every move a model makes is looked up here; anything not in the table is refused with the
states it could have moved from. The saga that drives deployments (models context) persists
each step and only ever changes state through `next_state`.
"""

from __future__ import annotations

from enum import Enum

from fogline.domain.errors import Conflict


class ModelState(Enum):
    DRAFT = "draft"  # submitted; may be edited, mapped, deployed or removed
    DEPLOYING = "deploying"  # the saga is provisioning, starting, health-checking
    ACTIVE = "active"  # running, fed by its data companion
    # Running, but not well: it crashed and is being restarted, fails its health check, or its
    # calls fail or time out. Still fed (readings queue up); back to active once it has been
    # well for a while, to draft when restarts do not help.
    DEGRADED = "degraded"
    UPDATING = "updating"  # running while a newer version is rolled in to replace it
    STOPPING = "stopping"
    STOPPED = "stopped"  # not running; may be deployed again or sent back to draft
    REMOVED = "removed"  # gone; kept only as history


class ModelEvent(Enum):
    DEPLOY = "deploy"
    DEPLOYED = "deployed"
    DEPLOY_FAILED = "deploy-failed"  # retries and compensation exhausted: back to draft
    UPDATE = "update"
    UPDATED = "updated"  # the newer version took over: this one is stopped
    UPDATE_FAILED = "update-failed"  # the newer version failed: this one keeps running
    UNHEALTHY = "unhealthy"  # health not recovered after N attempts: back to draft
    DEGRADE = "degrade"  # crashed, unhealthy, or its calls fail: the reason says which
    RECOVER = "recover"  # well again for long enough
    STOP = "stop"
    STOPPED = "stopped"
    RETIRE = "retire"  # a stopped model goes back to draft
    REMOVE = "remove"


S, E = ModelState, ModelEvent

TRANSITIONS: dict[tuple[ModelState, ModelEvent], ModelState] = {
    (S.DRAFT, E.DEPLOY): S.DEPLOYING,
    (S.STOPPED, E.DEPLOY): S.DEPLOYING,
    (S.DEPLOYING, E.DEPLOYED): S.ACTIVE,
    (S.DEPLOYING, E.DEPLOY_FAILED): S.DRAFT,
    (S.ACTIVE, E.UPDATE): S.UPDATING,
    (S.UPDATING, E.UPDATED): S.STOPPED,
    (S.UPDATING, E.UPDATE_FAILED): S.ACTIVE,
    (S.ACTIVE, E.UNHEALTHY): S.DRAFT,
    (S.ACTIVE, E.DEGRADE): S.DEGRADED,
    (S.DEGRADED, E.RECOVER): S.ACTIVE,
    (S.DEGRADED, E.UNHEALTHY): S.DRAFT,
    (S.DEGRADED, E.STOP): S.STOPPING,
    (S.DEGRADED, E.UPDATE): S.UPDATING,  # replacing a broken version is what an update is for
    (S.UPDATING, E.UNHEALTHY): S.DRAFT,
    (S.ACTIVE, E.STOP): S.STOPPING,
    (S.STOPPING, E.STOPPED): S.STOPPED,
    (S.STOPPED, E.RETIRE): S.DRAFT,
    (S.DRAFT, E.REMOVE): S.REMOVED,
}


class IllegalTransition(Conflict):
    """A lifecycle move the table does not allow."""


def next_state(state: ModelState, event: ModelEvent) -> ModelState:
    target = TRANSITIONS.get((state, event))
    if target is None:
        allowed = sorted(s.value for (s, e) in TRANSITIONS if e is event)
        raise IllegalTransition(
            f"a model in state {state.value!r} cannot {event.value}; "
            f"'{event.value}' is allowed from: {', '.join(allowed) or 'nowhere'}"
        )
    return target


def allowed_events(state: ModelState) -> list[ModelEvent]:
    return [e for (s, e) in TRANSITIONS if s is state]
