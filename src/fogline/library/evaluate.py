"""Measured quality of the library's models. `fogline library evaluate` prints these.

Anomaly detectors: each against the rolling z-score baseline, computed in the same run on the
same series, scored by episodes (scoring.py) on two kinds of evaluation set:

- `virtual-fleet`: temperature of held-out virtual motors every 5 s, cooling failures labelled
  (the platform's own simulator: it says how the detectors do on what the demo shows);
- GutenTAG series (data/, generated once by TimeEval's GutenTAG, not by Fogline): a reading a
  minute over 6 days, daily cycle, trend and noise, with level shifts, amplitude, variance,
  frequency, platform, extremum and shape anomalies labelled.

- a user's own labelled series (`--series FILE.csv`: ts, value, label), read by
  `read_series` and set up by `series_set` (the cycle and `--param`s as a user gives them).

Motor models: precision and recall on held-out virtual-fleet windows (motor_models.py).
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Any

from fogline.domain.errors import InvalidInput, Problem
from fogline.library.detectors import (
    Detector,
    DiscordDetector,
    ForecastDetector,
    Parameter,
    RobustDetector,
)
from fogline.library.motor_models import TRAINING, MotorAnomaly, MotorFailure
from fogline.library.motors import precision_recall, simulate
from fogline.library.scoring import (
    Figures,
    RollingZBaseline,
    SeasonalZBaseline,
    score,
    windows_of,
)
from fogline.sim.motors import Fault, Motor

GUTENTAG_SERIES = (
    "daily-levelshift-amplitude",
    "daily-pattern-variance",
    "machine-cycle-shape",
)
BASELINE = "rolling-z baseline"
SEASONAL_BASELINE = "seasonal rolling-z baseline"  # only where the set has a cycle


@dataclass(frozen=True)
class Series:
    name: str
    values: list[float]
    ts_ms: list[int]
    labels: list[bool]


@dataclass(frozen=True)
class EvaluationSet:
    name: str
    description: str
    series: list[Series]
    detectors: dict[str, Callable[[], Detector]]  # library model -> a fresh detector
    baseline_window: int  # readings in the baseline's rolling window
    merge_gap: int  # readings between alarms that still make one episode
    tolerance: int  # readings a window is widened by on each side
    period_s: float = 0.0  # the cycle the detectors are told (0: none)


def read_gutentag(name: str) -> Series:
    data = resources.files("fogline.library") / "data" / f"{name}.csv.gz"
    with data.open("rb") as raw, gzip.open(raw, "rt") as text:
        rows = list(csv.DictReader(text))
    return Series(
        name,
        [float(r["value"]) for r in rows],
        [int(r["minute"]) * 60_000 for r in rows],
        [r["is_anomaly"] == "1" for r in rows],
    )


def gutentag_set(names: tuple[str, ...] = GUTENTAG_SERIES) -> EvaluationSet:
    """A reading a minute; a user of these signals knows that the day is their cycle."""
    return EvaluationSet(
        "gutentag",
        "GutenTAG series, 1 reading/min, 6 days each, daily cycle (" + ", ".join(names) + "); "
        "settings a user of such a signal gives: robust period_s=86400, forecast season=1440, "
        "discord history=1560, the rest defaults (temperature-anomaly reads a motor's "
        "temperature: fleet set only)",
        [read_gutentag(n) for n in names],
        {
            "robust-anomaly": lambda: RobustDetector(period_s=86_400),
            "forecast-anomaly": lambda: ForecastDetector(season=1440),
            # history: a day and a subsequence, so that yesterday's same hour is a neighbour
            "discord-anomaly": lambda: DiscordDetector(history=1440 + 120),
        },
        baseline_window=1440,
        merge_gap=30,
        tolerance=30,
        period_s=86_400,
    )


def fleet_set(
    motors: int = 10, duration_s: int = 8 * 3600, seed: int = 2001, fault_every_s: int = 7200
) -> EvaluationSet:
    """Temperature of held-out motors every 5 s; a cooling failure is the labelled window
    (a fault of any kind every `fault_every_s` on average, so anomalies stay rare)."""
    series = []
    for m in range(motors):
        motor = Motor(f"t{m}", random.Random(seed * 1000 + m), 1 / fault_every_s)
        values, ts, labels = [], [], []
        for t in range(duration_s):
            reading = motor.step(1.0, t * 1000)
            if t % 5 == 0:
                values.append(reading["temperature"])
                ts.append(t * 1000)
                labels.append(motor.fault is Fault.COOLING_FAILURE)
        series.append(Series(motor.asset, values, ts, labels))
    return EvaluationSet(
        "virtual-fleet",
        f"virtual fleet, {motors} held-out motors x {duration_s // 3600} h, temperature every "
        "5 s, cooling failures; settings: discord m=24 (two minutes, the motor's thermal time "
        "constant), the rest defaults (temperature-anomaly is robust-anomaly with its defaults, "
        "so their rows match)",
        series,
        {
            # as served: the library's temperature-anomaly is the robust detector's defaults
            "temperature-anomaly": lambda: RobustDetector(),
            "robust-anomaly": lambda: RobustDetector(),
            "forecast-anomaly": lambda: ForecastDetector(),
            # m: two minutes of readings, about the motor's thermal time constant (90 s)
            "discord-anomaly": lambda: DiscordDetector(m=24),
        },
        baseline_window=720,  # one hour
        merge_gap=6,
        tolerance=6,
    )


def judge(rows: dict[str, dict[str, Any]]) -> None:
    """Each detector's `vs_baseline`: "beats baseline" (the issue's target: at least the
    baseline's hits with fewer false-alarm episodes, none where it has none; and, so that a
    detector in alarm for long stretches loses however many windows it overlaps, an alarm
    precision by readings at least the baseline's, where both raised alarms: the range-based
    precision of Tatbul et al.), or how it loses. False-alarm episodes include the parts of an
    episode outside the widened windows (scoring.py)."""
    base = rows[BASELINE]
    for name, row in rows.items():
        if name == BASELINE:
            continue
        hit, fa = row["hit"], row["false_alarm_episodes"]
        losses = []
        if hit < base["hit"]:
            losses.append(f"hits fewer windows ({hit} vs {base['hit']})")
        base_fa = base["false_alarm_episodes"]
        if fa > base_fa or (fa == base_fa and base_fa > 0):
            losses.append(f"no fewer false alarms ({fa} vs {base_fa})")
        precision, base_precision = row["alarm_precision"], base["alarm_precision"]
        if precision is not None and base_precision is not None and precision < base_precision:
            losses.append(f"lower alarm precision ({precision:.3f} vs {base_precision:.3f})")
        row["vs_baseline"] = "; ".join(losses) if losses else "beats baseline"


def run_set(es: EvaluationSet) -> dict[str, Any]:
    """Every detector and the baseline on every series of the set; figures summed over the
    series (and kept per series), each detector's verdict against the baseline stated."""
    baselines = [BASELINE, SEASONAL_BASELINE] if es.period_s else [BASELINE]
    totals: dict[str, Figures] = {name: Figures() for name in [*es.detectors, *baselines]}
    per_series: dict[str, dict[str, Any]] = {}
    for s in es.series:
        base = RollingZBaseline(es.baseline_window)
        alarms = {BASELINE: [base.alarm(v) for v in s.values]}
        if es.period_s:
            seasonal = SeasonalZBaseline(es.baseline_window, es.period_s * 1000)
            alarms[SEASONAL_BASELINE] = [
                seasonal.alarm(v, t) for v, t in zip(s.values, s.ts_ms, strict=True)
            ]
        for name, make in es.detectors.items():
            d = make()
            alarms[name] = [
                d.update(v, t).level == "alarm" for v, t in zip(s.values, s.ts_ms, strict=True)
            ]
        per_series[s.name] = {}
        for name, a in alarms.items():
            figures = score(a, s.labels, es.merge_gap, es.tolerance)
            per_series[s.name][name] = figures.as_dict()
            totals[name].add(figures)
    rows = {name: f.as_dict() for name, f in totals.items()}
    judge(rows)
    for series_rows in per_series.values():
        judge(series_rows)
    return {
        "set": es.name,
        "description": es.description,
        "detectors": rows,
        "series": per_series,  # the same figures series by series
    }


