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
    assert w.held_readings == 3  # 1200, 1499, 1500 in [1000, 2000)


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
    ]  # [1000, 2000) holds only 1100, scored already in [500, 1500): not emitted
    assert [x.new for x in closed] == [1, 1, 1] and w.covered_windows == 1


def test_sliding_late_for_some_windows_lands_in_the_others() -> None:
    w = EventWindows(size_ms=1000, hop_ms=500, lateness_ms=0, idle_ms=10_000)
    feed(w, [r(100), r(1000)])  # watermark 1000: [-500, 500) and [0, 1000) closed
    added, _ = w.add(r(600), 0.0)  # in [0, 1000) (closed) and [500, 1500) (open)
    assert (added.windows, added.missed, added.late) == (1, 1, False)
    assert spans(w.flush()) == [("a", 500, 1500, [600, 1000])]  # [1000, 2000): covered


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
    assert w.held_readings == 0 and w.open_windows() == 0
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


DAY = 86_400_000
NOW = 1_800_000_000_000  # the wall clock in these tests (epoch ms)


def test_one_reading_from_a_clock_ahead_does_not_make_the_next_ones_late() -> None:
    w = EventWindows(size_ms=1000, hop_ms=1000, lateness_ms=500, idle_ms=10_000)
    added, closed = w.add(r(NOW + 23 * 3_600_000), 0.0, wall_ms=NOW)
    assert added.future and added.windows == 0 and closed == []
    assert w.watermark("a") is None and w.held_readings == 0  # it moved nothing
    times = [NOW + i * 100 for i in range(15)]
    results = [w.add(r(t), 0.0, wall_ms=t + 50)[0] for t in times]
    assert not any(a.late or a.future for a in results)
    assert [x["ts"] for win in w.flush() for x in win.readings] == times
    # Within the allowance a reading joins its windows, but the watermark stays behind the
    # wall clock: readings of the present that follow it are not late.
    w = EventWindows(size_ms=1000, hop_ms=1000, lateness_ms=500, idle_ms=10_000)
    added, closed = w.add(r(NOW + 50_000), 0.0, wall_ms=NOW)
    assert added.windows == 1 and not added.future and closed == []
    assert w.watermark("a") == NOW - 500
    later = [w.add(r(NOW + i * 200), 0.0, wall_ms=NOW + i * 200)[0] for i in range(20)]
    assert not any(a.late for a in later)
    assert w.watermark("a") == NOW + 19 * 200 - 500
    # Over history (no wall clock: a backfill) nothing is future.
    w = EventWindows(size_ms=1000, hop_ms=1000, lateness_ms=0, idle_ms=10_000)
    assert not w.add(r(NOW + DAY), 0.0)[0].future


def test_the_watermark_follows_the_wall_clock_as_it_catches_up() -> None:
    w = EventWindows(size_ms=1000, hop_ms=1000, lateness_ms=0, idle_ms=10_000)
    w.add(r(NOW + 30_000), 0.0, wall_ms=NOW)  # 30 s ahead, within the allowance
    _, closed = w.add(r(NOW + 100), 0.0, wall_ms=NOW + 31_000)  # the clock caught up
    assert spans(closed) == [("a", NOW, NOW + 1000, [NOW + 100])]  # it closed what passed
    assert w.watermark("a") == NOW + 30_000


def test_trailing_sliding_windows_after_the_last_reading_are_not_emitted() -> None:
    """30 s windows every 5 s over 100 readings a second apart: each window emitted brings a
    reading of its own, so no two end at the same reading (an output at each window's last
    reading never overwrites another), and each reading is counted once."""
    w = EventWindows(size_ms=30_000, hop_ms=5000, lateness_ms=0, idle_ms=10_000)
    closed = feed(w, [r(i * 1000) for i in range(100)]) + w.flush()
    last = [win.readings[-1]["ts"] for win in closed]
    assert len(last) == len(set(last))
    assert last[-1] == 99_000 and sum(win.new for win in closed) == 100
    assert len(closed) == 20  # [-25 s, 5 s) .. [70 s, 100 s), starts 5 s apart
    assert w.covered_windows == 5  # [75 s, 105 s) .. [95 s, 125 s): only readings seen before
    assert w.held_readings == 0 and w.open_windows() == 0


def test_each_reading_is_counted_once_whatever_the_overlap() -> None:
    for each_once in (False, True):
        w = EventWindows(
            size_ms=1000, hop_ms=250, lateness_ms=300, idle_ms=10_000, each_once=each_once
        )
        closed = feed(w, [r(t) for t in (0, 700, 300, 1300, 1100, 2600, 5000)]) + w.flush()
        assert sum(win.new for win in closed) == 7, each_once
        assert w.held_readings == 0
