"""Episode scoring and the NAB score on hand-made series (scoring.py)."""

import math
import random

import pytest

from fogline.library.evaluate import BASELINE, judge
from fogline.library.scoring import (
    RollingZBaseline,
    SeasonalZBaseline,
    episodes,
    score,
    sigma,
    windows_of,
)


def marks(n: int, *spans: tuple[int, int]) -> list[bool]:
    out = [False] * n
    for s, e in spans:
        for i in range(s, e):
            out[i] = True
    return out


def test_alarms_merge_into_episodes_across_short_gaps() -> None:
    alarms = marks(30, (2, 4), (6, 7), (20, 21))
    assert episodes(alarms) == [(2, 4), (6, 7), (20, 21)]
    assert episodes(alarms, merge_gap=3) == [(2, 7), (20, 21)]
    assert windows_of(marks(10, (3, 5))) == [(3, 5)]
    assert episodes([False] * 5) == []


def test_hits_false_alarms_and_delay() -> None:
    labels = marks(100, (10, 20), (50, 60), (80, 90))
    # one episode starting 3 readings into the first window, one in no window, the third
    # window reached only through the tolerance (2 readings after its end)
    alarms = marks(100, (13, 16), (30, 33), (91, 92))
    f = score(alarms, labels)
    assert (f.windows, f.hit, f.false_alarms, f.episodes) == (3, 1, 2, 3)
    assert f.delays == [3]
    f = score(alarms, labels, tolerance=2)
    assert (f.hit, f.false_alarms) == (2, 1)
    assert f.delays == [3, 11]  # from the window's start, in readings
    early = score(marks(100, (8, 9)), labels, tolerance=2)
    assert early.hit == 1 and early.delays == [-2] and early.false_alarms == 0


def test_nab_score_standard_profile() -> None:
    assert sigma(-1.0) == pytest.approx(2 / (1 + math.exp(-5)) - 1)
    assert sigma(0.0) == 0.0 and sigma(3.5) == -1.0
    labels = marks(100, (10, 20), (50, 60))
    perfect = score(marks(100, (10, 11), (50, 51)), labels)
    assert perfect.nab == pytest.approx(100.0, abs=1.0)  # first reading of a 10-reading window
    assert score([False] * 100, labels).nab == 0.0  # the null detector
    # one window found at its first reading, one missed, one early false alarm (-A_FP)
    f = score(marks(100, (2, 3), (10, 11)), labels)
    tp = 2 / (1 + math.exp(5 * (-9 / 10))) - 1
    assert f.nab_raw == pytest.approx(tp - 1.0 - 0.11)
    assert f.nab == pytest.approx(100 * (f.nab_raw + 2) / (2 * sigma(-1.0) + 2))
    # a false alarm right after a window costs less than one far from it
    near = score(marks(100, (10, 11), (21, 22)), marks(100, (10, 20)))
    far = score(marks(100, (10, 11), (90, 91)), marks(100, (10, 20)))
    assert near.nab > far.nab
    # a late detection earns less than an early one
    late = score(marks(100, (18, 19)), marks(100, (10, 20)))
    assert 0 < late.nab < perfect.nab


def test_rolling_baseline_is_silent_until_its_window_is_full() -> None:
    b = RollingZBaseline(window=50, threshold=3.0)
    values = [10.0 + (i % 5) * 0.1 for i in range(60)] + [20.0, 10.2]
    alarms = [b.alarm(v) for v in values]
    assert not any(alarms[:60]) and alarms[60] and not alarms[61]


def test_an_alarm_that_never_ends_is_false_outside_the_windows() -> None:
    """One long episode overlapping every window is not one true detection: its parts
    before, between and after the widened windows are false alarms, and its time in alarm
    and precision say what an operator lives with."""
    labels = marks(1000, (100, 150), (400, 450), (700, 750))
    f = score([True] * 1000, labels, merge_gap=6, tolerance=6)
    assert (f.windows, f.hit, f.episodes) == (3, 3, 1)
    assert f.false_alarms == 4  # before the first window, between them, after the last
    assert f.time_in_alarm == 1.0
    assert f.alarm_precision == pytest.approx(3 * 62 / 1000)
    # an episode overrunning a window by up to the tolerance is not false; one reading more is
    assert score(marks(1000, (100, 156)), labels, 6, 6).false_alarms == 0
    overrun = score(marks(1000, (100, 157)), labels, 6, 6)
    assert overrun.false_alarms == 1 and overrun.normal_alarms == 1
    quiet = score([False] * 1000, labels)
    assert quiet.time_in_alarm == 0.0 and quiet.alarm_precision == 1.0


def reviewer_cases(n: int) -> dict[str, list[bool]]:
    rng = random.Random(5)
    return {
        "always": [True] * n,
        "90%": [rng.random() < 0.9 for _ in range(n)],
        "every 5th": [i % 5 == 0 for i in range(n)],
    }


@pytest.mark.parametrize("case", ["always", "90%", "every 5th"])
def test_a_detector_always_in_alarm_does_not_beat_the_baseline(case: str) -> None:
    labels = marks(1000, (100, 150), (400, 450), (700, 750))
    # the baseline: two of the windows found, two short false alarms
    baseline = marks(1000, (105, 107), (300, 301), (410, 412), (900, 901))
    rows = {
        BASELINE: score(baseline, labels, 6, 6).as_dict(),
        case: score(reviewer_cases(1000)[case], labels, 6, 6).as_dict(),
    }
    assert rows[case]["hit"] == 3 > rows[BASELINE]["hit"]  # it overlaps every window
    judge(rows)
    verdict = rows[case]["vs_baseline"]
    assert "no fewer false alarms" in verdict and "lower alarm precision" in verdict, verdict
    assert rows[case]["time_in_alarm"] > 0.15


def test_the_seasonal_baseline_scores_each_phase_against_its_own_past() -> None:
    """Told the cycle (as the detectors are), the baseline compares a reading with the same
    phase of earlier cycles: a value usual at the peak is an alarm in the trough."""
    rng = random.Random(9)
    period = 200  # readings a cycle, one a second
    b = SeasonalZBaseline(window=400, period_ms=period * 1000, bins=10)
    values = [10 * math.sin(2 * math.pi * i / period) + rng.gauss(0, 0.5) for i in range(2000)]
    alarms = [b.alarm(v, i * 1000) for i, v in enumerate(values)]
    assert not any(alarms[:period])  # silent until each phase's window is full
    assert sum(alarms) < 20
    trough = 2000 + 3 * period // 4  # sin = -1 there; 10 is the peak's value
    assert b.alarm(10.0, trough * 1000)
    plain = RollingZBaseline(window=400)
    for v in values:
        plain.alarm(v)
    assert not plain.alarm(10.0)  # blind to the cycle: 10 is within 3 sigma of all phases
