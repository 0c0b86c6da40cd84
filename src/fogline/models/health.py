"""The health monitor of a running model: it tells the truth about the model, and restarts it
when that helps.

Every `CRASH_CHECK_S` it looks at the process, every `interval_s` it asks the health endpoint,
and each time it asks the companion how the calls go. A model that crashed, fails its health
check, or was asked to be restarted (a call outlived its timeout) is degraded and restarted; a
model whose calls fail or whose backlog waits too long is degraded (a restart would not help a
model that answers with errors). A degraded model that has been well for `stable_s` is active
again.

Restarts back off exponentially (`backoff_s`, doubled for each restart in the window, at most
`backoff_cap_s`); `restart_limit` restarts within `restart_window_s`, or `max_failures` failed
restart attempts in a row, and the monitor gives up: the deployment sends the model back to
draft with the reason, and the monitor ends. Every restart is an event (`model.restarted`) and
is kept in the model's saga history (saga `health`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass
from typing import Protocol

from fogline.domain.errors import FoglineError
from fogline.domain.sagas import StepStatus

CRASH_CHECK_S = 0.5  # how often the process is looked at; the health endpoint less often


@dataclass(frozen=True)
class HealthSettings:
    interval_s: float = 2.0  # between health checks
    max_failures: int = 3  # failed restart attempts in a row before giving up
    backoff_s: float = 0.5  # before a restart; doubled for each restart in the window
    backoff_cap_s: float = 30.0
    restart_limit: int = 5  # restarts within the window before giving up (a crash loop)
    restart_window_s: float = 600.0
    stable_s: float = 10.0  # well for this long: a degraded model is active again


@dataclass
class Health:
    """What the deployment shows of a model's health."""

    last: str | None = None  # the last health answer, or why the process ended
    ok: bool | None = None  # whether the last check passed (None: not checked yet)
    failures: int = 0  # failed restart attempts in a row, while recovering
    restarts: int = 0  # successful ones, since the deployment started
    problem: str | None = None  # why it is degraded now (None: well)
    restarts_in_window: int = 0
    next_backoff_s: float = 0.0


class Watched(Protocol):
    """What the monitor needs of the model it watches."""

    def alive(self) -> bool: ...
    async def check(self) -> tuple[bool, str]: ...  # (healthy, the answer or why not)
    def exit_reason(self) -> str: ...  # why the process is gone, as far as its log says
    def restart_requested(self) -> str | None: ...  # why a restart was asked for, if it was
    def trouble(self) -> str | None: ...  # why its calls show it is not well, if they do
    async def degraded(self, reason: str | None) -> None: ...  # None: well again
    def hold(self, reason: str) -> None: ...  # a restart is coming: send the model nothing
    async def restart(self) -> None: ...
    async def restarted(self, reason: str, attempt: int, backoff_s: float) -> None: ...
    async def give_up(self, reason: str) -> None: ...
    async def record(self, status: StepStatus, attempt: int, detail: str | None) -> None: ...


class HealthMonitor:
    def __init__(self, watched: Watched, health: Health, settings: HealthSettings) -> None:
        self.watched = watched
        self.health = health
        self.settings = settings
        self._task: asyncio.Task[None] | None = None
        self._restarts: deque[float] = deque()  # when each restart of the window began
        self._well_since: float | None = None

    def seed_restarts(self, started_ms: list[int]) -> None:
        """Restarts made before this monitor began (a previous run of the platform), by when
        they began (epoch ms): they count toward the window's limit and the back-off."""
        now_mono, now_wall = time.monotonic(), time.time() * 1000
        for at in sorted(started_ms):
            self._restarts.append(now_mono - max(0.0, now_wall - at) / 1000)
        self.health.restarts_in_window = len(self._restarts)

    def start(self, name: str) -> None:
        self._task = asyncio.create_task(self._watch(), name=name)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _watch(self) -> None:
        next_check = time.monotonic() + self.settings.interval_s
        while True:
            await asyncio.sleep(CRASH_CHECK_S)
            restart_for = await self._needs_restart(time.monotonic() >= next_check)
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + self.settings.interval_s
            if restart_for is not None:
                await self._set_problem(restart_for)
                if not await self._recover(restart_for):
                    return
                next_check = time.monotonic() + self.settings.interval_s
                continue
            await self._follow_calls()

    async def _needs_restart(self, check_due: bool) -> str | None:
        """Why the model must be restarted now, or None."""
        if not self.watched.alive():
            reason = self.watched.exit_reason()
            self.health.last, self.health.ok = reason, False
            return reason
        asked = self.watched.restart_requested()
        if asked is not None:
            return asked
        if check_due:
            ok, answer = await self.watched.check()
            self.health.last, self.health.ok = answer, ok
            if not ok:
                return f"health check failed: {answer}"
        return None

    async def _follow_calls(self) -> None:
        """Degraded while the calls show trouble; active again after `stable_s` without."""
        trouble = self.watched.trouble()
        if trouble is not None:
            await self._set_problem(trouble)
            return
        if self.health.problem is None:
            return
        now = time.monotonic()
        if self._well_since is None:
            self._well_since = now
        elif now - self._well_since >= self.settings.stable_s:
            self.health.problem = None
            self._well_since = None
            await self.watched.degraded(None)

    async def _set_problem(self, reason: str) -> None:
        self._well_since = None
        first = self.health.problem is None
        self.health.problem = reason
        if first:
            await self.watched.degraded(reason)

    def _backoff(self) -> float:
        """Before the next restart: doubled for each restart still in the window."""
        now = time.monotonic()
        while self._restarts and now - self._restarts[0] > self.settings.restart_window_s:
            self._restarts.popleft()
        s = self.settings
        self.health.restarts_in_window = len(self._restarts)
        return float(min(s.backoff_cap_s, s.backoff_s * 2 ** len(self._restarts)))

    async def _recover(self, reason: str) -> bool:
        """Restart the model until it is healthy again; False when the monitor gave up (the
        model is then on its way to draft). Each attempt is recorded with why it was needed."""
        s = self.settings
        failed_in_a_row = 0
        self.watched.hold(reason)
        while True:
            backoff = self._backoff()
            if len(self._restarts) >= s.restart_limit:
                window = f"{s.restart_window_s:g} s"
                await self.watched.give_up(
                    f"restarted {len(self._restarts)} times within {window}; last: {reason}"
                )
                return False
            self.health.next_backoff_s = backoff
            await asyncio.sleep(backoff)
            self._restarts.append(time.monotonic())
            attempt = self.health.restarts_in_window = len(self._restarts)
            self.health.failures = failed_in_a_row + 1
            await self.watched.restarted(reason, attempt, backoff)
            await self.watched.record(StepStatus.STARTED, attempt, reason)
            try:
                await self.watched.restart()
            except (FoglineError, OSError) as exc:
                reason = exc.message if isinstance(exc, FoglineError) else str(exc)
                await self.watched.record(StepStatus.FAILED, attempt, reason)
                failed_in_a_row += 1
                if failed_in_a_row >= s.max_failures:
                    await self.watched.give_up(
                        f"health not recovered after {failed_in_a_row} attempts: {reason}"
                    )
                    return False
                continue
            self.health.restarts += 1
            self.health.failures = 0
            self.health.ok = True
            self.health.last = "ok"
            await self.watched.record(StepStatus.DONE, attempt, None)
            return True
