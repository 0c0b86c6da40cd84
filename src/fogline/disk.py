"""The data dir's disk: the room left, the reserve kept free, and how fast the room goes.

nats-server's MQTT listener acknowledges a QoS 1 message before JetStream has written it; when
the disk is full the write fails, the message is gone and the device was told it was kept. The
only safe answer is to stop taking data in *before* the disk is full: the platform keeps a
reserve free (a share of the filesystem, bounded), refuses new data while the free room is
under it, and takes data again once there is clearly room (the reserve and half again, so it
does not flap at the edge). Room below the reserve is left for what was already accepted: the
hot store's pending writes and the historian's commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from fogline.domain.errors import InvalidInput, Problem

log = logging.getLogger(__name__)

MIB = 1024**2
GIB = 1024**3
# "auto": this share of the filesystem, never less than the floor nor more than the ceiling.
AUTO_RESERVE_SHARE = 0.05
AUTO_RESERVE_FLOOR = 16 * MIB
AUTO_RESERVE_CEILING = 2 * GIB
RESUME_FACTOR = 1.5  # refusing ends once the free room is the reserve and half again
RECOVERY_RETRY_S = 10.0  # between attempts to recover a hot store that could not write

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": MIB,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": GIB,
    "t": 1000**4,
    "tb": 1000**4,
    "tib": 1024**4,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str | int, field: str) -> int:
    """Bytes from `1048576`, `512MiB`, `2GB`... (1000- and 1024-based units both)."""
    if isinstance(text, int):
        if text < 0:
            raise InvalidInput(f"invalid {field}", [Problem(field, "must not be negative")])
        return text
    match = _SIZE.match(text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS:
        raise InvalidInput(
            f"invalid {field}",
            [Problem(field, f"{text!r} is not a size: write e.g. 512MiB, 2GiB or 1048576")],
        )
    if _UNITS[unit] == 1 and "." in match.group(1):
        raise InvalidInput(
            f"invalid {field}", [Problem(field, f"{text!r}: bytes are counted in whole numbers")]
        )
    return int(float(match.group(1)) * _UNITS[unit])


@dataclass(frozen=True)
class ReservePolicy:
    """How much of the data dir's filesystem is kept free: `auto`, a size, or a percentage."""

    text: str = "auto"

    def check(self, field: str = "disk_reserve") -> None:
        text = self.text.strip().lower()
        if text == "auto" or text.endswith("%"):
            self.bytes_for(100 * GIB, field)
            return
        size = parse_size(text, field)
        if 0 < size < MIB:
            raise InvalidInput(
                f"invalid {field}",
                [
                    Problem(
                        field,
                        f"{self.text!r} is under 1 MiB: give at least 1MiB, or 0 to turn "
                        "the guard off",
                    )
                ],
            )

    def checked_for(self, total: int, field: str = "disk_reserve") -> int:
        """The reserve for a filesystem of `total` bytes, refused when it would leave the data
        less than half of it."""
        reserve = self.bytes_for(total, field)
        if reserve > total // 2:
            raise InvalidInput(
                f"invalid {field}",
                [
                    Problem(
                        field,
                        f"{self.text!r} keeps {reserve / MIB:,.0f} MiB free of a "
                        f"{total / MIB:,.0f} MiB filesystem: at most half of it may be reserved",
                    )
                ],
            )
        return reserve

    def bytes_for(self, total: int, field: str = "disk_reserve") -> int:
        text = self.text.strip().lower()
        if text == "auto":
            share = int(total * AUTO_RESERVE_SHARE)
            return max(AUTO_RESERVE_FLOOR, min(AUTO_RESERVE_CEILING, share))
        if text.endswith("%"):
            try:
                percent = float(text[:-1])
            except ValueError:
                percent = -1.0
            if not 0 <= percent < 100:
                raise InvalidInput(
                    f"invalid {field}",
                    [Problem(field, f"{self.text!r}: a percentage from 0 to under 100")],
                )
            return int(total * percent / 100)
        return parse_size(text, field)


