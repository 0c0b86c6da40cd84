"""discord-anomaly: detectors.DiscordDetector, its defaults, on the input column `value`
(map it to any numeric telemetry), one per asset; outputs `value_score`, `value_level`."""

from fogline.library.detectors import DiscordDetector
from fogline.library.serving import DetectorModel
from fogline.sdk import serve

if __name__ == "__main__":
    serve(DetectorModel(DiscordDetector))
