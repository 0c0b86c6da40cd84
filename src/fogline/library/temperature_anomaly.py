"""temperature-anomaly: a stateful streaming detector. Per asset, exponentially weighted mean
and variance of the temperature (river's streaming statistics); a reading's score is how many
standard deviations it lies from what the asset usually does. Learns as it scores."""

from __future__ import annotations

import math
from typing import Any

from river import stats

from fogline.sdk import Model, Reading, parameters, serve

# The defaults; the catalog's manifest declares them as parameters a user can set.
WARM_UP = 60  # readings per asset before it scores
WARNING_Z = 2.5
ALARM_Z = 4.0


class _Baseline:
    def __init__(self, fading: float) -> None:
        self.mean = stats.EWMean(fading_factor=fading)
        self.var = stats.EWVar(fading_factor=fading)
        self.count = 0


class TemperatureAnomaly(Model):
    def __init__(
        self,
        fading: float = 0.002,
        warm_up: int = WARM_UP,
        warning_z: float = WARNING_Z,
        alarm_z: float = ALARM_Z,
    ) -> None:
        self.fading = fading
        self.warm_up = warm_up
        self.warning_z = warning_z
        self.alarm_z = alarm_z
        self.assets: dict[str, _Baseline] = {}

    def z(self, asset: str, value: float) -> float:
        """Score, then learn: the reading is judged against the past only."""
        base = self.assets.setdefault(asset, _Baseline(self.fading))
        z = 0.0
        if base.count >= self.warm_up:
            z = abs(value - base.mean.get()) / max(math.sqrt(base.var.get()), 0.5)
        base.mean.update(value)
        base.var.update(value)
        base.count += 1
        return z

    def score(self, readings: list[Reading]) -> list[Any]:
        results = []
        for r in readings:
            z = self.z(r.asset, float(r.values["temperature"]))
            level = "alarm" if z >= self.alarm_z else "warning" if z >= self.warning_z else "ok"
            results.append({"temperature_score": round(z, 3), "temperature_warning": level})
        return results


if __name__ == "__main__":
    serve(TemperatureAnomaly(**parameters()))
