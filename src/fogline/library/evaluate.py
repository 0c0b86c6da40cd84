"""Measured quality of the library's models on the virtual fleet's labelled faults (held-out
motors and seeds, never the training ones). `fogline library evaluate` prints these."""

from __future__ import annotations

import random
from typing import Any

from fogline.library.motor_models import TRAINING, MotorAnomaly, MotorFailure
from fogline.library.motors import precision_recall, simulate
from fogline.library.temperature_anomaly import WARNING_Z, TemperatureAnomaly
from fogline.sim.motors import Fault, Motor


def evaluate_motor_models(
    motors: int = 10, duration_s: int = 4 * 3600, seed: int = 1001
) -> dict[str, Any]:
    train = simulate(**TRAINING)
    test = simulate(motors=motors, duration_s=duration_s, seed=seed)
    actual = [w.fault is not None for w in test]
    rows = [w.features for w in test]
    anomaly = MotorAnomaly(train).anomalous(rows)
    probabilities = MotorFailure(train).probabilities(rows)
    return {
        "motor-anomaly": precision_recall(anomaly, actual),
        "motor-failure": precision_recall([p >= 0.5 for p in probabilities], actual),
        "motor-failure@0.9": precision_recall([p >= 0.9 for p in probabilities], actual),
    }


def evaluate_temperature(
    motors: int = 10, duration_s: int = 4 * 3600, seed: int = 2001
) -> dict[str, Any]:
    """Per reading, against cooling failures of a running motor (the only fault that shows in
    temperature); a reading counts as found when the warning fires within the episode."""
    model = TemperatureAnomaly()
    predicted: list[bool] = []
    actual: list[bool] = []
    for m in range(motors):
        motor = Motor(f"t{m}", random.Random(seed * 1000 + m), 1 / 900)
        for t in range(duration_s):
            reading = motor.step(1.0, t * 1000)
            z = model.z(motor.asset, reading["temperature"])
            predicted.append(z >= WARNING_Z)
            actual.append(motor.fault is Fault.COOLING_FAILURE and motor.running)
    return {"temperature-anomaly": precision_recall(predicted, actual)}


def evaluate_all() -> dict[str, Any]:
    return {**evaluate_temperature(), **evaluate_motor_models()}
