"""Event-time windows: out of order within the lateness, late past it, sliding overlap, idle
close, per-asset streams, merging readings at one ts."""

from __future__ import annotations

from typing import Any

import pytest

from fogline.models.windows import ClosedWindow, EventWindows


def r(ts: int, value: float = 1.0, asset: str = "a") -> dict[str, Any]:
    return {"asset": asset, "ts": ts, "values": {"x": value}}


def spans(closed: list[ClosedWindow]) -> list[tuple[str, int, int, list[int]]]:
    return [(w.asset, w.start, w.end, [x["ts"] for x in w.readings]) for w in closed]


def feed(w: EventWindows, readings: list[dict[str, Any]], now: float = 0.0) -> list[ClosedWindow]:
    closed: list[ClosedWindow] = []
    for reading in readings:
        closed += w.add(reading, now)[1]
    return closed


def test_tumbling_out_of_order_within_the_lateness_lands_in_its_window() -> None:
    w = EventWindows(size_ms=1000, hop_ms=1000, lateness_ms=500, idle_ms=10_000)
    closed = feed(w, [r(100), r(900), r(1200), r(700), r(1499)])
    assert closed == []  # watermark 999: the window [0, 1000) ends at 1000
    closed = feed(w, [r(1500), r(300)])  # watermark 1000 closes [0, 1000); 300 is then late
    assert spans(closed) == [("a", 0, 1000, [100, 700, 900])]
    added, _ = w.add(r(300), 0.0)
    assert added.late and added.windows == 0
    assert w.held_memberships == 3  # 1200, 1499, 1500 in [1000, 2000)


def test_late_is_reported_and_the_same_stream_replayed_in_any_order_gives_the_same_windows() -> (
    None
):
    times = [0, 250, 500, 750, 1000, 1250, 1500, 1750, 2000, 2250, 5000]

    def windows_of(order: list[int]) -> list[tuple[str, int, int, list[int]]]:
        w = EventWindows(1000, 1000, lateness_ms=2000, idle_ms=10_000)
        return spans(feed(w, [r(t) for t in order]) + w.flush())

    shuffled = [750, 0, 1250, 250, 2000, 500, 1750, 1000, 2250, 1500, 5000]
    assert windows_of(times) == windows_of(shuffled)
    assert windows_of(times)[0] == ("a", 0, 1000, [0, 250, 500, 750])


def test_sliding_windows_overlap() -> None:
    w = EventWindows(size_ms=1000, hop_ms=500, lateness_ms=0, idle_ms=10_000)
    assert w.starts_of(700) == [0, 500]
    assert w.starts_of(500) == [0, 500]
    assert w.starts_of(499) == [-500, 0]
    closed = feed(w, [r(100), r(600), r(1100), r(2000)])
    assert spans(closed) == [
        ("a", -500, 500, [100]),
        ("a", 0, 1000, [100, 600]),
        ("a", 500, 1500, [600, 1100]),
        ("a", 1000, 2000, [1100]),
    ]


def test_sliding_late_for_some_windows_lands_in_the_others() -> None:
    w = EventWindows(size_ms=1000, hop_ms=500, lateness_ms=0, idle_ms=10_000)
    feed(w, [r(100), r(1000)])  # watermark 1000: [-500, 500) and [0, 1000) closed
    added, _ = w.add(r(600), 0.0)  # in [0, 1000) (closed) and [500, 1500) (open)
    assert (added.windows, added.missed, added.late) == (1, 1, False)
    assert spans(w.flush()) == [("a", 500, 1500, [600, 1000]), ("a", 1000, 2000, [1000])]


def test_a_stateful_model_gets_each_reading_once() -> None:
    w = EventWindows(size_ms=1000, hop_ms=250, lateness_ms=0, idle_ms=10_000, each_once=True)
    closed = feed(w, [r(t) for t in (0, 100, 300, 600, 900, 1300, 3000)])
    seen = [ts for win in closed + w.flush() for ts in [x["ts"] for x in win.readings]]
    assert seen == [0, 100, 300, 600, 900, 1300, 3000]


def test_an_idle_stream_closes_its_windows_after_the_quiet_period() -> None:
    w = EventWindows(size_ms=1000, hop_ms=1000, lateness_ms=5000, idle_ms=2000)
    feed(w, [r(100), r(1100)], now=10.0)
    assert w.idle(11.9) == []
    closed = w.idle(12.0)
    assert spans(closed) == [("a", 0, 1000, [100]), ("a", 1000, 2000, [1100])]
    assert w.held_memberships == 0 and w.open_windows() == 0
    added, _ = w.add(r(1500), 20.0)  # its window closed on the idle timeout: late
    assert added.late
    added, _ = w.add(r(2100), 20.0)  # a new window
    assert added.windows == 1 and not added.late


def test_assets_are_streams_of_their_own() -> None:
    w = EventWindows(size_ms=1000, hop_ms=1000, lateness_ms=0, idle_ms=10_000)
    # b's clock is an hour behind a's: b's readings are not late for a's watermark.
    closed = feed(w, [r(3_600_100, asset="a"), r(100, asset="b"), r(3_601_000, asset="a")])
    assert spans(closed) == [("a", 3_600_000, 3_601_000, [3_600_100])]
    closed = feed(w, [r(200, asset="b"), r(1000, asset="b")])
    assert spans(closed) == [("b", 0, 1000, [100, 200])]


def test_readings_of_one_asset_at_one_ts_merge() -> None:
    w = EventWindows(size_ms=1000, hop_ms=1000, lateness_ms=0, idle_ms=10_000)
    w.add({"asset": "a", "ts": 100, "values": {"x": 1.0}}, 0.0)
    added, _ = w.add({"asset": "a", "ts": 100, "values": {"y": 2.0}}, 0.0)
    assert added.merged and added.windows == 0
    [window] = w.flush()
    assert window.readings == [{"asset": "a", "ts": 100, "values": {"x": 1.0, "y": 2.0}}]


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        EventWindows(size_ms=1000, hop_ms=2000, lateness_ms=0, idle_ms=1)
