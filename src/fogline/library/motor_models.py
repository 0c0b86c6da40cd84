"""The motor models: both read windows of vibration, temperature, current and sound level,
and both are trained when they start, on data from the virtual fleet's motor physics.

- motor-anomaly: an isolation forest fitted on healthy windows only (it never sees a fault
  label); a window unlike the healthy ones is an anomaly.
- motor-failure: a logistic regression on the same features, fitted on windows labelled with
  the faults the simulation injected; its output is the probability that a fault is active.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
from sklearn.ensemble import IsolationForest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from fogline.library.motors import Window, features, simulate
from fogline.sdk import Model, Reading, parameters, serve

TRAINING = {"motors": 12, "duration_s": 4 * 3600, "seed": 7}


def _windows_by_asset(readings: list[Reading]) -> dict[str, list[Reading]]:
    by_asset: dict[str, list[Reading]] = defaultdict(list)
    for r in readings:
        by_asset[r.asset].append(r)
    return by_asset


class _WindowModel(Model):
    """Groups a window's readings per asset, one output per asset at the window's last
    reading."""

    def predict(self, rows: list[list[float]]) -> list[dict[str, Any]]:
        raise NotImplementedError

    def score(self, readings: list[Reading]) -> list[Any]:
        assets, rows, ends = [], [], []
        for asset, rs in _windows_by_asset(readings).items():
            feats = features([r.values for r in rs])
            if feats is not None:
                assets.append(asset)
                rows.append(feats)
                ends.append(max(r.ts for r in rs))
        if not rows:
            return []
        return [
            {"asset": a, "ts": ts, "values": values}
            for a, ts, values in zip(assets, ends, self.predict(rows), strict=True)
        ]


class MotorAnomaly(_WindowModel):
    def __init__(
        self, windows: list[Window] | None = None, contamination: float = 0.01, trees: int = 200
    ) -> None:
        windows = windows if windows is not None else simulate(**TRAINING)
        healthy = np.array([w.features for w in windows if w.fault is None])
        forest = IsolationForest(n_estimators=trees, contamination=contamination, random_state=0)
        self.forest: Pipeline = make_pipeline(StandardScaler(), forest)
        self.forest.fit(healthy)

    def anomalous(self, rows: list[list[float]]) -> list[bool]:
        return [bool(p == -1) for p in self.forest.predict(np.array(rows))]

    def predict(self, rows: list[list[float]]) -> list[dict[str, Any]]:
        scores = -self.forest.score_samples(np.array(rows))  # higher: more anomalous
        flags = self.anomalous(rows)
        return [
            {"anomaly_score": round(float(s), 4), "anomaly_warning": "warning" if f else "ok"}
            for s, f in zip(scores, flags, strict=True)
        ]


class MotorFailure(_WindowModel):
    def __init__(
        self,
        windows: list[Window] | None = None,
        warning_probability: float = 0.5,
        alarm_probability: float = 0.9,
    ) -> None:
        self.warning_probability = warning_probability
        self.alarm_probability = alarm_probability
        windows = windows if windows is not None else simulate(**TRAINING)
        x = np.array([w.features for w in windows])
        y = np.array([w.fault is not None for w in windows])
        self.classifier: Pipeline = make_pipeline(
            StandardScaler(), LogisticRegression(max_iter=2000, class_weight="balanced")
        )
        self.classifier.fit(x, y)

    def probabilities(self, rows: list[list[float]]) -> list[float]:
        return [float(p) for p in self.classifier.predict_proba(np.array(rows))[:, 1]]

    def predict(self, rows: list[list[float]]) -> list[dict[str, Any]]:
        out = []
        for p in self.probabilities(rows):
            level = (
                "alarm"
                if p >= self.alarm_probability
                else "warning"
                if p >= self.warning_probability
                else "ok"
            )
            out.append({"failure_probability": round(p, 4), "failure_warning": level})
        return out


def main_anomaly() -> None:
    serve(MotorAnomaly(**parameters()))


def main_failure() -> None:
    serve(MotorFailure(**parameters()))
