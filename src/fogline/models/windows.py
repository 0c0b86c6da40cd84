"""Event-time windows for TIME_WINDOW models: windows on the readings' own timestamps, so that
history replayed, readings backfilled through the API and a device's late store-and-forward
are windowed exactly as if they had arrived live. Pure logic, no I/O: the companion feeds it
and the backfill drives it the same way.

- Windows are `[start, start + size)` with `start` a multiple of `hop` (epoch-aligned):
  tumbling when `hop == size` (each reading in one window), sliding when `hop < size` (a
  reading in about `size / hop` windows).
- Each asset is its own stream of event time: its watermark is the latest reading time seen
  for that asset minus the allowed lateness, and never goes back. A window closes (is emitted)
  once the watermark reaches its end: a reading up to `lateness` ms out of order still lands
  in its window.
- A reading all of whose windows are closed is late: it is returned as such (the companion
  dead-letters it with reason `late`), never silently dropped. In a sliding window a reading
  whose first windows closed lands in those still open.
- An idle stream (no reading of the asset for `idle_ms` of wall-clock time) closes what it
  holds: its watermark jumps to the end of the last window that holds its readings.
- Readings of one asset at the same ts are one reading (their values merged) while their
  window is open, as the history keeps them: a backfill over stored history sees the same
  windows.
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


@dataclass
class Added:
    """What became of one reading: how many windows it joined (0: late, or merged into a
    reading at the same ts), whether it was late, whether it merged into one held already."""

    windows: int = 0
    late: bool = False
    merged: bool = False
    missed: int = 0  # windows of it that had closed already (sliding windows only)


@dataclass
class _Stream:
    max_ts: int | None = None
    watermark: int | None = None  # windows with end <= watermark are closed
    last_arrival: float = 0.0
    windows: dict[int, dict[int, Reading]] = field(default_factory=dict)  # start -> ts -> reading


class EventWindows:
    def __init__(
        self, size_ms: int, hop_ms: int, lateness_ms: int, idle_ms: int, each_once: bool = False
    ) -> None:
        if size_ms <= 0 or hop_ms <= 0 or hop_ms > size_ms or lateness_ms < 0 or idle_ms <= 0:
            raise ValueError("need 0 < hop <= size, lateness >= 0, idle > 0")
        self.size = size_ms
        self.hop = hop_ms
        self.lateness = lateness_ms
        self.idle_ms = idle_ms
        self.each_once = each_once
        self._streams: dict[str, _Stream] = {}
        self.held_memberships = 0  # (reading, window) pairs waiting for their window to close

    # -- the grid -------------------------------------------------------------------------

    def starts_of(self, ts: int) -> list[int]:
        """The starts of every window holding `ts`, earliest first."""
        last = (ts // self.hop) * self.hop
        first = last - ((self.size - 1) // self.hop) * self.hop
        return [s for s in range(first, last + 1, self.hop) if s + self.size > ts]

    def _last_end(self, ts: int) -> int:
        return (ts // self.hop) * self.hop + self.size

    # -- feeding --------------------------------------------------------------------------

    def add(self, reading: Reading, now: float) -> tuple[Added, list[ClosedWindow]]:
        """One reading of an asset; what became of it and the windows it made close."""
        asset, ts = reading["asset"], int(reading["ts"])
        stream = self._streams.setdefault(asset, _Stream())
        stream.last_arrival = now
        added = Added()
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
            added.windows = len(chosen)
            self.held_memberships += len(chosen)
        if not added.late and (stream.max_ts is None or ts > stream.max_ts):
            stream.max_ts = ts
            self._advance(stream, ts - self.lateness)
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
            # Copies: a reading still held by a later window may yet merge more values.
            readings = [{**held[ts], "values": dict(held[ts]["values"])} for ts in sorted(held)]
            self.held_memberships -= len(readings)
            closed.append(ClosedWindow(asset, start, start + self.size, readings))
        return closed
