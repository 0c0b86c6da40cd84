import pytest

from fogline.domain.sagas import (
    SAGA_TRANSITIONS,
    STEP_TRANSITIONS,
    IllegalSagaTransition,
    SagaStatus,
    StepStatus,
    next_saga_status,
    next_step_status,
)

St, Sa = StepStatus, SagaStatus


def test_a_step_is_retried_until_done_then_may_be_compensated() -> None:
    status: StepStatus | None = None
    for new in (St.STARTED, St.FAILED, St.STARTED, St.FAILED, St.STARTED, St.DONE, St.COMPENSATED):
        status = next_step_status(status, new)
        assert status is new


@pytest.mark.parametrize(
    ("current", "new"),
    [
        (None, St.DONE),  # done without being started
        (None, St.COMPENSATED),  # nothing to undo
        (St.STARTED, St.STARTED),  # an attempt ends before the next begins
        (St.STARTED, St.COMPENSATED),
        (St.FAILED, St.DONE),
        (St.FAILED, St.COMPENSATED),  # a failed step did nothing to undo
        (St.DONE, St.STARTED),  # done steps are not done again
        (St.COMPENSATED, St.STARTED),
        (St.COMPENSATED, St.COMPENSATED),
    ],
)
def test_a_step_cannot_skip_or_go_back(current: StepStatus | None, new: StepStatus) -> None:
    with pytest.raises(IllegalSagaTransition, match=f"cannot become {new}"):
        next_step_status(current, new)


def test_every_step_move_outside_the_table_is_refused() -> None:
    for current in [None, *StepStatus]:
        for new in StepStatus:
            if new in STEP_TRANSITIONS[current]:
                assert next_step_status(current, new) is new
            else:
                with pytest.raises(IllegalSagaTransition):
                    next_step_status(current, new)


def test_the_message_says_what_a_status_may_follow() -> None:
    with pytest.raises(IllegalSagaTransition, match="'compensated' follows: done"):
        next_step_status(St.FAILED, St.COMPENSATED)
    with pytest.raises(IllegalSagaTransition, match="not started cannot become done"):
        next_step_status(None, St.DONE)


def test_a_saga_ends_done_or_failed_and_compensates_only_on_the_way_to_failed() -> None:
    assert next_saga_status(Sa.RUNNING, Sa.DONE) is Sa.DONE
    assert next_saga_status(Sa.RUNNING, Sa.COMPENSATING) is Sa.COMPENSATING
    assert next_saga_status(Sa.COMPENSATING, Sa.FAILED) is Sa.FAILED
    assert next_saga_status(Sa.RUNNING, Sa.FAILED) is Sa.FAILED  # nothing was done to undo
    for current in SagaStatus:
        for new in SagaStatus:
            if new not in SAGA_TRANSITIONS[current]:
                with pytest.raises(IllegalSagaTransition):
                    next_saga_status(current, new)
    assert SAGA_TRANSITIONS[Sa.DONE] == SAGA_TRANSITIONS[Sa.FAILED] == frozenset()


def test_statuses_are_the_strings_the_store_and_the_api_show() -> None:
    assert [str(s) for s in StepStatus] == ["started", "done", "failed", "compensated"]
    assert [str(s) for s in SagaStatus] == ["running", "compensating", "done", "failed"]
