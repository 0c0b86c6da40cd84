"""Event-time windows for TIME_WINDOW models: windows on the readings' own timestamps, so that
history replayed, readings backfilled through the API and a device's late store-and-forward
are windowed exactly as if they had arrived live. Pure logic, no I/O: the companion feeds it
and the backfill drives it the same way.

- Windows are `[start, start + size)` with `start` a multiple of `hop` (epoch-aligned):
  tumbling when `hop == size` (each reading in one window), sliding when `hop < size` (a
  reading in about `size / hop` windows).
- Each asset is its own stream of event time: its watermark is the latest reading time seen
  for that asset, but never past the wall clock, minus the allowed lateness, and never goes
  back. A window closes (is emitted) once the watermark reaches its end: a reading up to
  `lateness` ms out of order still lands in its window. The wall clock bound is what keeps one
  reading from a clock that runs ahead from closing the windows of the readings that follow
  it (they would all be late): live, the watermark cannot pass what has really happened.
- A reading more than `future_ms` ahead of the wall clock is `future`: it joins no window and
  moves nothing (the companion dead-letters it with reason `future`). Within `future_ms` it
  joins its windows, which close once the wall clock (or idle) catches up.
- A reading all of whose windows are closed is late: it is returned as such (the companion
  dead-letters it with reason `late`), never silently dropped. In a sliding window a reading
  whose first windows closed lands in those still open.
- An idle stream (no reading of the asset for `idle_ms` of wall-clock time) closes what it
  holds: its watermark jumps to the end of the last window that holds its readings.
- Readings of one asset at the same ts are one reading (their values merged) while their
  window is open, as the history keeps them: a backfill over stored history sees the same
  windows.
- Each reading is counted once, by the first window holding it that closes (`new`): that is
  the unit of the companion's accounting, whatever the overlap of sliding windows.
- A window that brings no reading of its own (every reading it holds was in an earlier closed
  window of the asset: the trailing windows of a sliding series after its last reading) is not
  emitted, only counted (`covered_windows`): it would end at the same last reading as the
  window before it, and a model placing its output there would overwrite that window's.
- `each_once` (a stateful model): a reading goes to the first open window holding it only,
  so a model that keeps its own state sees each reading once, in event-time order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Reading = dict[str, Any]  # {"asset", "ts", "values"}


@dataclass(frozen=True)
class ClosedWindow:
    asset: str
    start: int
    end: int
    readings: list[Reading]  # in event-time order
    new: int = 0  # readings whose first window this is: counted here, once


@dataclass
class Added:
    """What became of one reading: how many windows it joined (0: late, or merged into a
    reading at the same ts), whether it was late, whether it merged into one held already."""

    windows: int = 0
    late: bool = False
    future: bool = False  # more than `future_ms` ahead of the wall clock: joins nothing
    merged: bool = False
    missed: int = 0  # windows of it that had closed already (sliding windows only)


@dataclass
class _Stream:
    max_ts: int | None = None
    watermark: int | None = None  # windows with end <= watermark are closed
    last_arrival: float = 0.0
    windows: dict[int, dict[int, Reading]] = field(default_factory=dict)  # start -> ts -> reading
    first: dict[int, int] = field(default_factory=dict)  # ts -> start of its first window


FUTURE_MS = 60_000  # how far ahead of the wall clock a reading may be and still be windowed


class EventWindows:
    def __init__(
        self,
        size_ms: int,
        hop_ms: int,
        lateness_ms: int,
        idle_ms: int,
        each_once: bool = False,
        future_ms: int = FUTURE_MS,
    ) -> None:
        if (
            size_ms <= 0
            or hop_ms <= 0
            or hop_ms > size_ms
            or lateness_ms < 0
            or idle_ms <= 0
            or future_ms < 0
        ):
            raise ValueError("need 0 < hop <= size, lateness >= 0, idle > 0, future >= 0")
        self.future_ms = future_ms
        self.size = size_ms
        self.hop = hop_ms
        self.lateness = lateness_ms
        self.idle_ms = idle_ms
        self.each_once = each_once
        self._streams: dict[str, _Stream] = {}
        self.held_readings = 0  # readings waiting for their first window to close
        self.covered_windows = 0  # windows not emitted: no reading of their own

    # -- the grid -------------------------------------------------------------------------

    def starts_of(self, ts: int) -> list[int]:
        """The starts of every window holding `ts`, earliest first."""
        last = (ts // self.hop) * self.hop
        first = last - ((self.size - 1) // self.hop) * self.hop
        return [s for s in range(first, last + 1, self.hop) if s + self.size > ts]

    def _last_end(self, ts: int) -> int:
        return (ts // self.hop) * self.hop + self.size

    # -- feeding --------------------------------------------------------------------------

    def add(
        self, reading: Reading, now: float, wall_ms: int | None = None
    ) -> tuple[Added, list[ClosedWindow]]:
        """One reading of an asset; what became of it and the windows it made close. `now`:
        monotonic seconds (for idle); `wall_ms`: the wall clock in epoch ms, which bounds the
        watermark (None: no bound, for a backfill over stored history, flushed at its end)."""
        asset, ts = reading["asset"], int(reading["ts"])
        added = Added()
        if wall_ms is not None and ts > wall_ms + self.future_ms:
            added.future = True
            return added, []
        stream = self._streams.setdefault(asset, _Stream())
        stream.last_arrival = now
        starts = self.starts_of(ts)
        wm = stream.watermark
        open_starts = [s for s in starts if wm is None or s + self.size > wm]
        added.missed = len(starts) - len(open_starts)
        held = [w[ts] for s in open_starts if ts in (w := stream.windows.get(s, {}))]
        if held:
            # One reading of the asset at this ts: the values merge (one object per reading).
            held[0]["values"].update(reading["values"])
            added.merged = True
        elif not open_starts:
            added.late = True
        else:
            copy = {"asset": asset, "ts": ts, "values": dict(reading["values"])}
            chosen = open_starts[:1] if self.each_once else open_starts
            for s in chosen:
                stream.windows.setdefault(s, {})[ts] = copy
            stream.first[ts] = chosen[0]
            added.windows = len(chosen)
            self.held_readings += 1
        if not added.late:
            if stream.max_ts is None or ts > stream.max_ts:
                stream.max_ts = ts
            bound = stream.max_ts if wall_ms is None else min(stream.max_ts, wall_ms)
            self._advance(stream, bound - self.lateness)
        return added, self._close(asset, stream)

    def idle(self, now: float) -> list[ClosedWindow]:
        """Close what streams quiet for `idle_ms` of wall-clock time hold."""
        closed: list[ClosedWindow] = []
        for asset, stream in self._streams.items():
            if stream.windows and (now - stream.last_arrival) * 1000 >= self.idle_ms:
                assert stream.max_ts is not None
                self._advance(stream, self._last_end(stream.max_ts))
                closed += self._close(asset, stream)
        return closed

    def flush(self) -> list[ClosedWindow]:
        """Close every window (the end of a backfill's range)."""
        closed: list[ClosedWindow] = []
        for asset, stream in self._streams.items():
            if stream.max_ts is not None:
                self._advance(stream, self._last_end(stream.max_ts))
                closed += self._close(asset, stream)
        return closed

    def forget(self, asset: str) -> list[ClosedWindow]:
        """An asset no longer mapped: its open windows, closed now."""
        stream = self._streams.pop(asset, None)
        if stream is None or stream.max_ts is None:
            return []
        self._advance(stream, self._last_end(stream.max_ts))
        return self._close(asset, stream)

    def open_windows(self) -> int:
        return sum(len(s.windows) for s in self._streams.values())

    def watermark(self, asset: str) -> int | None:
        stream = self._streams.get(asset)
        return None if stream is None else stream.watermark

    # -- closing --------------------------------------------------------------------------

    def _advance(self, stream: _Stream, to: int) -> None:
        if stream.watermark is None or to > stream.watermark:
            stream.watermark = to

    def _close(self, asset: str, stream: _Stream) -> list[ClosedWindow]:
        wm = stream.watermark
        if wm is None:
            return []
        closed: list[ClosedWindow] = []
        for start in sorted(s for s in stream.windows if s + self.size <= wm):
            held = stream.windows.pop(start)
            new = [ts for ts in held if stream.first.get(ts) == start]
            for ts in new:
                del stream.first[ts]
            self.held_readings -= len(new)
            if not new:
                self.covered_windows += 1  # every reading of it was in an earlier window
                continue
            # Copies: a reading still held by a later window may yet merge more values.
            readings = [{**held[ts], "values": dict(held[ts]["values"])} for ts in sorted(held)]
            closed.append(ClosedWindow(asset, start, start + self.size, readings, len(new)))
        return closed
