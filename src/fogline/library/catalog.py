"""The library's catalog: each entry's manifest. The model servers run from the installed
package (`python -m fogline.library.<module>`), so importing needs no upload."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fogline.domain.errors import NotFound, Problem
from fogline.library.detectors import (
    Detector,
    DiscordDetector,
    ForecastDetector,
    RobustDetector,
)

MOTOR_INPUTS = [
    {"dataColumnName": "vibration"},
    {"dataColumnName": "temperature"},
    {"dataColumnName": "current"},
    {"dataColumnName": "sound_level"},
]

# What both motor models were trained on (fogline.sim.motors): they know no other motor.
MOTOR_EXPECTS = (
    "vibration (mm/s), temperature (°C), current (A) and sound_level (dB) of one motor per "
    "asset, about one reading a second (30 s windows). Trained when it starts on the virtual "
    "fleet's simulated motor, not on yours: 12 A rated current (4.8-12 A running, 0 stopped), "
    "24 °C ambient, winding up to about 69 °C at full load (90 s thermal time constant), "
    "vibration 1-2.4 mm/s and sound 77-81 dB running. On a motor of another size, ambient or "
    "sensor scale its outputs are not calibrated (a larger motor's normal current looks like "
    "a phase imbalance, a hotter room like a cooling failure): run it over your history first "
    "(fogline model backfill) and compare with known faults, or use the streaming detectors, "
    "which learn each signal's own normal."
)


@dataclass(frozen=True)
class LibraryModel:
    name: str
    summary: str
    manifest: dict[str, Any]
    # Raises ValueError for values that together make no sense (a detector class: built with
    # them, as the model builds it at start).
    check: Callable[..., object] | None = None
    # What the model expects of its inputs beyond their names (`library show` prints it).
    expects: str = ""

    def parameter_problems(self, values: dict[str, Any]) -> list[Problem]:
        """What the parameters' types and bounds cannot say (e.g. discord's history must hold
        two subsequences), checked with every value as the model will get it, so a refusal
        comes at import and not as a crash loop."""
        if self.check is None:
            return []
        declared = self.manifest["manifest"].get("parameters") or {}
        effective = {name: spec["default"] for name, spec in declared.items()} | values
        try:
            self.check(**effective)
        except (ValueError, TypeError) as exc:
            return [Problem("parameters", str(exc))]
        return []


def _manifest(
    name: str,
    description: str,
    module: str,
    stateful: bool,
    trigger: dict[str, Any],
    inputs: list[dict[str, Any]],
    outputs: list[dict[str, Any]],
    memory_mb: int = 512,
    parameters: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    document = {
        "manifest": {
            "name": name,
            "version": "1.0.0",
            "description": description,
            "model": {
                "type": "http",
                "scoreEndpoint": "/score",
                "healthCheckEndpoint": "/health",
                "hosted": "internal",
                "stateful": stateful,
                "async": False,
                "local": {
                    "command": ["python", "-m", f"fogline.library.{module}"],
                    "limits": {"memoryMb": memory_mb, "cpus": 1},
                },
            },
            "trigger": trigger,
            "inputs": inputs,
            "outputs": outputs,
        }
    }
    if parameters:
        document["manifest"]["parameters"] = parameters
    return document


_MANIFEST_TYPES = {"int": "integer", "float": "number", "bool": "boolean"}


def detector_parameters(detector: type[Detector]) -> dict[str, dict[str, Any]]:
    """A detector's constructor parameters as a manifest's `parameters` section."""
    section: dict[str, dict[str, Any]] = {}
    for p in detector.PARAMETERS:
        spec: dict[str, Any] = {"type": _MANIFEST_TYPES[p.type], "default": p.default}
        if p.minimum is not None:
            spec["minimum"] = p.minimum
        if p.maximum is not None:
            spec["maximum"] = p.maximum
        spec["description"] = p.trades
        section[p.name] = spec
    return section


# The motor models' settings (fogline.library.motor_models reads them at start).
MOTOR_ANOMALY_PARAMETERS: dict[str, dict[str, Any]] = {
    "contamination": {
        "type": "number",
        "default": 0.01,
        "minimum": 0.0001,
        "maximum": 0.5,
        "description": "share of the healthy training windows the forest counts as outliers: "
        "higher flags more windows (more faults found, more false alarms)",
    },
    "trees": {
        "type": "integer",
        "default": 200,
        "minimum": 10,
        "maximum": 2000,
        "description": "trees in the isolation forest: more = a steadier score, a slower start",
    },
}
MOTOR_FAILURE_PARAMETERS: dict[str, dict[str, Any]] = {
    "warning_probability": {
        "type": "number",
        "default": 0.5,
        "minimum": 0.01,
        "maximum": 0.99,
        "description": "fault probability from which a window is a warning: lower finds more "
        "faults (recall 0.94 at 0.5 on held-out motors) with more false warnings",
    },
    "alarm_probability": {
        "type": "number",
        "default": 0.9,
        "minimum": 0.01,
        "maximum": 0.99,
        "description": "fault probability from which a window is an alarm (precision 0.86 "
        "at 0.9 on held-out motors)",
    },
}


def _motor_failure_check(warning_probability: float, alarm_probability: float) -> None:
    if warning_probability > alarm_probability:
        raise ValueError(
            f"warning_probability ({warning_probability}) must not be above "
            f"alarm_probability ({alarm_probability})"
        )


# Streaming detectors of any numeric signal (detectors.py): map `value` to the telemetry.
DETECTORS: list[tuple[str, str, str, type[Detector]]] = [
    (
        "robust-anomaly",
        "rolling (or per-phase) median residual, thresholds from its own quantile band",
        "Robust streaming anomaly detector for any numeric signal (median and quantiles)",
        RobustDetector,
    ),
    (
        "forecast-anomaly",
        "Holt-Winters one-step forecast residual (river), calibrated quantile band",
        "Forecasting-residual anomaly detector for any numeric signal",
        ForecastDetector,
    ),
    (
        "discord-anomaly",
        "subsequence discords: distance of the newest shape to its nearest past one",
        "Detects shapes never seen before in any numeric signal (left matrix profile)",
        DiscordDetector,
    ),
]

# 30 s windows every 5 s on the readings' own times; a reading up to 10 s out of order still
# counts, and a motor that goes quiet has its last windows scored 15 s later.
WINDOW = {
    "type": "TIME_WINDOW",
    "frequency": 5000,
    "timeWindowSize": 30000,
    "allowedLateness": 10000,
    "idleTimeout": 15000,
}

CATALOG = {
    m.name: m
    for m in [
        LibraryModel(
            "temperature-anomaly",
            "robust streaming detector (rolling median, calibrated quantile band) on temperature",
            _manifest(
                "temperature-anomaly",
                "Detects anomalies in temperature values with robust streaming statistics",
                "temperature_anomaly",
                True,
                {"type": "REAL_TIME"},
                [{"dataColumnName": "temperature"}],
                [
                    {"dataColumnName": "temperature_score"},
                    {"dataColumnName": "temperature_warning", "readAsString": True},
                ],
                parameters=detector_parameters(RobustDetector),
            ),
            RobustDetector,
        ),
        *(
            LibraryModel(
                name,
                summary,
                _manifest(
                    name,
                    description,
                    name.replace("-", "_"),
                    True,
                    {"type": "REAL_TIME"},
                    [{"dataColumnName": "value"}],
                    [
                        {"dataColumnName": "value_score"},
                        {"dataColumnName": "value_level", "readAsString": True},
                    ],
                    parameters=detector_parameters(detector),
                ),
                detector,
            )
            for name, summary, description, detector in DETECTORS
        ),
        LibraryModel(
            "motor-anomaly",
            "isolation forest over 30 s windows of motor telemetry (scikit-learn), trained on "
            "the simulator's motor, not yours",
            _manifest(
                "motor-anomaly",
                "Multivariate anomaly detector for induction motors",
                "motor_anomaly",
                False,
                WINDOW,
                MOTOR_INPUTS,
                [
                    {"dataColumnName": "anomaly_score"},
                    {"dataColumnName": "anomaly_warning", "readAsString": True},
                ],
                memory_mb=1536,
                parameters=MOTOR_ANOMALY_PARAMETERS,
            ),
            expects=MOTOR_EXPECTS,
        ),
        LibraryModel(
            "motor-failure",
            "logistic regression on windowed features, trained on the simulator's motor "
            "(12 A rated, 24 °C ambient) and its faults, not on yours",
            _manifest(
                "motor-failure",
                "Predicts motor faults (bearing wear, cooling failure, phase imbalance) of the "
                "virtual fleet's simulated motor (12 A rated, 24 °C ambient); trained on it, not "
                "on yours: check it on your history (fogline model backfill) before trusting it",
                "motor_failure",
                False,
                WINDOW,
                MOTOR_INPUTS,
                [
                    {"dataColumnName": "failure_probability"},
                    {"dataColumnName": "failure_warning", "readAsString": True},
                ],
                memory_mb=1536,
                parameters=MOTOR_FAILURE_PARAMETERS,
            ),
            _motor_failure_check,
            MOTOR_EXPECTS,
        ),
    ]
}


def library_model(name: str) -> LibraryModel:
    try:
        return CATALOG[name]
    except KeyError:
        raise NotFound(
            f"the library has no model {name!r}; it has: {', '.join(sorted(CATALOG))}"
        ) from None
