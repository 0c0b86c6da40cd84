"""The one helper for retrying with backoff and waiting on a condition."""

import time

import pytest

from fogline.retry import Backoff, block_until, retrying, wait_until


def test_backoff_doubles_up_to_its_cap_and_starts_over_after_a_success() -> None:
    backoff = Backoff(0.5, cap_s=3.0)
    assert [backoff.next() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    backoff.reset()
    assert backoff.next() == 0.5


async def test_retrying_waits_longer_each_time_and_raises_the_last_error() -> None:
    started: list[float] = []
    with pytest.raises(OSError, match="attempt 3"):
        async for attempt in retrying(3, 0.02, retry_on=(OSError,)):
            with attempt:
                started.append(time.monotonic())
                raise OSError(f"attempt {attempt.retry_state.attempt_number}")
    assert len(started) == 3
    first, second = started[1] - started[0], started[2] - started[1]
    assert first >= 0.015 and second >= 0.035  # 0.02 then 0.04 (the clock may round down)


async def test_retrying_gives_up_at_once_on_errors_it_must_not_retry() -> None:
    tried = 0
    with pytest.raises(PermissionError):
        async for attempt in retrying(3, 0.0, retry_on=(OSError,), never_retry=(PermissionError,)):
            with attempt:
                tried += 1
                raise PermissionError("no")
    assert tried == 1
    with pytest.raises(KeyError):  # not one it retries
        async for attempt in retrying(3, 0.0, retry_on=(OSError,)):
            with attempt:
                tried += 1
                raise KeyError("x")
    assert tried == 2


async def test_wait_until_returns_what_the_condition_found_or_none_at_the_deadline() -> None:
    checks = 0

    async def third_time() -> str | None:
        nonlocal checks
        checks += 1
        return "ready" if checks == 3 else None

    assert await wait_until(third_time, 5.0, 0.001) == "ready"

    async def never() -> bool:
        return False

    assert await wait_until(never, 0.01, 0.001) is None

    async def broken() -> bool:
        raise RuntimeError("cannot help to wait")

    with pytest.raises(RuntimeError):
        await wait_until(broken, 5.0)


def test_block_until_checks_at_least_once_even_without_time() -> None:
    assert block_until(lambda: 42, 0.0) == 42
    assert block_until(lambda: 0, 0.01, 0.001) is None
