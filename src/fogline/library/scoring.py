"""Episode-based scoring of a detector's alarms against labelled anomaly windows, as the
published streaming anomaly benchmarks do it (NAB: Lavin and Ahmad, 2015; TimeEval's range
metrics), and the rolling z-score baseline every detector is compared with.

Indices are reading positions in one series. A window is `(start, end)`, end exclusive.

- Alarm readings closer than `merge_gap` readings merge into one episode.
- A window is hit when an alarm episode overlaps it, widened by `tolerance` readings on each
  side (a discord is found when its subsequence ends; a forecast error right at the edge).
- A false-alarm episode is a run of alarm readings outside every widened window (runs
  closer than `merge_gap` merged): an episode that overlaps no widened window, and also the
  part of an episode that starts earlier or lasts longer than a widened window (more than
  `tolerance` readings past the labelled window's end). An alarm that never ends is not one
  true detection: its parts before, between and after the windows are false alarms, as in the
  range-based precision of Tatbul et al. (NeurIPS 2018), where a predicted range is only as
  precise as its overlap with the real ones.
- Time in alarm: the share of readings outside every widened window that are alarms (what
  an operator lives with when nothing is wrong; 1.0 for a detector that is always in alarm).
- Detection delay: first alarm reading in the widened window minus the window's start (in
  readings; negative when a little early).
- NAB score, standard application profile (A_TP = 1, A_FP = 0.11, A_FN = 1): each episode's
  first reading is a detection. The first detection in a window earns A_TP x sigma(y), y its
  relative position (-1 at the window's start, 0 at its end), sigma(y) = 2 / (1 + e^{5y}) - 1;
  later ones in the same window count nothing. A detection outside every window costs
  A_FP x sigma(y) with y its distance past the previous window's end in window lengths
  (-1 x A_FP when y > 3 or no window came before); a missed window costs A_FN. Normalised as
  NAB does: 100 x (raw - null) / (perfect - null), null = every window missed, perfect =
  every window detected at its first reading.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

NAB_STANDARD = {"tp": 1.0, "fp": 0.11, "fn": 1.0}


def sigma(y: float) -> float:
    """NAB's scaled sigmoid of a relative position."""
    if y > 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * y)) - 1.0


def episodes(alarms: Sequence[bool], merge_gap: int = 0) -> list[tuple[int, int]]:
    """Alarm readings merged into (start, end) episodes, end exclusive."""
    out: list[tuple[int, int]] = []
    for i, alarm in enumerate(alarms):
        if not alarm:
            continue
        if out and i - out[-1][1] <= merge_gap:
            out[-1] = (out[-1][0], i + 1)
        else:
            out.append((i, i + 1))
    return out


def windows_of(labels: Sequence[bool]) -> list[tuple[int, int]]:
    """Labelled readings as (start, end) windows."""
    return episodes(labels, 0)


