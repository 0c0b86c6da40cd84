"""A detector served as a library model: one detector per asset, fed reading by reading.

Outputs per reading: `<column>_score` (left out while the detector warms up: no misleading
0.0) and `<column>_level` ("warming-up", "ok", "warning" or "alarm"); a reading without a
number in the column (or a non-finite one: NaN, infinity) gets level "no-value" and no
score, and is not learned."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from fogline.library.detectors import Detector
from fogline.sdk import Model, Reading


class DetectorModel(Model):
    def __init__(
        self,
        make: Callable[[], Detector],
        column: str = "value",
        score_column: str | None = None,
        level_column: str | None = None,
    ) -> None:
        self.make = make
        self.column = column
        self.score_column = score_column or f"{column}_score"
        self.level_column = level_column or f"{column}_level"
        self.assets: dict[str, Detector] = {}

    def score(self, readings: list[Reading]) -> list[Any]:
        results: list[Any] = []
        for r in readings:
            value = r.values.get(self.column)
            if isinstance(value, bool) or not isinstance(value, int | float):
                results.append({self.level_column: "no-value"})
                continue
            detector = self.assets.get(r.asset)
            if detector is None:
                detector = self.assets[r.asset] = self.make()
            try:
                number = float(value)
            except OverflowError:  # an int beyond a float: not a reading a sensor makes
                number = math.nan
            d = detector.update(number, r.ts)
            out: dict[str, Any] = {self.level_column: d.level}
            if d.score is not None:
                out[self.score_column] = round(d.score, 3)
            results.append(out)
        return results
