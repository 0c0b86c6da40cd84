"""Retrying with backoff and waiting for a condition with a deadline: the one place for both.

- `retrying`: a bounded number of attempts of a block, with exponential backoff between them
  (tenacity underneath); the last error comes out as it was raised.
- `Backoff`: the growing delay of a loop that retries until it succeeds (a supervisor, a
  consumer loop), capped and reset after each success.
- `wait_until` / `block_until`: poll a condition until it holds or a deadline passes, from
  async code / from plain blocking code (the demo's and the benchmarks' HTTP clients).

Imports nothing else of Fogline's, so every layer may use it.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    retry_base,
    retry_if_exception_type,
    retry_if_not_exception_type,
    stop_after_attempt,
    wait_exponential,
)

T = TypeVar("T")

ErrorTypes = tuple[type[BaseException], ...]


def retrying(
    attempts: int,
    first_delay_s: float,
    retry_on: ErrorTypes,
    never_retry: ErrorTypes = (),
) -> AsyncRetrying:
    """Up to `attempts` runs of a block, `first_delay_s` before the second and twice as long
    before each next. An error of `retry_on` (and not of `never_retry`) is tried again; any
    other, or the last one, is raised as it was. Use it as

        async for attempt in retrying(3, 0.5, retry_on=(OSError,)):
            with attempt:
                ...  # attempt.retry_state.attempt_number counts from 1
    """
    retry: retry_base = retry_if_exception_type(retry_on)
    if never_retry:
        retry = retry & retry_if_not_exception_type(never_retry)
    return AsyncRetrying(
        stop=stop_after_attempt(max(1, attempts)),
        wait=wait_exponential(multiplier=first_delay_s),
        retry=retry,
        reraise=True,
    )


class Backoff:
    """The delays of a loop that retries until it succeeds: `first_s`, doubled after each
    failure up to `cap_s`, back to `first_s` after a success (`reset`)."""

    def __init__(self, first_s: float, cap_s: float = math.inf) -> None:
        self.first_s = first_s
        self.cap_s = cap_s
        self._next_s = first_s

    def next(self) -> float:
        """The delay to wait now; the following one is twice as long."""
        delay = self._next_s
        self._next_s = min(delay * 2, self.cap_s)
        return delay

    def reset(self) -> None:
        self._next_s = self.first_s


async def wait_until(
    condition: Callable[[], Awaitable[T]], timeout_s: float, interval_s: float = 0.05
) -> T | None:
    """Check `condition` every `interval_s` until it returns something true, and return that;
    None once `timeout_s` has passed. It is checked at least once; an error it raises ends the
    wait (a condition raises to say that waiting longer cannot help)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(interval_s)


def block_until(condition: Callable[[], T], timeout_s: float, interval_s: float = 0.05) -> T | None:
    """`wait_until` for blocking code: the calling thread sleeps between checks."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval_s)