@dataclass
class Figures:
    windows: int = 0
    hit: int = 0
    false_alarms: int = 0  # episodes
    episodes: int = 0
    delays: list[int] = field(default_factory=list)
    nab_raw: float = 0.0
    nab_null: float = 0.0
    nab_perfect: float = 0.0
    normal_readings: int = 0  # readings outside every widened window
    normal_alarms: int = 0  # alarms among them
    alarms: int = 0  # alarm readings in all

    @property
    def alarm_precision(self) -> float:
        """The share of alarm readings that lie in a widened window (1.0 without alarms)."""
        return 1.0 - self.normal_alarms / self.alarms if self.alarms else 1.0

    @property
    def time_in_alarm(self) -> float:
        return self.normal_alarms / self.normal_readings if self.normal_readings else 0.0

    def add(self, other: Figures) -> None:
        self.windows += other.windows
        self.hit += other.hit
        self.false_alarms += other.false_alarms
        self.episodes += other.episodes
        self.delays += other.delays
        self.nab_raw += other.nab_raw
        self.nab_null += other.nab_null
        self.nab_perfect += other.nab_perfect
        self.normal_readings += other.normal_readings
        self.normal_alarms += other.normal_alarms
        self.alarms += other.alarms

    @property
    def nab(self) -> float:
        span = self.nab_perfect - self.nab_null
        return 100.0 * (self.nab_raw - self.nab_null) / span if span else 0.0

    def as_dict(self) -> dict[str, Any]:
        delays = sorted(self.delays)
        return {
            "windows": self.windows,
            "hit": self.hit,
            "false_alarm_episodes": self.false_alarms,
            "alarm_episodes": self.episodes,
            "median_delay": delays[len(delays) // 2] if delays else None,
            "nab_standard": round(self.nab, 1),
            "time_in_alarm": round(self.time_in_alarm, 5),
            # None without alarms: a silent detector's precision says nothing
            "alarm_precision": round(self.alarm_precision, 3) if self.alarms else None,
        }


def score(
    alarms: Sequence[bool],
    labels: Sequence[bool],
    merge_gap: int = 0,
    tolerance: int = 0,
    weights: dict[str, float] = NAB_STANDARD,
) -> Figures:
    """The figures of one series."""
    eps = episodes(alarms, merge_gap)
    wins = windows_of(labels)
    wide = [(max(0, s - tolerance), e + tolerance) for s, e in wins]
    f = Figures(windows=len(wins), episodes=len(eps))
    for (start, _end), (ws, we) in zip(wins, wide, strict=True):
        inside = [max(s, ws) for s, e in eps if s < we and e > ws]
        if inside:
            f.hit += 1
            f.delays.append(min(inside) - start)
    normal = [True] * len(alarms)
    for ws, we in wide:
        normal[ws:we] = [False] * (min(we, len(alarms)) - min(ws, len(alarms)))
    outside = [a and n for a, n in zip(alarms, normal, strict=True)]
    f.false_alarms = len(episodes(outside, merge_gap))
    f.normal_readings = normal.count(True)
    f.normal_alarms = outside.count(True)
    f.alarms = sum(1 for a in alarms if a)
    # NAB: detections are the episodes' first readings, windows the widened ones
    f.nab_null = -weights["fn"] * len(wide)
    f.nab_perfect = weights["tp"] * sigma(-1.0) * len(wide)
    detected = [False] * len(wide)
    raw = 0.0
    for s, _e in eps:
        w = next((k for k, (ws, we) in enumerate(wide) if ws <= s < we), None)
        if w is not None:
            if not detected[w]:
                ws, we = wide[w]
                raw += weights["tp"] * sigma(-(we - 1 - s) / max(we - ws, 1))
                detected[w] = True
            continue
        before = [(ws, we) for ws, we in wide if we <= s]
        if before:
            ws, we = before[-1]
            raw += weights["fp"] * sigma((s - (we - 1)) / max(we - ws, 1))
        else:
            raw -= weights["fp"]
    raw -= weights["fn"] * detected.count(False)
    f.nab_raw = raw
    return f


class RollingZBaseline:
    """The ten-line baseline: z-score against the mean and standard deviation of the last
    `window` readings (the reading itself excluded); alarms from `threshold`; silent until the
    window is full."""

    def __init__(self, window: int, threshold: float = 3.0) -> None:
        self.window = window
        self.threshold = threshold
        self.values: deque[float] = deque(maxlen=window)
        self.total = 0.0
        self.squares = 0.0

    def alarm(self, value: float) -> bool:
        alarm = False
        n = len(self.values)
        if n == self.window:
            mean = self.total / n
            std = math.sqrt(max(self.squares / n - mean * mean, 0.0))
            alarm = std > 0 and abs(value - mean) / std >= self.threshold
            old = self.values[0]
            self.total -= old
            self.squares -= old * old
        self.values.append(value)
        self.total += value
        self.squares += value * value
        return alarm


class SeasonalZBaseline:
    """The baseline told the cycle, as the detectors are: a rolling z-score per phase of the
    cycle (`bins` phases of `period_ms`), against the mean and standard deviation of the last
    `window` // `bins` readings at the same phase; silent until that phase's window is
    full (the first cycles)."""

    def __init__(self, window: int, period_ms: float, bins: int = 48, threshold: float = 3.0):
        self.period_ms = period_ms
        self.bins = bins
        self.per_bin = max(3, window // bins)
        self.threshold = threshold
        self.phases: dict[int, RollingZBaseline] = {}

    def alarm(self, value: float, ts_ms: int) -> bool:
        phase = int((ts_ms % self.period_ms) * self.bins // self.period_ms)
        baseline = self.phases.get(phase)
        if baseline is None:
            baseline = self.phases[phase] = RollingZBaseline(self.per_bin, self.threshold)
        return baseline.alarm(value)
