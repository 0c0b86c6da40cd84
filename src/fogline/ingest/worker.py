"""The historian's own process, and the supervisor that keeps it running.

Python runs one thread at a time, so a historian that shared a process with the API would share
one core with it, and lose more to thread hand-offs. In a process of its own it has a core to
itself and talks to the platform only through NATS (registry changes in, live readings and its
counters out) and the database, as any scaled-out historian would.

The supervisor restarts the process when it dies, when its loop ends (the process then exits
with an error), when it stops reporting or its loop stops turning (a stall), and when it makes
no progress: messages wait in the hot store and nothing is committed for `progress_timeout_s`
while the database answers, or the process is frozen (stopped by a signal) that long. Each time
it logs why and counts the restart. `health()` says whether the historian is doing its work, for
`/api/v1/ready` and `fogline status`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import orjson

from fogline import aio
from fogline.bus.connection import Bus
from fogline.bus.subjects import Subjects
from fogline.domain.errors import FoglineError, Unavailable
from fogline.ingest.cache import RegistryCache
from fogline.ingest.historian import CONSUMER, Historian, HistorianStats
from fogline.ingest.validation import IngestLimits
from fogline.logs import configure as configure_logging
from fogline.retry import Backoff, wait_until
from fogline.store.database import Database

log = logging.getLogger(__name__)

STATS_INTERVAL_S = 1.0
# No stats, or no turn of the loop, for this long: the historian is not ready...
NOT_REPORTING_S = 15.0
# ...and after this long it is stalled, and restarted. Longer than a commit may wait on a
# locked SQLite (busy timeout, 30 s) and a large batch's commit together.
STALLED_S = 90.0
# A batch failing for longer than this (a database away) makes the platform not ready.
FAILING_S = 30.0
# Messages waiting and no commit for this long (or the process frozen this long): restarted.
PROGRESS_TIMEOUT_S = 30.0
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class HistorianWorkerConfig:
    nats_url: str
    nats_user: str | None
    nats_password: str | None
    subject_root: str
    database_url: str
    max_message_bytes: int
    log_level: str = "warning"


def run_worker(config: HistorianWorkerConfig, parent_pid: int, channel: Connection) -> None:
    """Entry point of the historian process."""
    if hasattr(ctypes, "CDLL"):
        # Die with the platform, even when it is SIGKILLed: no orphaned historian.
        with contextlib.suppress(OSError):
            ctypes.CDLL("libc.so.6").prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    # A terminal's Ctrl-C reaches the whole process group; stopping is the platform's to do
    # (SIGTERM, once what feeds this process has stopped). SIGINT came blocked from the
    # platform (`_interrupts_held`): ignored first, a Ctrl-C already pending is dropped.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    if os.getppid() != parent_pid:
        return  # the platform died before we could ask to die with it
    configure_logging(config.log_level)
    try:
        aio.run(_serve(config, channel))
    except Exception as exc:
        log.exception("historian.crashed")
        with contextlib.suppress(OSError):
            channel.send(("failed", str(exc)))
        sys.exit(1)  # the supervisor restarts it and says so


async def _serve(config: HistorianWorkerConfig, channel: Connection) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    subjects = Subjects(config.subject_root)
    db = Database.connect(config.database_url)
    bus = await Bus.connect(config.nats_url, subjects, config.nats_user, config.nats_password)
    await bus.describe_streams()
    cache = RegistryCache(db.assets, db.devices)

    await cache.follow(bus)
    historian = Historian(
        bus, db.telemetry, cache, IngestLimits(max_message_bytes=config.max_message_bytes)
    )
    await historian.start()
    assert historian.task is not None
    # The loop never ends on its own: if it does, the process must not stay up idle.
    historian.task.add_done_callback(lambda _task: stop.set())
    channel.send(("ready", os.getpid()))
    try:
        while not stop.is_set():
            payload = orjson.dumps(asdict(historian.stats))
            await bus.publish_historian_stats(payload)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), STATS_INTERVAL_S)
        task = historian.task
        if task is not None and task.done():
            error = task.exception() if not task.cancelled() else None
            historian.stats.failures += 1
            historian.stats.last_failure = f"loop ended: {error!r}"
            log.error("historian.loop_ended", exc_info=error)
            raise FoglineError(f"the historian's loop ended: {error!r}")
    finally:
        await historian.stop()
        await bus.publish_historian_stats(orjson.dumps(asdict(historian.stats)))
        await bus.close()
        db.close()


@contextlib.contextmanager
def _interrupts_held() -> Iterator[None]:
    """SIGINT blocked in this thread while the historian is spawned: the new process starts
    with it blocked (a signal mask survives fork and exec), so a Ctrl-C that comes while its
    interpreter starts is neither a KeyboardInterrupt traceback nor lost for the platform
    (another thread takes it, or this one once unblocked)."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


