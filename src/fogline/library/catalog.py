"""The library's catalog: each entry's manifest. The model servers run from the installed
package (`python -m fogline.library.<module>`), so importing needs no upload."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fogline.domain.errors import NotFound

MOTOR_INPUTS = [
    {"dataColumnName": "vibration"},
    {"dataColumnName": "temperature"},
    {"dataColumnName": "current"},
    {"dataColumnName": "sound_level"},
]


@dataclass(frozen=True)
class LibraryModel:
    name: str
    summary: str
    manifest: dict[str, Any]


def _manifest(
    name: str,
    description: str,
    module: str,
    stateful: bool,
    trigger: dict[str, Any],
    inputs: list[dict[str, Any]],
    outputs: list[dict[str, Any]],
    memory_mb: int = 512,
) -> dict[str, Any]:
    return {
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
            "stateful streaming z-score of temperature per asset (river)",
            _manifest(
                "temperature-anomaly",
                "Detects anomalies in temperature values with streaming statistics",
                "temperature_anomaly",
                True,
                {"type": "REAL_TIME"},
                [{"dataColumnName": "temperature"}],
                [
                    {"dataColumnName": "temperature_score"},
                    {"dataColumnName": "temperature_warning", "readAsString": True},
                ],
            ),
        ),
        LibraryModel(
            "motor-anomaly",
            "isolation forest over 30 s windows of motor telemetry (scikit-learn)",
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
            ),
        ),
        LibraryModel(
            "motor-failure",
            "logistic regression on windowed features, trained on the virtual fleet's faults",
            _manifest(
                "motor-failure",
                "Predicts motor faults (bearing wear, cooling failure, phase imbalance)",
                "motor_failure",
                False,
                WINDOW,
                MOTOR_INPUTS,
                [
                    {"dataColumnName": "failure_probability"},
                    {"dataColumnName": "failure_warning", "readAsString": True},
                ],
                memory_mb=1536,
            ),
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
