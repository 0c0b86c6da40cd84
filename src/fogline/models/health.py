"""The health monitor of a running model.

A crash is noticed within half a second, a failing health check within `interval_s`. Each
time, the model is started again, with backoff, up to `max_failures` times in a row; when it
still cannot be, the monitor gives up (the deployment sends the model back to draft) and ends.
Every restart attempt and outcome is kept in the model's saga history (saga `health`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Protocol

from fogline.domain.errors import FoglineError
from fogline.domain.sagas import StepStatus
from fogline.retry import retrying

CRASH_CHECK_S = 0.5  # how often the process is looked at; the health endpoint less often


@dataclass(frozen=True)
class HealthSettings:
    interval_s: float = 2.0  # between health checks
    max_failures: int = 3  # failed restarts in a row before giving up
    backoff_s: float = 0.5  # before the second restart, doubled before each next


@dataclass
class Health:
    """What the deployment shows of a model's health."""

    last: str | None = None  # the last health answer, or why the process ended
    ok: bool | None = None  # whether the last check passed (None: not checked yet)
    failures: int = 0  # failed restarts in a row, while recovering
    restarts: int = 0  # successful ones


class Watched(Protocol):
    """What the monitor needs of the model it watches."""

    def alive(self) -> bool: ...
    async def check(self) -> tuple[bool, str]: ...  # (healthy, the answer or why not)
    def exit_reason(self) -> str: ...  # why the process is gone, as far as its log says
    async def restart(self) -> None: ...
    async def give_up(self, reason: str) -> None: ...
    async def record(self, status: StepStatus, attempt: int, detail: str | None) -> None: ...


class HealthMonitor:
    def __init__(self, watched: Watched, health: Health, settings: HealthSettings) -> None:
        self.watched = watched
        self.health = health
        self.settings = settings
        self._task: asyncio.Task[None] | None = None

    def start(self, name: str) -> None:
        self._task = asyncio.create_task(self._watch(), name=name)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _watch(self) -> None:
        interval = self.settings.interval_s
        next_check = time.monotonic() + interval
        while True:
            await asyncio.sleep(CRASH_CHECK_S)
            if self.watched.alive():
                if time.monotonic() < next_check:
                    continue
                next_check = time.monotonic() + interval
                ok, reason = await self.watched.check()
                self.health.last, self.health.ok = reason, ok
                if ok:
                    continue
            else:
                reason = self.watched.exit_reason()
                self.health.last, self.health.ok = reason, False
            if not await self._recover(reason):
                return
            next_check = time.monotonic() + interval

    async def _recover(self, reason: str) -> bool:
        """Restart the model until it is healthy again; False when it never was, after giving
        up. Each attempt is recorded with why it was needed."""
        retried = (FoglineError, OSError)
        limit = self.settings.max_failures
        try:
            async for attempt in retrying(limit, self.settings.backoff_s, retry_on=retried):
                with attempt:
                    self.health.failures = attempt.retry_state.attempt_number
                    await self.watched.record(StepStatus.STARTED, self.health.failures, reason)
                    try:
                        await self.watched.restart()
                    except retried as exc:
                        reason = exc.message if isinstance(exc, FoglineError) else str(exc)
                        await self.watched.record(StepStatus.FAILED, self.health.failures, reason)
                        raise
        except retried:
            await self.watched.give_up(f"health not recovered after {limit} attempts: {reason}")
            return False
        self.health.restarts += 1
        self.health.failures = 0
        self.health.ok = True
        await self.watched.record(StepStatus.DONE, 1, None)
        return True
