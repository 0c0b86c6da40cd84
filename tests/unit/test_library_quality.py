"""The library's models, measured on held-out virtual-fleet faults (smaller runs than
`fogline library evaluate`, same code)."""

from fogline.library.evaluate import evaluate_motor_models, evaluate_temperature
from fogline.library.temperature_anomaly import TemperatureAnomaly
from fogline.sdk import Reading


def test_motor_models_find_the_injected_faults() -> None:
    figures = evaluate_motor_models(motors=6, duration_s=3 * 3600, seed=4242)
    failure = figures["motor-failure"]
    assert failure["positives"] > 100
    assert failure["recall"] >= 0.8 and failure["precision"] >= 0.45
    assert figures["motor-failure@0.9"]["precision"] >= 0.7
    assert figures["motor-anomaly"]["precision"] >= 0.6  # never saw a fault label


def test_temperature_anomaly_scores_against_its_own_past() -> None:
    model = TemperatureAnomaly()
    steady = [Reading("a", i, {"temperature": 60.0 + (i % 3) * 0.5}) for i in range(200)]
    assert all(o["temperature_warning"] == "ok" for o in model.score(steady))
    jump = model.score([Reading("a", 201, {"temperature": 95.0})])[0]
    assert jump["temperature_warning"] == "alarm" and jump["temperature_score"] > 4
    other = model.score([Reading("b", 1, {"temperature": 95.0})])[0]
    assert other["temperature_score"] == 0.0  # every asset has its own baseline
    figures = evaluate_temperature(motors=3, duration_s=3600, seed=9)
    assert figures["temperature-anomaly"]["samples"] == 3 * 3600