def evaluate_detectors(fleet: EvaluationSet | None = None) -> list[dict[str, Any]]:
    return [run_set(fleet or fleet_set()), run_set(gutentag_set())]


def evaluate_motor_models(
    motors: int = 10, duration_s: int = 4 * 3600, seed: int = 1001
) -> dict[str, Any]:
    train = simulate(**TRAINING)
    test = simulate(motors=motors, duration_s=duration_s, seed=seed)
    actual = [w.fault is not None for w in test]
    rows = [w.features for w in test]
    anomaly = MotorAnomaly(train).anomalous(rows)
    probabilities = MotorFailure(train).probabilities(rows)
    return {
        "motor-anomaly": precision_recall(anomaly, actual),
        "motor-failure": precision_recall([p >= 0.5 for p in probabilities], actual),
        "motor-failure@0.9": precision_recall([p >= 0.9 for p in probabilities], actual),
    }


def evaluate_all() -> dict[str, Any]:
    return {"anomaly_detectors": evaluate_detectors(), "motor_models": evaluate_motor_models()}


# A user's own labelled series (`fogline library evaluate --series FILE.csv`).

SERIES_DETECTORS: dict[str, type[Detector]] = {
    "robust-anomaly": RobustDetector,
    "forecast-anomaly": ForecastDetector,
    "discord-anomaly": DiscordDetector,
}
MAX_PROBLEMS = 50  # bad rows listed at most (then a count of the rest)
MIN_READINGS = 200  # fewer: not even the detectors' warm-up


