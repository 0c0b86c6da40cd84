"""The library's models, measured: the motor models on held-out virtual-fleet faults (smaller
runs than `fogline library evaluate`, same code), and every anomaly detector against the
rolling z-score baseline on the same series (the same runs as `fogline library evaluate`)."""

from typing import Any

import pytest

from fogline.library.evaluate import (
    BASELINE,
    evaluate_motor_models,
    fleet_set,
    gutentag_set,
    run_set,
)


def test_motor_models_find_the_injected_faults() -> None:
    figures = evaluate_motor_models(motors=6, duration_s=3 * 3600, seed=4242)
    failure = figures["motor-failure"]
    assert failure["positives"] > 100
    assert failure["recall"] >= 0.8 and failure["precision"] >= 0.45
    assert figures["motor-failure@0.9"]["precision"] >= 0.7
    assert figures["motor-anomaly"]["precision"] >= 0.6  # never saw a fault label


@pytest.fixture(scope="module")
def gutentag() -> dict[str, Any]:
    return run_set(gutentag_set())


@pytest.fixture(scope="module")
def fleet() -> dict[str, Any]:
    return run_set(fleet_set())


def beats_baseline(result: dict[str, Any], detector: str) -> None:
    """The issue's target: at least the baseline's hits, fewer false-alarm episodes (none
    where the baseline has none; the parts of an episode outside the widened windows count),
    and an alarm precision by readings at least the baseline's (so that a detector in alarm
    for long stretches loses)."""
    rows = result["detectors"]
    row, base = rows[detector], rows[BASELINE]
    assert row["windows"] == base["windows"] > 0
    assert row["hit"] >= base["hit"], (detector, row, base)
    if base["false_alarm_episodes"]:
        assert row["false_alarm_episodes"] < base["false_alarm_episodes"], (detector, row, base)
    else:
        assert row["false_alarm_episodes"] == 0, (detector, row, base)
    assert row["alarm_precision"] is not None and base["alarm_precision"] is not None
    assert row["alarm_precision"] >= base["alarm_precision"], (detector, row, base)
    assert row["vs_baseline"] == "beats baseline"


@pytest.mark.parametrize("detector", ["robust-anomaly", "forecast-anomaly", "discord-anomaly"])
def test_detectors_beat_the_baseline_on_gutentag_series(
    gutentag: dict[str, Any], detector: str
) -> None:
    assert gutentag["detectors"][BASELINE]["windows"] == 12
    beats_baseline(gutentag, detector)


FLEET_DETECTORS = ["temperature-anomaly", "robust-anomaly", "forecast-anomaly", "discord-anomaly"]


@pytest.mark.parametrize("detector", FLEET_DETECTORS)
def test_detectors_beat_the_baseline_on_the_virtual_fleet(
    fleet: dict[str, Any], detector: str
) -> None:
    beats_baseline(fleet, detector)


def test_discord_alarms_once_per_discord_on_the_virtual_fleet(fleet: dict[str, Any]) -> None:
    """A motor stays hot for a few thermal time constants (90 s) after a cooling failure,
    so the discord's subsequences stay unlike the past after the window has ended; while each
    of them alarmed, discord-anomaly lost on this seed (12 hits, 12 false-alarm episodes,
    precision 0.602 vs the baseline's 10, 8, 0.780). One alarm per discord (at most m // 4
    readings, then warnings until the score clears) keeps the hits and drops the overruns."""
    row, base = fleet["detectors"]["discord-anomaly"], fleet["detectors"][BASELINE]
    assert row["hit"] >= 12 > base["hit"]
    assert row["false_alarm_episodes"] <= 3 < base["false_alarm_episodes"]
    assert row["alarm_precision"] >= 0.85 > base["alarm_precision"]


@pytest.fixture(scope="module")
def held_out_fleet() -> dict[str, Any]:
    return run_set(fleet_set(seed=7007))  # a seed not used when the defaults were chosen


@pytest.mark.parametrize("detector", FLEET_DETECTORS)
def test_detectors_beat_the_baseline_on_a_held_out_fleet(
    held_out_fleet: dict[str, Any], detector: str
) -> None:
    beats_baseline(held_out_fleet, detector)


def test_a_loss_is_stated(fleet: dict[str, Any]) -> None:
    """The set totals hide motors where a detector loses; the verdict per series says how."""
    t9 = fleet["series"]["t9"]
    assert t9["robust-anomaly"]["hit"] < t9[BASELINE]["hit"]
    assert t9["robust-anomaly"]["vs_baseline"].startswith("hits fewer windows")
    t4 = fleet["series"]["t4"]
    assert t4["forecast-anomaly"]["false_alarm_episodes"] > t4[BASELINE]["false_alarm_episodes"]
    assert t4["forecast-anomaly"]["vs_baseline"].startswith("no fewer false alarms")
