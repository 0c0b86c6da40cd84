"""robust-anomaly: detectors.RobustDetector with the manifest's parameters, on the input
column `value` (map it to any numeric telemetry), one per asset;
outputs `value_score`, `value_level`."""

from functools import partial

from fogline.library.detectors import RobustDetector
from fogline.library.serving import DetectorModel
from fogline.sdk import parameters, serve

if __name__ == "__main__":
    serve(DetectorModel(partial(RobustDetector, **parameters())))
