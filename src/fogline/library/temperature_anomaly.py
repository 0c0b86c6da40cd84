"""temperature-anomaly: the library's robust streaming detector (detectors.RobustDetector, its
defaults) on a motor's temperature, one detector per asset. Outputs `temperature_score`
(absent while warming up) and `temperature_warning` ("warming-up", "ok", "warning",
"alarm")."""

from __future__ import annotations

from fogline.library.detectors import Detector, RobustDetector
from fogline.library.serving import DetectorModel
from fogline.sdk import serve


class TemperatureAnomaly(DetectorModel):
    @staticmethod
    def detector() -> Detector:
        return RobustDetector()

    def __init__(self) -> None:
        super().__init__(self.detector, "temperature", "temperature_score", "temperature_warning")


if __name__ == "__main__":
    serve(TemperatureAnomaly())
