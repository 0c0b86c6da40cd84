"""temperature-anomaly: the library's robust streaming detector (detectors.RobustDetector) on a
motor's temperature, one detector per asset, with the manifest's parameters (its defaults
unless set at import). Outputs `temperature_score` (absent while warming up) and
`temperature_warning` ("warming-up", "ok", "warning", "alarm")."""

from __future__ import annotations

from functools import partial
from typing import Any

from fogline.library.detectors import RobustDetector
from fogline.library.serving import DetectorModel
from fogline.sdk import parameters, serve


class TemperatureAnomaly(DetectorModel):
    def __init__(self, **settings: Any) -> None:
        make = partial(RobustDetector, **settings)
        super().__init__(make, "temperature", "temperature_score", "temperature_warning")


if __name__ == "__main__":
    serve(TemperatureAnomaly(**parameters()))
