"""The fault bench's accounting: published, acknowledged and stored readings compared one by
one, on synthetic records."""

from __future__ import annotations

import pytest

from fogline.bench.fault_ledger import SentMessage, account
from fogline.bench.faults import FaultBenchConfig
from fogline.domain.errors import InvalidInput

ASSETS = {"d1": ("a1", "a2"), "d2": ("b1",)}


def test_every_acknowledged_reading_stored_once_is_clean() -> None:
    sent = [SentMessage("d1", 10, True), SentMessage("d1", 11, True), SentMessage("d2", 10, True)]
    a = account(sent, ASSETS, {"a1": [10, 11], "a2": [10, 11], "b1": [10]}, counted_messages=3)
    assert (a.published, a.acknowledged, a.stored) == (5, 5, 5)
    assert (a.lost, a.duplicated, a.unacknowledged, a.foreign) == (0, 0, 0, 0)
    assert (a.stored_messages, a.counted_twice) == (3, 0)


def test_an_acknowledged_reading_missing_from_the_history_is_lost_and_named() -> None:
    sent = [SentMessage("d1", 10, True), SentMessage("d1", 11, True)]
    # a2@11 never stored: one reading of a message lost, the rest of it kept.
    a = account(sent, ASSETS, {"a1": [10, 11], "a2": [10]})
    assert (a.acknowledged, a.stored, a.lost) == (4, 3, 1)
    assert a.lost_examples == ["a2@11"]
    assert a.stored_messages == 2


def test_unacknowledged_readings_are_not_lost_stored_or_not() -> None:
    sent = [SentMessage("d1", 10, False), SentMessage("d2", 10, False), SentMessage("d2", 11, True)]
    # d1@10: PUBACK lost in the fault but stored; d2@10: never acknowledged, never stored.
    a = account(sent, ASSETS, {"a1": [10], "a2": [10], "b1": [11]})
    assert (a.published, a.acknowledged, a.lost) == (4, 1, 0)
    assert (a.unacknowledged, a.unacknowledged_stored, a.stored) == (3, 2, 3)


def test_readings_stored_twice_and_readings_nobody_sent_are_counted() -> None:
    sent = [SentMessage("d2", 10, True), SentMessage("d2", 11, True)]
    a = account(sent, ASSETS, {"b1": [10, 10, 10, 11, 99]})
    assert (a.stored, a.duplicated, a.foreign, a.lost) == (2, 2, 1, 0)


def test_counters_that_count_a_redelivery_again_show_as_counted_twice() -> None:
    sent = [SentMessage("d2", ts, True) for ts in range(5)]
    a = account(sent, ASSETS, {"b1": list(range(5))}, counted_messages=7)
    assert a.counted_twice == 2
    assert account(sent, ASSETS, {"b1": []}).counted_twice is None


def test_bad_settings_are_refused_with_every_problem_named() -> None:
    with pytest.raises(InvalidInput) as err:
        FaultBenchConfig(faults=("broker-kill", "meteor"), rate=0, headroom_mb=500).check()
    fields = {p.field for p in err.value.problems}
    assert fields == {"fault", "rate", "tmpfs-mb"}
    assert "meteor" in str(err.value)
