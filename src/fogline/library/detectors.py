"""Streaming anomaly detectors for unfamiliar signals, one state per asset and column.

Each detector turns a reading into a deviation (a residual, a distance) and scores it against
the band of its own past deviations: river's rolling quantiles give the median and the
`quantile` / 1 - `quantile` edges of the last `calibration` deviations, and the score is how
far the new deviation lies beyond the median in units of that half-band (1.0 = as far as the
`quantile` of the past). The levels compare the score with `warning` and `alarm`, multiples of
that half-band: thresholds calibrated on the signal's own history, not fixed z-scores.

Output per reading (`Detection`): `score` is None and `level` is "warming-up" until the
detector has seen enough readings to score (its warm-up, see each class); then `level` is
"ok", "warning" or "alarm". Served, the score column is left out while warming up (a missing
value rather than a misleading 0.0) and the level column says "warming-up".

- `RobustDetector`: residual from a rolling median, or from a per-phase rolling median when
  the signal has a cycle (`period_s`, e.g. 86400 for a daily one).
- `ForecastDetector`: residuals of river's Holt-Winters one-step forecast (level, trend and,
  with `season`, an additive seasonal component) and of a slow level of the deseasonalised
  readings, for drifts the forecast follows; the larger score counts.
- `DiscordDetector`: the distance of the newest subsequence to its nearest neighbour in the
  recent past (the left matrix profile of Yeh et al., as stumpy's `stumpi` keeps it; raw
  Euclidean by default, z-normalised with `normalize`); a shape never seen before is far from
  everything. stumpy itself is not used: its JIT compile took 41 s and 510 MB (docs/models.md).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from river import stats, time_series

LEVELS = ("warming-up", "ok", "warning", "alarm")


@dataclass(frozen=True)
class Parameter:
    """One constructor parameter as a manifest may expose it."""

    name: str
    type: str  # "int", "float", "bool"
    default: Any
    minimum: float | None
    maximum: float | None
    trades: str  # what raising it buys and costs


@dataclass(frozen=True)
class Detection:
    score: float | None  # None while warming up
    level: str  # one of LEVELS


RELATIVE_RESOLUTION = 0.01  # by default the band is never narrower than 1% of the level


def _calibration(warning: float, alarm: float) -> tuple[Parameter, ...]:
    return (
        Parameter(
            "resolution",
            "float",
            0.0,
            0.0,
            1e12,
            "the smallest change of the signal that matters (a quantised sensor's step), in "
            "the signal's unit; the band is never narrower (nor narrower than "
            "relative_resolution x the signal's level); higher = a flat or quantised signal "
            "does not alarm on its own steps, and changes smaller than it are not seen",
        ),
        Parameter(
            "relative_resolution",
            "float",
            RELATIVE_RESOLUTION,
            0.0,
            0.5,
            "the band is never narrower than this share of the signal's level (0.01: 1%): it "
            "keeps a flat signal's band from being zero wide; lower it for a signal far from "
            "zero (a temperature in K, a pressure of 1000 with noise of 1), where 1% of the "
            "level hides faults; 0 = only `resolution` and the data set the band",
        ),
        Parameter(
            "accept",
            "int",
            720,
            20,
            100_000,
            "readings after which a lasting non-ok state is the new normal: when more than "
            "half of the last `accept` readings were warning or alarm, their deviations are "
            "learned and the band widens; lower = a wrong band or a new normal is accepted "
            "sooner, and so is a lasting fault",
        ),
        Parameter(
            "calibration",
            "int",
            1440,
            50,
            100_000,
            "readings of past deviations the thresholds are calibrated on; longer = steadier "
            "thresholds, slower to accept a new normal",
        ),
        Parameter(
            "quantile",
            "float",
            0.99,
            0.9,
            0.9999,
            "the quantile of past deviations that scores 1.0; higher = a noisier estimate of a "
            "rarer edge",
        ),
        Parameter(
            "warning",
            "float",
            warning,
            0.5,
            100.0,
            "score (in half-bands of past deviations) from which a reading is a warning",
        ),
        Parameter(
            "alarm",
            "float",
            alarm,
            0.5,
            100.0,
            "score from which a reading is an alarm; higher = fewer false alarms, later and "
            "fewer detections",
        ),
    )


def _get(statistic: stats.RollingQuantile) -> float:
    value = statistic.get()
    return 0.0 if value is None else float(value)


_HoltWinters: Any = time_series.HoltWinters  # river's forecasters are not typed


SCORE_CAP = 1000.0  # scores are capped: finite however far out a reading lies
NO_VALUE = "no-value"  # a reading that is not a finite number: not scored, not learned


def accept_of(recent: deque[bool]) -> int:
    return recent.maxlen or 0


class Calibrator:
    """Scores a deviation against the band of the last `calibration` deviations that were
    "ok" (a warning's or an alarm's deviation is left out, so one anomaly does not hide the
    next; a lasting change is followed by the baseline, the median or the forecast).

    The half-band is never narrower than `resolution` nor than `relative_resolution` (1%) of
    the signal's level
    (`scale`, given by the detector): a signal that was flat (or repeated itself exactly) for
    the whole calibration has a band of zero width, and every later change, however small,
    would score as far out as a real fault, for ever, since non-ok deviations are not learned.
    And a band that proved too narrow widens: when more than half of the last `accept`
    readings were non-ok, the deviations are learned again (the lasting state becomes the new
    normal, as the median does after a level shift). Scores are capped at SCORE_CAP."""

    def __init__(
        self,
        calibration: int,
        quantile: float,
        warning: float,
        alarm: float,
        warm_up: int,
        two_sided: bool = True,
        resolution: float = 0.0,
        accept: int = 720,
        relative_resolution: float = 0.01,
    ) -> None:
        if not 0.5 < quantile < 1:
            raise ValueError(f"quantile must lie between 0.5 and 1, got {quantile}")
        if not 0 < warning <= alarm:
            raise ValueError(f"need 0 < warning <= alarm, got {warning} and {alarm}")
        if not (resolution >= 0 and math.isfinite(resolution)):
            raise ValueError(f"resolution must be a finite number >= 0, got {resolution}")
        if accept < 2:
            raise ValueError(f"accept must be at least 2, got {accept}")
        if not 0 <= relative_resolution <= 0.5:
            raise ValueError(
                f"relative_resolution must lie between 0 and 0.5, got {relative_resolution}"
            )
        self.relative_resolution = relative_resolution
        self.mid = stats.RollingQuantile(0.5, calibration)
        self.hi = stats.RollingQuantile(quantile, calibration)
        self.lo = stats.RollingQuantile(1 - quantile, calibration) if two_sided else None
        self.warning = warning
        self.alarm = alarm
        self.warm_up = warm_up
        self.resolution = resolution
        self.recent: deque[bool] = deque(maxlen=accept)  # non-ok or not, newest last
        self.non_ok = 0
        self.seen = 0
        self.edges = (-math.inf, math.inf)  # the deviations a warning starts at, last scored

    def clip(self, deviation: float) -> float:
        """The deviation clipped to the alarm edges of the band it was last scored by (for
        a forecaster to learn from: one glitch must not drag its state)."""
        return min(max(deviation, self.edges[0]), self.edges[1])

    def score(self, deviation: float, scale: float = 0.0) -> Detection:
        """Score, then learn: a deviation is judged against the past only. `scale`: the
        signal's level (its median, its forecast), for the relative floor of the band."""
        detection = Detection(None, "warming-up")
        deviation = min(max(deviation, -1e300), 1e300)  # an overflow (inf) stays a number
        if self.seen >= self.warm_up:
            mid = _get(self.mid)
            floor = max(self.resolution, self.relative_resolution * abs(scale), 1e-9)
            hi = max(_get(self.hi) - mid, floor)
            lo = max(mid - _get(self.lo), floor) if self.lo is not None else math.inf
            self.edges = (mid - self.alarm * lo, mid + self.alarm * hi)
            band = hi if deviation >= mid else lo
            s = min(abs(deviation - mid) / band, SCORE_CAP)
            level = "alarm" if s >= self.alarm else "warning" if s >= self.warning else "ok"
            detection = Detection(s, level)
            bad = level != "ok"
            if len(self.recent) == self.recent.maxlen:
                self.non_ok -= self.recent[0]
            self.recent.append(bad)
            self.non_ok += bad
            if bad and 2 * self.non_ok <= accept_of(self.recent):
                return detection  # an anomaly does not widen the band it is judged by
        self.mid.update(deviation)
        self.hi.update(deviation)
        if self.lo is not None:
            self.lo.update(deviation)
        self.seen += 1
        return detection


