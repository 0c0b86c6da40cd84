"""forecast-anomaly: detectors.ForecastDetector, its defaults, on the input column `value`
(map it to any numeric telemetry), one per asset; outputs `value_score`, `value_level`."""

from fogline.library.detectors import ForecastDetector
from fogline.library.serving import DetectorModel
from fogline.sdk import serve

if __name__ == "__main__":
    serve(DetectorModel(ForecastDetector))