def _timestamp(text: str) -> int:
    """Epoch milliseconds, or ISO 8601 (a time without a zone is UTC)."""
    text = text.strip()
    try:
        number = float(text)
    except ValueError:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return int(moment.timestamp() * 1000)
    if not math.isfinite(number):
        raise ValueError("not a finite number")
    return int(number)


def read_series(path: Path) -> Series:
    """A CSV with the columns `ts` (epoch ms or ISO 8601), `value` (a number) and `label`
    (1: inside a labelled anomaly window, 0: not), a header row first, ordered by `ts`.
    Every bad row is reported at once (InvalidInput, up to MAX_PROBLEMS of them)."""
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise InvalidInput.of([Problem(where, exc.strerror or str(exc))], "file") from None
    except UnicodeDecodeError as exc:
        problem = Problem(where, f"not UTF-8 text (byte {exc.start}): not a CSV file")
        raise InvalidInput.of([problem], "file") from None
    reader = csv.DictReader(io.StringIO(text))
    columns = [c.strip() for c in reader.fieldnames or []]
    missing = [c for c in ("ts", "value", "label") if c not in columns]
    if missing:
        found = ", ".join(columns) if columns else "no header row"
        problem = Problem(
            where,
            f"needs the columns ts, value, label; missing {', '.join(missing)} (found: {found})",
        )
        raise InvalidInput.of([problem], "file")
    values: list[float] = []
    ts_ms: list[int] = []
    labels: list[bool] = []
    problems: list[Problem] = []
    last: int | None = None  # the last readable ts, of a good row or a bad one
    for line, raw in enumerate(reader, start=2):
        row = {(k or "").strip(): (v or "").strip() for k, v in raw.items() if k is not None}
        bad = []
        try:
            t = _timestamp(row["ts"])
        except (ValueError, OverflowError):
            bad.append(f"ts {row['ts']!r} is neither epoch milliseconds nor ISO 8601")
            t = None
        try:
            value = float(row["value"])
            if not math.isfinite(value):
                raise ValueError
        except ValueError:
            bad.append(f"value {row['value']!r} is not a finite number")
            value = math.nan
        if row["label"] not in ("0", "1"):
            bad.append(f"label {row['label']!r} is not 0 or 1")
        if t is not None:
            if last is not None and t <= last:
                bad.append(f"ts {row['ts']!r} is not after the row before (rows ordered by ts)")
            last = t
        if bad:
            problems.append(Problem(f"{where} line {line}", "; ".join(bad)))
            continue
        values.append(value)
        ts_ms.append(t if t is not None else 0)
        labels.append(row["label"] == "1")
    if len(problems) > MAX_PROBLEMS:
        rest = len(problems) - MAX_PROBLEMS
        problems = [*problems[:MAX_PROBLEMS], Problem(where, f"and {rest} more bad rows")]
    if not problems:
        if len(values) < MIN_READINGS:
            problems.append(
                Problem(where, f"{len(values)} readings: at least {MIN_READINGS} are needed")
            )
        elif not any(labels):
            problems.append(Problem(where, "no row has label 1: nothing to score against"))
    if problems:
        raise InvalidInput.of(problems, "series")
    return Series(path.stem, values, ts_ms, labels)


