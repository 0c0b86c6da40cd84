"""temperature-anomaly: a stateful streaming detector. Per asset, exponentially weighted mean
and variance of the temperature (river's streaming statistics); a reading's score is how many
standard deviations it lies from what the asset usually does. Learns as it scores."""

from __future__ import annotations

import math
from typing import Any

from river import stats

from fogline.sdk import Model, Reading, serve

WARM_UP = 60  # readings per asset before it scores
WARNING_Z = 2.5
ALARM_Z = 4.0


class _Baseline:
    def __init__(self, fading: float) -> None:
        self.mean = stats.EWMean(fading_factor=fading)
        self.var = stats.EWVar(fading_factor=fading)
        self.count = 0


class TemperatureAnomaly(Model):
    def __init__(self, fading: float = 0.002) -> None:
        self.fading = fading
        self.assets: dict[str, _Baseline] = {}

    def z(self, asset: str, value: float) -> float:
        """Score, then learn: the reading is judged against the past only."""
        base = self.assets.setdefault(asset, _Baseline(self.fading))
        z = 0.0
        if base.count >= WARM_UP:
            z = abs(value - base.mean.get()) / max(math.sqrt(base.var.get()), 0.5)
        base.mean.update(value)
        base.var.update(value)
        base.count += 1
        return z

    def score(self, readings: list[Reading]) -> list[Any]:
        results = []
        for r in readings:
            z = self.z(r.asset, float(r.values["temperature"]))
            level = "alarm" if z >= ALARM_Z else "warning" if z >= WARNING_Z else "ok"
            results.append({"temperature_score": round(z, 3), "temperature_warning": level})
        return results


if __name__ == "__main__":
    serve(TemperatureAnomaly())
