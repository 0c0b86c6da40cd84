"""The streaming detectors: warm-up stated, per-asset state, calibrated levels, parameters."""

import inspect
import math
import random

import pytest

from fogline.library.detectors import (
    LEVELS,
    NO_VALUE,
    SCORE_CAP,
    Detection,
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
    for bad in (math.nan, math.inf, 10**400):
        assert model.score([Reading("a", 3, {"temperature": bad})])[0] == {
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


def levels(d: Detector, values: list[float]) -> list[Detection]:
    return [d.update(v, i * 1000) for i, v in enumerate(values)]


@pytest.mark.parametrize("cls", CLASSES)
def test_a_flat_start_does_not_make_an_alarm_that_never_ends(cls: type[Detector]) -> None:
    """A signal flat for the whole calibration has a band of zero width: without a floor
    every later step, however small, scored 1e8 and was an alarm for ever."""
    flat_then_alternating = [10.0] * 60 + [9.9 if i % 2 else 10.1 for i in range(3000)]
    out = levels(cls(), flat_then_alternating)
    scored = [o.score for o in out if o.score is not None]
    assert scored and max(scored) < 2.0
    assert not any(o.level == "alarm" for o in out)
    # a quantised sensor (steps of 0.1) after a long flat start: no alarm on every step
    rng = random.Random(1)
    quantised = [10.0] * 1500 + [10.0 + 0.1 * rng.choice((-1, 0, 1)) for _ in range(3000)]
    out = levels(cls(), quantised)
    alarms = [o.level == "alarm" for o in out[1500:]]
    assert sum(alarms) <= 0.15 * len(alarms) and not any(alarms[-1500:])
    # a real step on the flat signal is still an alarm
    step = levels(cls(), [10.0] * 1500 + [12.0] * 100)
    assert any(o.level == "alarm" for o in step[1500:])


def test_a_band_that_proved_too_narrow_widens() -> None:
    """Near zero the relative floor is no help: a lasting non-ok state is learned once more
    than half of the last `accept` readings were non-ok (the new normal), not alarmed for
    ever."""
    d = RobustDetector(window=200, warm_up=100, calibration=400, accept=200)
    out = levels(d, [0.0] * 500 + [0.1 if i % 2 else -0.1 for i in range(2000)])
    alarms = [i for i, o in enumerate(out) if o.level == "alarm"]
    assert alarms and alarms[0] >= 500
    assert alarms[-1] < 500 + 200  # about accept / 2 readings, plus the band's quantile
    assert all(o.level == "ok" for o in out[-1000:])
    with pytest.raises(ValueError, match="resolution"):
        RobustDetector(resolution=-1.0)
    # with the sensor's resolution given, its steps are never alarms
    d = RobustDetector(window=200, warm_up=100, calibration=400, resolution=0.1)
    out = levels(d, [0.0] * 500 + [0.1 if i % 2 else -0.1 for i in range(2000)])
    assert not any(o.level == "alarm" for o in out)


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("glitch", [65535.0, 1e308])
def test_one_glitch_does_not_poison_the_detector(cls: type[Detector], glitch: float) -> None:
    """2,500 readings N(50, 1), one glitch, then normal again: the glitch is an alarm with a
    finite score, and what follows is judged as before it (the forecaster used to learn the
    glitch: 548 non-ok readings after 65535, alarms with infinite scores after 1e308)."""
    rng = random.Random(2)
    values = [rng.gauss(50, 1) for _ in range(2500)] + [glitch]
    values += [rng.gauss(50, 1) for _ in range(2900)]
    out = levels(cls(), values)
    assert out[2500].level == "alarm" and out[2500].score == SCORE_CAP
    after = out[2501:]
    assert all(o.score is not None and math.isfinite(o.score) for o in after)
    # the discord's subsequences hold the glitch for m readings (60 by default)
    allowed = 30 + (60 if cls is DiscordDetector else 0)
    assert sum(o.level != "ok" for o in after) <= allowed


@pytest.mark.parametrize("cls", CLASSES)
def test_a_reading_that_is_not_a_number_is_not_scored_nor_learned(cls: type[Detector]) -> None:
    rng = random.Random(4)
    d = cls()
    levels(d, [rng.gauss(50, 1) for _ in range(2000)])
    for bad in (math.nan, math.inf, -math.inf):
        assert d.update(bad, 2_000_000) == Detection(None, NO_VALUE)
    after = [d.update(rng.gauss(50, 1), (2001 + i) * 1000) for i in range(200)]
    assert all(o.score is not None and o.level != "alarm" for o in after[:5])


def test_a_discord_alarms_once_then_warns_until_it_clears() -> None:
    """A lasting anomaly (the signal 15 higher for 80 readings, m = 20): one alarm of at most
    m // 4 readings at its onset, then warnings while the subsequences still hold the step
    (the score unchanged); once the score has fallen below the warning level (the plateau has
    become its own neighbour), the step back down is a new discord and alarms again."""
    d = DiscordDetector(m=20, history=400, calibration=400, warm_up=100)
    values = noisy_cycle(1400, seed=11)
    values[1200:1280] = [v + 15 for v in values[1200:1280]]
    out = [d.update(v, i * 60_000) for i, v in enumerate(values)]
    assert sum(o.level == "alarm" for o in out[:1200]) <= 3
    onset = [i for i in range(1200, 1280) if out[i].level == "alarm"]
    assert onset and len(onset) <= 20 // 4 and onset[-1] - onset[0] < 20 // 4, onset
    held = out[onset[-1] + 1 : 1280]
    still = [o for o in held if o.score is not None and o.score >= d.calibrator.alarm]
    assert len(still) > 10 and all(o.level == "warning" for o in still)  # said, not alarmed
    assert any(o.level == "ok" for o in held)  # cleared: re-armed
    assert any(o.level == "alarm" for o in out[1280:1290])  # the step down: a new discord


def test_a_signal_far_from_zero_is_watched_as_closely_as_one_near_it_when_told() -> None:
    """1% of a level of 1000 is 10: with noise of 1 the default floor hides a 10-sigma shift;
    relative_resolution=0 lets the data set the band, as it does near zero."""
    rng = random.Random(5)

    def alarms(level: float, **settings: float) -> int:
        d = RobustDetector(window=200, warm_up=100, calibration=500, **settings)
        for i in range(1500):
            d.update(level + rng.gauss(0, 1), i * 5000)
        shifted = [d.update(level + 10 + rng.gauss(0, 1), (1500 + i) * 5000) for i in range(30)]
        return sum(x.level == "alarm" for x in shifted)

    assert alarms(0.0) >= 20
    assert alarms(1000.0) == 0  # the default 1% floor: documented in the parameter's text
    assert alarms(1000.0, relative_resolution=0.0) >= 20