DatabaseProbe = Callable[[], Awaitable[bool]]


def process_frozen(pid: int) -> bool:
    """Whether the process is stopped by a signal (SIGSTOP, SIGTSTP) or a tracer: it holds
    its place and does nothing until continued."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state in ("T", "t")


class HistorianSupervisor:
    """Starts the historian process, restarts it if it dies or makes no progress, stops it
    cleanly."""

    def __init__(
        self,
        config: HistorianWorkerConfig,
        bus: Bus,
        progress_timeout_s: float = PROGRESS_TIMEOUT_S,
        database_answers: DatabaseProbe | None = None,
    ) -> None:
        self.config = config
        self.bus = bus
        self.stats = HistorianStats()
        self.restarts = 0
        self.last_restart_reason: str | None = None
        self.last_restart_ms: int | None = None
        self.last_restart_failure: str | None = None  # why the newest restart did not start
        # How long silence means not ready, and a stall to restart (settable for tests).
        self.not_reporting_s = NOT_REPORTING_S
        self.stalled_s = STALLED_S
        self.progress_timeout_s = progress_timeout_s
        # Whether the database answers: no progress while it does not is not the historian's
        # fault, and a restart would not help.
        self.database_answers = database_answers
        self._stats_at = time.monotonic()
        self._reported = asyncio.Event()  # the running process has sent its stats
        self._process: multiprocessing.process.BaseProcess | None = None
        self._watch: asyncio.Task[None] | None = None
        self._stopping = False
        # Progress: the last commit seen (or the last time nothing was waiting), the commit
        # counter it was seen by, what JetStream last said is waiting, and since when the
        # process has been frozen.
        self._progress_at = time.monotonic()
        self._batches_seen = 0
        self._pending: int | None = None
        self._pending_at: float | None = None  # when JetStream last counted what waits
        self._frozen_since: float | None = None
        self._waiting_for_database = False

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    async def start(self, timeout: float = 60.0) -> None:
        async def on_stats(data: bytes) -> None:
            self.stats = HistorianStats(**orjson.loads(data))
            self._stats_at = time.monotonic()
            if self.stats.batches != self._batches_seen:
                self._batches_seen = self.stats.batches
                self._progress_at = self._stats_at
                self._waiting_for_database = False
            self._reported.set()

        # Held as long as the bus: the process's last report comes as it stops.
        await self.bus.subscribe_historian_stats(on_stats)
        await self._spawn(timeout)
        with contextlib.suppress(TimeoutError):  # its first stats follow "ready" at once
            await asyncio.wait_for(self._reported.wait(), 5.0)
        self._watch = asyncio.create_task(self._supervise(), name="historian-supervisor")

    async def _spawn(self, timeout: float) -> None:
        ctx = multiprocessing.get_context("spawn")
        ours, theirs = ctx.Pipe(duplex=False)
        process = ctx.Process(
            target=run_worker,
            args=(self.config, os.getpid(), theirs),
            name="fogline-historian",
            daemon=True,
        )
        with _interrupts_held():
            process.start()
        theirs.close()
        self._process = process
        self._stats_at = self._progress_at = time.monotonic()
        self._batches_seen = 0
        self._frozen_since = None
        self._reported.clear()
        gone = ("gone", None)

        async def first_word() -> tuple[str, Any] | None:
            """What the worker said first ("ready" or "failed", why), or that it is gone."""
            if await asyncio.to_thread(ours.poll, 0.1):  # the wait between checks is here
                try:
                    word: tuple[str, Any] = ours.recv()
                except EOFError:
                    return gone
                return word
            return None if process.is_alive() else gone

        kind, detail = await wait_until(first_word, timeout, interval_s=0) or gone
        if kind == "ready":
            log.info("historian.started", extra={"fields": {"pid": process.pid}})
            return
        if kind == "failed":
            raise Unavailable(f"the historian could not start: {detail}")
        process.kill()  # gone, or silent past the deadline
        raise Unavailable("the historian process did not start; see the log above")

    def _frozen_for(self, pid: int | None) -> float | None:
        """Seconds the process has been seen frozen (stopped), or None when it is not."""
        if pid is None or not process_frozen(pid):
            self._frozen_since = None
            return None
        if self._frozen_since is None:
            self._frozen_since = time.monotonic()
        return time.monotonic() - self._frozen_since

    def _stalled(self) -> str | None:
        """Why a running historian is not doing its work, if it is not."""
        frozen = self._frozen_for(self.pid)
        if frozen is not None and frozen > self.progress_timeout_s:
            return f"its process has been frozen (stopped) for {frozen:.0f}s"
        silent = time.monotonic() - self._stats_at
        if silent > self.stalled_s:
            return f"no stats for {silent:.0f}s"
        beat = self.stats.heartbeat_ms
        if beat is not None and time.time() * 1000 - beat > self.stalled_s * 1000:
            return f"its loop has not turned for {(time.time() * 1000 - beat) / 1000:.0f}s"
        return None

    async def _no_progress(self) -> str | None:
        """Why the historian is to be restarted for making no progress, if it is: messages
        wait in the hot store (as JetStream counts them, whatever the historian says), nothing
        was committed for `progress_timeout_s`, and the database answers."""
        idle = time.monotonic() - self._progress_at
        # A frozen process reports nothing: what waits is counted at once, for /ready.
        if idle < self.progress_timeout_s / 2 and self._frozen_since is None:
            return None
        self._pending = await self.bus.consumer_backlog(CONSUMER)
        self._pending_at = time.monotonic()
        if self._pending is None:
            return None  # JetStream does not answer: the broker's fault, not the historian's
        if self._pending == 0:
            self._progress_at = time.monotonic()  # nothing to do is no stall
            self._waiting_for_database = False
            return None
        if idle < self.progress_timeout_s:
            return None
        if self.database_answers is not None and not await self.database_answers():
            if not self._waiting_for_database:
                log.warning(
                    "historian.waiting_for_database",
                    extra={"fields": {"pending": self._pending, "idle_s": round(idle)}},
                )
            self._waiting_for_database = True
            # The clock starts again when the database is back: the historian then gets the
            # whole timeout (and its own backoff) to commit.
            self._progress_at = time.monotonic()
            return None
        self._waiting_for_database = False
        why = f"no progress: {self._pending} messages waiting and no commit for {idle:.0f}s"
        return why + ("; its process is frozen (stopped)" if self._frozen_since else "")

    async def _supervise(self) -> None:
        backoff = Backoff(1.0, cap_s=30.0)
        while not self._stopping:
            await asyncio.sleep(1.0)
            process = self._process
            if self._stopping or process is None:
                continue
            try:
                reason = await self._why_restart(process)
            except Exception:  # the watch itself must never end
                log.exception("historian.watch_failed")
                continue
            if reason is None:
                continue
            self.last_restart_reason = reason
            delay = backoff.next()
            log.error(
                "historian.died",
                extra={"fields": {"why": reason, "restart_in_s": delay}},
            )
            await asyncio.sleep(delay)
            # Counted as it starts: the new process may report (and /ready turn green) before
            # _spawn returns.
            self.restarts += 1
            self.last_restart_ms = int(time.time() * 1000)
            try:
                await self._spawn(60.0)
                self.last_restart_failure = None
                backoff.reset()
            except Unavailable as exc:
                self.last_restart_failure = exc.message
                log.error("historian.restart_failed", extra={"fields": {"error": exc.message}})

    async def _why_restart(self, process: multiprocessing.process.BaseProcess) -> str | None:
        """Why the historian is to be restarted now (killing it if it still runs), or None."""
        if not process.is_alive():
            return f"exited with code {process.exitcode}"
        stalled = self._stalled()
        if stalled is not None:
            log.error("historian.stalled", extra={"fields": {"why": stalled}})
            reason = f"stalled: {stalled}"
        else:
            no_progress = await self._no_progress()
            if no_progress is None:
                return None
            log.error("historian.no_progress", extra={"fields": {"why": no_progress}})
            reason = no_progress
        process.kill()
        await asyncio.to_thread(process.join, 5)
        return reason

    def _state(self) -> tuple[str, str | None]:
        """The historian's state, and what keeps it from its work (None: nothing)."""
        s = self.stats
        process = self._process
        now_ms = time.time() * 1000
        if process is None or not process.is_alive():
            problem = "the historian process is not running"
            if self.last_restart_failure:
                problem += f"; it could not be restarted: {self.last_restart_failure}"
            return "restarting", problem
        if not self._reported.is_set():
            return "starting", "the historian is starting"
        if process.pid is not None and process_frozen(process.pid):
            # Kept under "stalled": a frozen process is a stall that says why.
            return "stalled", "the historian process is frozen (stopped by a signal)"
        if (silent := time.monotonic() - self._stats_at) > self.not_reporting_s:
            return "not-reporting", f"no word from the historian for {silent:.0f}s"
        if s.heartbeat_ms is not None and now_ms - s.heartbeat_ms > self.not_reporting_s * 1000:
            turned = (now_ms - s.heartbeat_ms) / 1000
            return "stalled", f"the historian's loop has not turned for {turned:.0f}s"
        if s.failing_since_ms is not None and now_ms - s.failing_since_ms > FAILING_S * 1000:
            failing = (now_ms - s.failing_since_ms) / 1000
            return "failing", f"the historian has failed to commit for {failing:.0f}s"
        if self._pending and self._waiting_for_database:
            return "no-progress", (
                f"the historian cannot commit the {self._pending} messages waiting: "
                "the database does not answer"
            )
        return "running", None

    def health(self) -> dict[str, Any]:
        """What `/api/v1/ready` and `fogline status` show of the historian: its state, whether
        it is doing its work, its progress (what waits, the last commit) and its restart and
        failure counters (the error texts stay in the logs and `/api/v1/system`)."""
        s = self.stats
        state, problem = self._state()
        step, _, error = (s.last_failure or "").partition(":")
        last_commit_age = (
            round(time.time() - s.last_commit_ms / 1000, 1) if s.last_commit_ms else None
        )
        return {
            "state": state,
            "ready": problem is None,
            "problem": problem,
            "pid": self.pid,
            "restarts": self.restarts,
            "last_restart": self.last_restart_reason,
            "last_restart_ms": self.last_restart_ms,
            "last_restart_failure": self.last_restart_failure,
            "loop_restarts": s.loop_restarts,
            "failures": s.failures,
            "last_failure": f"{step}: {error.strip().split(':')[0]}" if s.last_failure else None,
            "poison_messages": s.poison_messages,
            "live_failures": s.live_failures,
            "backlog": self._backlog(),
            "pending": self._pending,
            "last_commit_ms": s.last_commit_ms,
            "last_commit_age_s": last_commit_age,
            "progress_timeout_s": self.progress_timeout_s,
        }

    def _backlog(self) -> int | None:
        """What waits for the historian, as the newest word on it says: the historian's own
        count after its last fetch, or JetStream's where the watchdog counted since (a frozen
        or stuck historian's own count stays as it was when it stopped)."""
        counted, at = self._pending, self._pending_at
        if counted is not None and at is not None and at > self._stats_at:
            return counted
        return self.stats.backlog

    async def stop(self, timeout: float = 15.0) -> None:
        self._stopping = True
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        process, self._process = self._process, None
        if process is None or process.pid is None or not process.is_alive():
            return
        if process_frozen(process.pid):
            process.kill()  # a frozen process would not see SIGTERM before the deadline
        else:
            os.kill(process.pid, signal.SIGTERM)
        await asyncio.to_thread(process.join, timeout)
        if process.is_alive():
            process.kill()
            await asyncio.to_thread(process.join, 5)
