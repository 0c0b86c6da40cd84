import pytest

from fogline.domain.lifecycle import (
    TRANSITIONS,
    IllegalTransition,
    ModelEvent,
    ModelState,
    allowed_events,
    next_state,
)

S, E = ModelState, ModelEvent


def test_the_happy_path() -> None:
    state = S.DRAFT
    for event, expected in [
        (E.DEPLOY, S.DEPLOYING),
        (E.DEPLOYED, S.ACTIVE),
        (E.STOP, S.STOPPING),
        (E.STOPPED, S.STOPPED),
        (E.RETIRE, S.DRAFT),
        (E.REMOVE, S.REMOVED),
    ]:
        state = next_state(state, event)
        assert state is expected


def test_an_update_stops_the_old_version_or_keeps_it_running() -> None:
    assert next_state(S.ACTIVE, E.UPDATE) is S.UPDATING
    assert next_state(S.UPDATING, E.UPDATED) is S.STOPPED
    assert next_state(S.UPDATING, E.UNHEALTHY) is S.DRAFT


def test_failures_go_back_where_the_design_says() -> None:
    assert next_state(S.DEPLOYING, E.DEPLOY_FAILED) is S.DRAFT
    assert next_state(S.ACTIVE, E.UNHEALTHY) is S.DRAFT
    assert next_state(S.UPDATING, E.UPDATE_FAILED) is S.ACTIVE


@pytest.mark.parametrize("state", [s for s in ModelState if s is not S.DRAFT])
def test_a_model_is_removed_only_from_draft(state: ModelState) -> None:
    with pytest.raises(IllegalTransition, match="allowed from: draft"):
        next_state(state, E.REMOVE)


def test_every_pair_outside_the_table_is_refused() -> None:
    for state in ModelState:
        for event in ModelEvent:
            if (state, event) in TRANSITIONS:
                continue
            with pytest.raises(IllegalTransition):
                next_state(state, event)
    assert allowed_events(S.REMOVED) == []
    assert set(allowed_events(S.DRAFT)) == {E.DEPLOY, E.REMOVE}


def test_a_degraded_model_recovers_stops_updates_or_goes_to_draft() -> None:
    assert next_state(S.ACTIVE, E.DEGRADE) is S.DEGRADED
    assert next_state(S.DEGRADED, E.RECOVER) is S.ACTIVE
    assert next_state(S.DEGRADED, E.UNHEALTHY) is S.DRAFT
    assert next_state(S.DEGRADED, E.STOP) is S.STOPPING
    assert next_state(S.DEGRADED, E.UPDATE) is S.UPDATING
    with pytest.raises(IllegalTransition, match="'recover' is allowed from: degraded"):
        next_state(S.ACTIVE, E.RECOVER)
    with pytest.raises(IllegalTransition):
        next_state(S.DEGRADED, E.DEPLOY)