class Detector:
    """A streaming detector of one signal (one asset's column)."""

    PARAMETERS: tuple[Parameter, ...] = ()

    def update(self, value: float, ts_ms: int) -> Detection:
        raise NotImplementedError


class RobustDetector(Detector):
    """Median and quantile based: the residual from a rolling median of the last `window`
    readings, or, with `period_s`, from the rolling median of the readings at the same phase
    of the cycle (`bins` phases, `window` readings over all phases) — a seasonal baseline that
    keeps a daily peak from looking like an anomaly. Warm-up: `window` // 4 readings (with
    `period_s`: until the reading's phase has been seen `min_per_bin` times), then `warm_up`
    residuals for the calibration."""

    PARAMETERS = (
        Parameter(
            "window",
            "int",
            1440,
            10,
            100_000,
            "readings in the median; longer = steadier baseline, slower after a real change",
        ),
        Parameter(
            "period_s",
            "float",
            0.0,
            0.0,
            31_536_000.0,
            "the signal's cycle in seconds (86400: daily; 0: none); with a cycle, each phase "
            "has its own median (the first full cycle is warm-up)",
        ),
        Parameter("bins", "int", 48, 4, 1440, "phases of the cycle; more = finer, slower warm-up"),
        Parameter(
            "warm_up",
            "int",
            240,
            20,
            100_000,
            "residuals seen before the first score, after window // 4 readings for the "
            "median: with the defaults the first score comes at the 601st reading (10 min at "
            "1 Hz; with period_s, after the first cycle); longer = steadier thresholds and "
            "fewer early false alarms, but nothing is judged meanwhile",
        ),
        *_calibration(1.3, 1.6),
    )

    def __init__(
        self,
        window: int = 1440,
        period_s: float = 0.0,  # 0: no cycle
        bins: int = 48,
        warm_up: int = 240,
        calibration: int = 1440,
        quantile: float = 0.99,
        warning: float = 1.3,
        alarm: float = 1.6,
        resolution: float = 0.0,
        accept: int = 720,
        relative_resolution: float = 0.01,
        min_per_bin: int = 3,
    ) -> None:
        self.period_ms = period_s * 1000 if period_s else None
        self.bins = bins
        self.min_per_bin = min_per_bin
        per_bin = max(min_per_bin, window // bins) if period_s else window
        self.medians: dict[int, stats.RollingQuantile] = {}
        self.counts: dict[int, int] = {}
        self.per_bin = per_bin
        self.first = max(1, window // 4) if not period_s else min_per_bin
        self.calibrator = Calibrator(
            calibration,
            quantile,
            warning,
            alarm,
            warm_up,
            True,
            resolution,
            accept,
            relative_resolution,
        )

    def update(self, value: float, ts_ms: int) -> Detection:
        if not math.isfinite(value):
            return Detection(None, NO_VALUE)
        phase = int((ts_ms % self.period_ms) * self.bins // self.period_ms) if self.period_ms else 0
        median = self.medians.get(phase)
        if median is None:
            median = self.medians[phase] = stats.RollingQuantile(0.5, self.per_bin)
        seen = self.counts.get(phase, 0)
        detection = Detection(None, "warming-up")
        if seen >= self.first:
            level = _get(median)
            detection = self.calibrator.score(value - level, level)
        median.update(value)
        self.counts[phase] = seen + 1
        return detection


class ForecastDetector(Detector):
    """Forecasting residuals: river's Holt-Winters (additive level and trend, and a seasonal
    component of `season` readings when set) forecasts each reading from the ones before, and
    two residuals are scored, each against the band of its own past:

    - the one-step residual, reading minus forecast: a sudden change (a spike, a step, a
      changed shape);
    - the level residual, the deseasonalised reading (reading minus the forecast's seasonal
      component) minus a slow level, an exponentially weighted mean of the deseasonalised
      readings: level += `level_alpha` x (deseasonalised reading - level), about 1 /
      `level_alpha` readings of memory. A forecaster with a trend follows a slow ramp, so the
      one-step residual of a ramp stays small (a cooling failure's temperature creeping
      above its usual ceiling); the level residual is where such a drift shows.

    The score is the larger of the two, the level from it. `level_alpha` 0 scores the
    one-step residual only. Warm-up: max(2, `season`) readings to initialise the forecaster,
    then `warm_up` residuals."""

    PARAMETERS = (
        Parameter(
            "alpha",
            "float",
            0.3,
            0.001,
            1.0,
            "level smoothing; higher = follows real changes faster, and hides slow faults",
        ),
        Parameter(
            "beta",
            "float",
            0.01,
            0.0001,
            1.0,
            "trend smoothing; higher = follows a trend sooner, and also gets used to a slowly "
            "growing fault",
        ),
        Parameter(
            "gamma",
            "float",
            0.1,
            0.001,
            1.0,
            "seasonal smoothing (with `season`); higher = a changed cycle is learned sooner, and "
            "a repeated anomaly too",
        ),
        Parameter(
            "season",
            "int",
            0,
            0,
            100_000,
            "readings in one cycle (0: none); a cycle is learned, not alarmed on, after the "
            "first one",
        ),
        Parameter(
            "level_alpha",
            "float",
            0.01,
            0.0,
            1.0,
            "smoothing of the slow level the drift residual is taken from (about 1 / "
            "level_alpha readings of memory; 0: one-step residual only); lower = a longer "
            "memory of the usual level, slower to accept a new one",
        ),
        Parameter(
            "warm_up",
            "int",
            240,
            20,
            100_000,
            "residuals seen before the first score, after max(2, season) readings for the "
            "forecaster: with the defaults the first score comes at the 243rd reading (4 min "
            "at 1 Hz); longer = steadier thresholds and fewer early false alarms, but nothing "
            "is judged meanwhile",
        ),
        *_calibration(1.3, 1.6),
    )

    def __init__(
        self,
        alpha: float = 0.3,
        beta: float = 0.01,
        gamma: float = 0.1,
        season: int = 0,
        level_alpha: float = 0.01,
        warm_up: int = 240,
        calibration: int = 1440,
        quantile: float = 0.99,
        warning: float = 1.3,
        alarm: float = 1.6,
        resolution: float = 0.0,
        accept: int = 720,
        relative_resolution: float = 0.01,
    ) -> None:
        if not 0 <= level_alpha <= 1:
            raise ValueError(f"level_alpha must lie between 0 and 1, got {level_alpha}")
        self.model: Any = _HoltWinters(
            alpha=alpha, beta=beta, gamma=gamma if season else None, seasonality=season
        )
        self.season = season
        self.first: list[float] = []
        calibrate = (
            calibration,
            quantile,
            warning,
            alarm,
            warm_up,
            True,
            resolution,
            accept,
            relative_resolution,
        )
        self.calibrator = Calibrator(*calibrate)
        self.level_alpha = level_alpha
        self.level: float | None = None  # the slow level of the deseasonalised readings
        self.level_calibrator = Calibrator(*calibrate)

    def update(self, value: float, ts_ms: int) -> Detection:
        if not math.isfinite(value):
            return Detection(None, NO_VALUE)
        model = self.model
        detection = Detection(None, "warming-up")
        if model._initialized:
            forecast = float(model.forecast(horizon=1)[0])
            detection = self.calibrator.score(value - forecast, forecast)
            if detection.level == "alarm":
                # learn the reading clipped to the band's warning edge (as robust
                # Holt-Winters does): one glitch must not drag the level, trend and season
                value = forecast + self.calibrator.clip(value - forecast)
            if self.level_alpha:
                trend = float(model.trend[-1]) if model.trend is not None else 0.0
                deseasonalised = value - (forecast - float(model.level[-1]) - trend)
                if self.level is None:
                    self.level = deseasonalised
                drift = self.level_calibrator.score(deseasonalised - self.level, self.level)
                self.level += self.level_alpha * (deseasonalised - self.level)
                if detection.score is not None and drift.score is not None:
                    detection = max(detection, drift, key=lambda d: d.score or 0.0)
            model.learn_one(value)
            return detection
        self.first.append(value)
        model.learn_one(value)
        if model._initialized and model.season is not None:
            # river 0.26 starts an additive season from y / level (the multiplicative start);
            # the additive one is y - level.
            level = float(model.level[-1])
            model.season.clear()
            model.season.extend(y - level for y in self.first)
        return detection


class DiscordDetector(Detector):
    """Subsequence discords: the z-normalised Euclidean distance of the newest `m` readings to
    their nearest neighbour among the subsequences of the last `history` readings (the left
    matrix profile; neighbours overlapping the newest by more than 3/4 are excluded as trivial
    matches). A level shift, a spike or a changed shape gives a subsequence unlike any before.
    Warm-up: `history` // 2 readings, then `warm_up` distances."""

    PARAMETERS = (
        Parameter(
            "m",
            "int",
            60,
            4,
            2000,
            "subsequence length in readings; about the length of the shapes that matter",
        ),
        Parameter(
            "history",
            "int",
            1440,
            50,
            20_000,
            "readings searched for a neighbour; longer = remembers rarer normal shapes, costs "
            "O(history x m) per reading",
        ),
        Parameter(
            "warm_up",
            "int",
            240,
            20,
            100_000,
            "distances seen before the first score, after history // 2 readings: with the "
            "defaults the first score comes at the 960th reading (16 min at 1 Hz); longer = "
            "steadier thresholds and fewer early false alarms, but nothing is judged meanwhile",
        ),
        Parameter(
            "normalize",
            "bool",
            False,
            None,
            None,
            "compare shapes only (z-normalised, stumpy's default): blind to level and "
            "amplitude, and noise dominates slow signals; off = raw Euclidean distance",
        ),
        *_calibration(1.5, 2.0),
    )

    def __init__(
        self,
        m: int = 60,
        history: int = 1440,
        warm_up: int = 240,
        calibration: int = 1440,
        quantile: float = 0.99,
        warning: float = 1.5,
        alarm: float = 2.0,
        normalize: bool = False,
        resolution: float = 0.0,
        accept: int = 720,
        relative_resolution: float = 0.01,
    ) -> None:
        if history < 2 * m:
            raise ValueError(f"history ({history}) must be at least 2 x m ({m})")
        self.m = m
        self.history = history
        self.normalize = normalize
        self.buffer: deque[float] = deque(maxlen=history)
        self.hold = max(1, m // 4) - 1  # readings an alarm holds after its onset
        self.alarmed: int | None = None  # readings since the alarm's onset; None: armed
        self.calibrator = Calibrator(
            calibration,
            quantile,
            warning,
            alarm,
            warm_up,
            False,
            resolution,
            accept,
            relative_resolution,
        )

    def distance(self) -> float:
        t = np.fromiter(self.buffer, dtype=np.float64, count=len(self.buffer))
        m = self.m
        windows = np.lib.stride_tricks.sliding_window_view(t, m)
        query = windows[-1]
        past = windows[: len(windows) - max(1, m // 4)]  # the exclusion zone
        if not self.normalize:
            diff = past - query
            return float(math.sqrt(float(np.einsum("ij,ij->i", diff, diff).min())))
        mu = past.mean(axis=1)
        sigma = past.std(axis=1)
        q_mu = query.mean()
        q_sigma = query.std()
        floor = 1e-8 * max(1.0, abs(q_mu))
        if q_sigma < floor:
            # a flat newest subsequence: its distance to flat past ones is 0, to others 2m
            d2 = np.where(sigma < floor, 0.0, 2.0 * m)
        else:
            corr = (past @ query - m * mu * q_mu) / (m * np.maximum(sigma, floor) * q_sigma)
            d2 = np.where(sigma < floor, 2.0 * m, 2.0 * m * (1.0 - np.clip(corr, -1.0, 1.0)))
        return float(math.sqrt(max(float(d2.min()), 0.0)))

    def update(self, value: float, ts_ms: int) -> Detection:
        if not math.isfinite(value):
            return Detection(None, NO_VALUE)
        self.buffer.append(value)
        if len(self.buffer) < max(self.history // 2, 2 * self.m):
            return Detection(None, "warming-up")
        with np.errstate(over="ignore", invalid="ignore"):
            distance = self.distance()
        if self.normalize:
            return self.once(self.calibrator.score(distance))
        # raw distances are in the signal's unit: the band's floor is relative to its level
        newest = [self.buffer[i] for i in range(len(self.buffer) - self.m, len(self.buffer))]
        return self.once(self.calibrator.score(distance, float(np.median(newest))))

    def once(self, detection: Detection) -> Detection:
        """One alarm per discord: the alarm lasts at most m // 4 readings from its onset (the
        discord and its trivial matches: the exclusion zone of the distance, stumpy's
        default), then the level is "warning" for as long as the score stays at or above
        the warning threshold; a new alarm needs the score to have fallen below it first
        (re-armed, the deadband of alarm management). The subsequences after a discord
        overlap it and hold the same anomaly, and a signal with memory (a motor cooling down
        after a cooling failure) stays unlike its past after the anomaly has ended: without
        this, the alarm would last as long, past the anomaly. The score is not changed."""
        if detection.score is None:
            return detection
        if self.alarmed is not None:
            self.alarmed += 1
            if detection.score < self.calibrator.warning:
                self.alarmed = None  # cleared: the next alarm is a new discord
            elif detection.level == "alarm" and self.alarmed > self.hold:
                return Detection(detection.score, "warning")
            return detection
        if detection.level == "alarm":
            self.alarmed = 0
        return detection


def parameters_of(cls: type[Detector]) -> list[dict[str, Any]]:
    """The class's parameters as plain dicts (for a manifest's `parameters` section)."""
    return [p.__dict__.copy() for p in cls.PARAMETERS]


DetectorFactory = Callable[[], Detector]
