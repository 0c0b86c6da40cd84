"""The streaming detectors: warm-up stated, per-asset state, calibrated levels, parameters."""

import inspect
import math
import random

import pytest

from fogline.library.detectors import (
    LEVELS,
    Detector,
    DiscordDetector,
    ForecastDetector,
    RobustDetector,
    parameters_of,
)
from fogline.library.temperature_anomaly import TemperatureAnomaly
from fogline.sdk import Reading

CLASSES = [RobustDetector, ForecastDetector, DiscordDetector]


@pytest.mark.parametrize("cls", CLASSES)
def test_parameters_describe_the_constructor(cls: type[Detector]) -> None:
    signature = inspect.signature(cls.__init__)
    described = {p["name"]: p for p in parameters_of(cls)}
    for name, p in described.items():
        assert signature.parameters[name].default == p["default"], name
        assert p["trades"] and p["type"] in ("int", "float", "bool")
        if p["minimum"] is not None and p["default"] is not None:
            assert p["minimum"] <= p["default"] <= p["maximum"], name


def noisy_cycle(n: int, seed: int = 7) -> list[float]:
    rng = random.Random(seed)
    return [50 + 5 * math.sin(2 * math.pi * i / 200) + rng.gauss(0, 0.3) for i in range(n)]


@pytest.mark.parametrize(
    "make",
    [
        lambda: RobustDetector(window=200, calibration=400, warm_up=100),
        lambda: ForecastDetector(season=200, calibration=400, warm_up=100),
        lambda: DiscordDetector(m=20, history=400, calibration=400, warm_up=100),
    ],
)
def test_warms_up_then_scores_and_alarms_on_a_jump(make: object) -> None:
    assert callable(make)
    d: Detector = make()
    values = noisy_cycle(1200)
    out = [d.update(v, i * 60_000) for i, v in enumerate(values)]
    assert out[0].score is None and out[0].level == "warming-up"
    scored = [o for o in out if o.score is not None]
    assert len(scored) > 500 and all(o.level in LEVELS[1:] for o in scored)
    first = next(i for i, o in enumerate(out) if o.score is not None)
    assert all(o.score is None for o in out[:first])
    # calibrated: the steady signal after warm-up raises (almost) nothing
    assert sum(o.level == "alarm" for o in out[first:]) <= 3
    jump = [d.update(v + 15, (1200 + i) * 60_000) for i, v in enumerate(noisy_cycle(20, 8))]
    assert any(o.level == "alarm" for o in jump)


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="quantile"):
        RobustDetector(quantile=1.5)
    with pytest.raises(ValueError, match="warning <= alarm"):
        ForecastDetector(warning=3, alarm=2)
    with pytest.raises(ValueError, match="history"):
        DiscordDetector(m=100, history=150)


def test_temperature_anomaly_says_it_is_warming_up_then_scores_per_asset() -> None:
    model = TemperatureAnomaly()
    first = model.score([Reading("a", 0, {"temperature": 60.0})])[0]
    assert first == {"temperature_warning": "warming-up"}  # no score rather than 0.0
    steady = [
        Reading("a", i * 1000, {"temperature": 60.0 + (i % 7) * 0.3 + (i % 3) * 0.1})
        for i in range(1, 1200)
    ]
    out = model.score(steady)
    assert {o["temperature_warning"] for o in out[-300:]} <= {"ok", "warning"}
    assert all("temperature_score" in o for o in out[-300:])
    jump = model.score([Reading("a", 1_300_000, {"temperature": 95.0})])[0]
    assert jump["temperature_warning"] == "alarm" and jump["temperature_score"] > 1.6
    other = model.score([Reading("b", 1, {"temperature": 95.0})])[0]
    assert other == {"temperature_warning": "warming-up"}  # every asset has its own state
    assert model.score([Reading("a", 2, {"temperature": "ERR"})])[0] == {
        "temperature_warning": "no-value"
    }


def test_forecast_finds_a_slow_ramp_by_its_level_residual() -> None:
    """A forecaster with a trend follows a slow ramp (its one-step residual stays within the
    noise); the residual from the slow level does not."""
    rng = random.Random(3)
    steady = [50 + rng.gauss(0, 0.3) for _ in range(1000)]
    ramp = [50 + 0.05 * i + rng.gauss(0, 0.3) for i in range(1, 201)]
    levels: dict[float, list[str]] = {}
    for level_alpha in (0.0, 0.01):
        d = ForecastDetector(level_alpha=level_alpha, calibration=500, warm_up=100)
        for i, v in enumerate(steady):
            d.update(v, i * 5000)
        levels[level_alpha] = [d.update(v, (1000 + i) * 5000).level for i, v in enumerate(ramp)]
    assert levels[0.0].count("alarm") <= 2  # the one-step residual alone misses it
    assert levels[0.01].count("alarm") > 50
    with pytest.raises(ValueError, match="level_alpha"):
        ForecastDetector(level_alpha=-0.1)