def _parameter_value(spec: Parameter, text: Any) -> Any:
    """A --param value checked against the parameter's type and bounds (ValueError)."""
    if spec.type == "bool":
        if isinstance(text, bool):
            return text
        raise ValueError(f"must be true or false, got {text!r}")
    if isinstance(text, bool) or not isinstance(text, int | float):
        raise ValueError(f"must be a number, got {text!r}")
    if spec.type == "int" and (not float(text).is_integer()):
        raise ValueError(f"must be a whole number, got {text!r}")
    value = int(text) if spec.type == "int" else float(text)
    if spec.minimum is not None and value < spec.minimum:
        raise ValueError(f"must be at least {spec.minimum:g}, got {value}")
    if spec.maximum is not None and value > spec.maximum:
        raise ValueError(f"must be at most {spec.maximum:g}, got {value}")
    return value


def detector_settings(
    params: dict[str, Any], interval_s: float, cycle_s: float
) -> dict[str, dict[str, Any]]:
    """Each detector's keyword arguments: the cycle translated as on the GutenTAG set (robust
    `period_s`, forecast `season` in readings, discord `history` a cycle and two
    subsequences), then the user's `--param`s: `DETECTOR.NAME=VALUE` for one detector,
    `NAME=VALUE` for every detector that has NAME. Every problem at once (InvalidInput)."""
    settings: dict[str, dict[str, Any]] = {name: {} for name in SERIES_DETECTORS}
    if cycle_s:
        season = max(2, round(cycle_s / interval_s))
        settings["robust-anomaly"]["period_s"] = cycle_s
        settings["forecast-anomaly"]["season"] = season
        settings["discord-anomaly"]["history"] = min(20_000, max(1440, season + 120))
    problems = []
    for key, text in params.items():
        detector, dot, name = key.rpartition(".")
        targets = [detector] if dot else list(SERIES_DETECTORS)
        if dot and detector not in SERIES_DETECTORS:
            known = ", ".join(SERIES_DETECTORS)
            problems.append(Problem(f"--param {key}", f"no detector {detector!r} ({known})"))
            continue
        found = False
        for target in targets:
            spec = next((p for p in SERIES_DETECTORS[target].PARAMETERS if p.name == name), None)
            if spec is None:
                continue
            found = True
            try:
                settings[target][name] = _parameter_value(spec, text)
            except ValueError as exc:
                problems.append(Problem(f"--param {key}", f"{target}: {exc}"))
        if not found:
            problems.append(
                Problem(
                    f"--param {key}",
                    f"no such parameter ({'of ' + detector if dot else 'of any detector'}; "
                    "`fogline library show NAME` lists them)",
                )
            )
    for target, kwargs in settings.items():
        try:
            SERIES_DETECTORS[target](**kwargs)
        except ValueError as exc:  # checks across parameters (discord: history >= 2 m)
            problems.append(Problem(f"--param {target}", str(exc)))
    if problems:
        raise InvalidInput.of(problems, "parameters")
    return settings


def series_set(
    series: Series,
    cycle_s: float = 0.0,
    params: dict[str, Any] | None = None,
    tolerance: int | None = None,
) -> EvaluationSet:
    """A user's labelled series as an evaluation set: the baseline's window is a day of
    readings (the issue's ten-line baseline), at least 30 and at most half the series; merge
    gap and tolerance 1% of the series' readings (at least 1, at most 30) unless given."""
    gaps = sorted(b - a for a, b in zip(series.ts_ms, series.ts_ms[1:], strict=False))
    interval_s = max(gaps[len(gaps) // 2] / 1000, 1e-3)
    settings = detector_settings(params or {}, interval_s, cycle_s)
    n = len(series.values)
    window = int(min(max(30, round(86_400 / interval_s)), n // 2))
    slack = tolerance if tolerance is not None else min(30, max(1, n // 100))
    shown = [
        f"{name} " + " ".join(f"{k}={v}" for k, v in kwargs.items())
        for name, kwargs in settings.items()
        if kwargs
    ]
    return EvaluationSet(
        series.name,
        f"{series.name}: {n} readings every {interval_s:g} s (median), "
        f"{len(windows_of(series.labels))} labelled windows; baseline window {window} readings, "
        f"merge gap and tolerance {slack}; settings: " + ("; ".join(shown) or "defaults"),
        [series],
        {name: partial(SERIES_DETECTORS[name], **kwargs) for name, kwargs in settings.items()},
        baseline_window=window,
        merge_gap=slack,
        tolerance=slack,
        period_s=cycle_s,
    )