@dataclass(frozen=True)
class DiskSpace:
    """A filesystem as statvfs sees it, in bytes: `free` is what this (unprivileged or not)
    process may still write, not counting blocks kept for root."""

    path: str
    total: int
    free: int

    @classmethod
    def of(cls, path: str | os.PathLike[str]) -> DiskSpace:
        st = os.statvfs(path)
        return cls(str(path), st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize)


@dataclass(frozen=True)
class StoreSizes:
    """The hot store's limits, sized against the filesystem it lives on: JetStream may use
    all but the reserve; the telemetry stream at most half of the filesystem (the SQL history
    and the rest of the data dir need room too), the events stream a small share."""

    jetstream_max: int
    telemetry_max: int
    events_max: int

    @classmethod
    def fit(
        cls,
        total: int,
        reserve: int,
        jetstream_wanted: int,
        telemetry_wanted: int,
        events_wanted: int,
    ) -> StoreSizes:
        usable = max(total - reserve, 16 * MIB)
        jetstream = min(jetstream_wanted, usable)
        events = min(events_wanted, max(MIB, usable // 20))
        telemetry = min(telemetry_wanted, max(MIB, total // 2), max(MIB, jetstream - events))
        return cls(jetstream, telemetry, events)


class FillRate:
    """How fast the free room shrinks, from samples of the last `window_s` seconds: the
    platform's own growth (hot store, history) and anything else on the same filesystem."""

    def __init__(self, window_s: float = 3600.0, min_span_s: float = 30.0) -> None:
        self.window_s = window_s
        self.min_span_s = min_span_s
        self._samples: deque[tuple[float, int]] = deque()

    def add(self, free: int, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if self._samples and now - self._samples[-1][0] < 1.0:
            return  # one sample a second is plenty for a rate over minutes
        self._samples.append((now, free))
        while self._samples and now - self._samples[0][0] > self.window_s:
            self._samples.popleft()

    def bytes_per_s(self) -> float | None:
        """Bytes per second the free room shrinks by (negative: it grows); None until the
        samples span `min_span_s`."""
        if len(self._samples) < 2:
            return None
        (t0, f0), (t1, f1) = self._samples[0], self._samples[-1]
        if t1 - t0 < self.min_span_s:
            return None
        return (f0 - f1) / (t1 - t0)

    def days_left(self, room: int) -> float | None:
        """Days until `room` bytes are gone at the current rate; None while the room is not
        shrinking (or the rate is not known yet)."""
        rate = self.bytes_per_s()
        if rate is None or rate <= 0:
            return None
        return max(0.0, room / rate / 86400)


class Gate(Protocol):
    """A way data comes in (the broker's device logins, HTTP ingest, the MQTT bridge), which
    the guard closes while there is no room and opens again after."""

    name: str

    async def close(self, reason: str) -> None: ...
    async def open(self) -> None: ...


StoreRecovery = Callable[[], Awaitable[None]]


class DiskGuard:
    """Watches the data dir's filesystem and keeps data out while the free room is under the
    reserve, or while the hot store reports that it cannot write (then the store is also
    recovered, e.g. its server restarted, once there is room again: nats-server keeps a write
    error until it restarts)."""

    def __init__(
        self,
        path: Path,
        policy: ReservePolicy,
        gates: list[Gate],
        recover_store: StoreRecovery | None = None,
        interval_s: float = 0.05,  # statvfs is a cheap call; a fast-filling disk is not
    ) -> None:
        self.path = path
        self.space = DiskSpace.of(path)
        self.reserve = policy.bytes_for(self.space.total)
        self.resume_at = int(self.reserve * RESUME_FACTOR)
        self.gates = gates
        self.recover_store = recover_store
        self.interval_s = interval_s
        self.rate = FillRate()
        self.refusing: str | None = None  # why data is kept out, while it is
        self.refusing_since: float | None = None
        self.refusals = 0  # times data was kept out since the start
        self.store_failure: str | None = None
        self.last_error: str | None = None
        self._next_recovery = 0.0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._check_once()
        self._task = asyncio.create_task(self._watch(), name="disk-guard")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def report_store_failure(self, detail: str) -> None:
        """The hot store could not write (nats-server's log said so): keep data out at once."""
        if self.store_failure is None:
            log.error("disk.store_failed", extra={"fields": {"detail": detail}})
        self.store_failure = detail
        self._wake.set()

    def _check_once(self) -> None:
        try:
            self.space = DiskSpace.of(self.path)
        except OSError as exc:
            self.last_error = f"cannot read the filesystem of {self.path}: {exc.strerror}"
            return
        self.rate.add(self.space.free)

    def _why_refuse(self) -> str | None:
        free, reserve = self.space.free, self.reserve
        if self.store_failure is not None:
            return f"the hot store cannot write: {self.store_failure}"
        if free < reserve or (self.refusing is not None and free < self.resume_at):
            return (
                f"{free / MIB:.0f} MiB free on the data dir's filesystem ({self.path}); "
                f"new data is refused below the reserve of {reserve / MIB:.0f} MiB and taken "
                f"again from {self.resume_at / MIB:.0f} MiB"
            )
        return None

    async def _watch(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval_s)
            self._wake.clear()
            self._check_once()
            why = self._why_refuse()
            if why is not None and self.refusing is None:
                await self._close(why)
            elif why is not None:
                self.refusing = why  # the figures in it change
                if self.store_failure is not None and self.space.free >= self.resume_at:
                    await self._recover_store()
            elif self.refusing is not None:
                await self._open()

    async def _close(self, why: str) -> None:
        self.refusing, self.refusing_since = why, time.monotonic()
        self.refusals += 1
        log.error("disk.refusing_data", extra={"fields": {"why": why}})
        for gate in self.gates:
            await self._turn(gate, gate.close(why), "close")

    async def _open(self) -> None:
        if self.store_failure is not None:
            return  # _why_refuse keeps it: only a recovery clears it
        self.refusing, since = None, self.refusing_since
        self.refusing_since = None
        log.warning(
            "disk.taking_data_again",
            extra={
                "fields": {
                    "free_mib": round(self.space.free / MIB),
                    "refused_s": round(time.monotonic() - since, 1) if since else None,
                }
            },
        )
        for gate in self.gates:
            await self._turn(gate, gate.open(), "open")

    async def _turn(self, gate: Gate, action: Awaitable[None], what: str) -> None:
        try:
            await action
        except Exception as exc:  # one gate failing must not keep the others as they were
            self.last_error = f"could not {what} {gate.name}: {exc}"
            log.error("disk.gate_failed", extra={"fields": {"gate": gate.name, "error": str(exc)}})

    async def _recover_store(self) -> None:
        """There is room again after a store failure: recover the store (restart its server),
        then the next turn takes data again. A failed recovery is tried again later."""
        now = time.monotonic()
        if self.recover_store is None or now < self._next_recovery:
            return
        self._next_recovery = now + RECOVERY_RETRY_S
        log.warning("disk.recovering_store", extra={"fields": {"failure": self.store_failure}})
        try:
            await self.recover_store()
        except Exception as exc:
            self.last_error = f"could not recover the hot store: {exc}"
            log.error("disk.store_recovery_failed", extra={"fields": {"error": str(exc)}})
            return
        self.store_failure = None
        self._wake.set()

    def health(self) -> dict[str, Any]:
        """What `/api/v1/ready`, `/api/v1/system` and `fogline status` show of the disk."""
        free, reserve = self.space.free, self.reserve
        rate = self.rate.bytes_per_s()
        return {
            "ok": self.refusing is None,
            "problem": self.refusing,
            "path": str(self.path),
            "total_bytes": self.space.total,
            "free_bytes": free,
            "reserve_bytes": reserve,
            "headroom_bytes": max(0, free - reserve),
            "fill_bytes_per_s": round(rate, 1) if rate is not None else None,
            "days_left": _round(self.rate.days_left(max(0, free - reserve))),
            "refusing": self.refusing is not None,
            "refusals": self.refusals,
            "store_failure": self.store_failure,
            "last_error": self.last_error,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)
