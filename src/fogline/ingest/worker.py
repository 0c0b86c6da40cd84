"""The historian's own process, and the supervisor that keeps it running.

Python runs one thread at a time, so a historian that shared a process with the API would share
one core with it, and lose more to thread hand-offs. In a process of its own it has a core to
itself and talks to the platform only through NATS (registry changes in, live readings and its
counters out) and the database, as any scaled-out historian would.

The supervisor restarts the process when it dies, when its loop ends (the process then exits
with an error), and when it stops reporting or its loop stops turning (a stall): each time it
logs why and counts the restart. `health()` says whether the historian is doing its work, for
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
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from typing import Any

import orjson

from fogline import aio
from fogline.bus.connection import Bus
from fogline.bus.subjects import Subjects
from fogline.domain.errors import FoglineError, Unavailable
from fogline.ingest.cache import RegistryCache
from fogline.ingest.historian import Historian, HistorianStats
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
    loop.add_signal_handler(signal.SIGINT, lambda: None)  # Ctrl-C reaches the platform first
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


class HistorianSupervisor:
    """Starts the historian process, restarts it if it dies, stops it cleanly."""

    def __init__(self, config: HistorianWorkerConfig, bus: Bus) -> None:
        self.config = config
        self.bus = bus
        self.stats = HistorianStats()
        self.restarts = 0
        self.last_restart_reason: str | None = None
        # How long silence means not ready, and a stall to restart (settable for tests).
        self.not_reporting_s = NOT_REPORTING_S
        self.stalled_s = STALLED_S
        self._stats_at = time.monotonic()
        self._reported = asyncio.Event()  # the running process has sent its stats
        self._process: multiprocessing.process.BaseProcess | None = None
        self._watch: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    async def start(self, timeout: float = 60.0) -> None:
        async def on_stats(data: bytes) -> None:
            self.stats = HistorianStats(**orjson.loads(data))
            self._stats_at = time.monotonic()
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
        process.start()
        theirs.close()
        self._process = process
        self._stats_at = time.monotonic()
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

    def _stalled(self) -> str | None:
        """Why a running historian is not doing its work, if it is not."""
        silent = time.monotonic() - self._stats_at
        if silent > self.stalled_s:
            return f"no stats for {silent:.0f}s"
        beat = self.stats.heartbeat_ms
        if beat is not None and time.time() * 1000 - beat > self.stalled_s * 1000:
            return f"its loop has not turned for {(time.time() * 1000 - beat) / 1000:.0f}s"
        return None

    async def _supervise(self) -> None:
        backoff = Backoff(1.0, cap_s=30.0)
        while not self._stopping:
            await asyncio.sleep(1.0)
            process = self._process
            if self._stopping or process is None:
                continue
            if process.is_alive():
                stalled = self._stalled()
                if stalled is None:
                    continue
                log.error("historian.stalled", extra={"fields": {"why": stalled}})
                process.kill()
                await asyncio.to_thread(process.join, 5)
                reason = f"stalled: {stalled}"
            else:
                reason = f"exited with code {process.exitcode}"
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
            try:
                await self._spawn(60.0)
                backoff.reset()
            except Unavailable as exc:
                log.error("historian.restart_failed", extra={"fields": {"error": exc.message}})

    def health(self) -> dict[str, Any]:
        """What `/api/v1/ready` and `fogline status` show of the historian: its state, whether
        it is doing its work, and its failure counters (the error texts stay in the logs and
        `/api/v1/system`)."""
        s = self.stats
        process = self._process
        now_ms = time.time() * 1000
        if process is None or not process.is_alive():
            state, problem = "restarting", "the historian process is not running"
        elif not self._reported.is_set():
            state, problem = "starting", "the historian is starting"
        elif (silent := time.monotonic() - self._stats_at) > self.not_reporting_s:
            state, problem = "not-reporting", f"no word from the historian for {silent:.0f}s"
        elif s.heartbeat_ms is not None and now_ms - s.heartbeat_ms > self.not_reporting_s * 1000:
            state = "stalled"
            problem = (
                f"the historian's loop has not turned for {(now_ms - s.heartbeat_ms) / 1000:.0f}s"
            )
        elif s.failing_since_ms is not None and now_ms - s.failing_since_ms > FAILING_S * 1000:
            failing = (now_ms - s.failing_since_ms) / 1000
            state, problem = "failing", f"the historian has failed to commit for {failing:.0f}s"
        else:
            state, problem = "running", None
        step, _, error = (s.last_failure or "").partition(":")
        return {
            "state": state,
            "ready": problem is None,
            "problem": problem,
            "restarts": self.restarts,
            "last_restart": self.last_restart_reason,
            "loop_restarts": s.loop_restarts,
            "failures": s.failures,
            "last_failure": f"{step}: {error.strip().split(':')[0]}" if s.last_failure else None,
            "poison_messages": s.poison_messages,
            "live_failures": s.live_failures,
            "backlog": s.backlog,
            "last_commit_ms": s.last_commit_ms,
        }

    async def stop(self, timeout: float = 15.0) -> None:
        self._stopping = True
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        process, self._process = self._process, None
        if process is None or process.pid is None or not process.is_alive():
            return
        os.kill(process.pid, signal.SIGTERM)
        await asyncio.to_thread(process.join, timeout)
        if process.is_alive():
            process.kill()
            await asyncio.to_thread(process.join, 5)
