"""The disk reserve's rules: sizes, the reserve a policy gives a filesystem, the hot store's
limits fitted to it, and the fill rate behind `fogline status`'s days left."""

from __future__ import annotations

from pathlib import Path

import pytest

from fogline.disk import GIB, MIB, DiskGuard, FillRate, ReservePolicy, StoreSizes, parse_size
from fogline.domain.errors import InvalidInput
from fogline.retry import wait_until


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1048576", 1048576),
        ("512MiB", 512 * MIB),
        ("2GB", 2 * 1000**3),
        ("1.5 GiB", int(1.5 * GIB)),
    ],
)
def test_sizes_are_read_in_either_unit(text: str, size: int) -> None:
    assert parse_size(text, "x") == size


@pytest.mark.parametrize("text", ["banana", "-1", "12 parsecs", "", "1e9"])
def test_a_size_that_is_not_one_is_refused_with_the_field(text: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_size(text, "disk_reserve")
    assert caught.value.problems[0].field == "disk_reserve"


def test_auto_is_five_percent_between_a_floor_and_a_ceiling() -> None:
    auto = ReservePolicy("auto")
    assert auto.bytes_for(160 * MIB) == 16 * MIB  # 8 MiB would be too little
    assert auto.bytes_for(100 * GIB) == 2 * GIB  # 5 GiB would be more than needed
    assert auto.bytes_for(20 * GIB) == GIB


def test_a_reserve_is_a_size_or_a_percentage_below_a_hundred() -> None:
    assert ReservePolicy("64MiB").bytes_for(GIB) == 64 * MIB
    assert ReservePolicy("10%").bytes_for(GIB) == GIB // 10
    assert ReservePolicy("0").bytes_for(GIB) == 0  # the guard off, said explicitly
    for bad in ("150%", "-5%", "x%", "banana"):
        with pytest.raises(InvalidInput):
            ReservePolicy(bad).check()


def test_the_hot_store_fits_the_filesystem_less_the_reserve() -> None:
    small = StoreSizes.fit(160 * MIB, 16 * MIB, 10 * GIB, 5 * GIB, 256 * MIB)
    assert small.jetstream_max == 144 * MIB
    assert small.telemetry_max == 80 * MIB  # half the filesystem: the history needs room
    assert small.events_max == 144 * MIB // 20
    assert small.telemetry_max + small.events_max <= small.jetstream_max
    large = StoreSizes.fit(1000 * GIB, 2 * GIB, 10 * GIB, 5 * GIB, 256 * MIB)
    assert (large.jetstream_max, large.telemetry_max, large.events_max) == (
        10 * GIB,
        5 * GIB,
        256 * MIB,
    )


def test_days_left_follow_the_rate_the_room_goes_at() -> None:
    rate = FillRate(window_s=3600, min_span_s=30)
    rate.add(1000 * MIB, now=0.0)
    assert rate.days_left(500 * MIB) is None  # too early to tell
    rate.add(1000 * MIB - 60 * MIB, now=60.0)  # 1 MiB/s
    assert rate.bytes_per_s() == pytest.approx(MIB)
    assert rate.days_left(86400 * MIB) == pytest.approx(1.0)
    rate.add(2000 * MIB, now=120.0)  # room freed: not filling
    assert rate.days_left(500 * MIB) is None


class RecordingGate:
    name = "a gate"

    def __init__(self) -> None:
        self.turns: list[str] = []

    async def close(self, reason: str) -> None:
        self.turns.append("close")

    async def open(self) -> None:
        self.turns.append("open")


async def test_the_guard_closes_under_the_reserve_and_opens_with_room_again(tmp_path: Path) -> None:
    gate = RecordingGate()
    guard = DiskGuard(tmp_path, ReservePolicy("99%"), [gate], interval_s=0.01)
    guard.start()
    try:
        await wait_until(lambda: _now(gate.turns == ["close"]), 5)
        assert guard.health()["refusing"] and "reserve" in (guard.health()["problem"] or "")
        guard.reserve = guard.resume_at = 0  # as if room came back
        await wait_until(lambda: _now(gate.turns == ["close", "open"]), 5)
        assert gate.turns == ["close", "open"]
        assert guard.health()["ok"] and guard.refusals == 1
    finally:
        await guard.stop()


async def test_a_store_failure_closes_until_the_store_is_recovered(tmp_path: Path) -> None:
    gate = RecordingGate()
    recovered: list[bool] = []

    async def recover() -> None:
        recovered.append(True)

    guard = DiskGuard(tmp_path, ReservePolicy("0"), [gate], recover_store=recover, interval_s=0.01)
    guard.start()
    try:
        guard.report_store_failure("Critical write error: no space left on device")
        await wait_until(lambda: _now(gate.turns == ["close", "open"]), 5)
        assert gate.turns == ["close", "open"]
        assert recovered == [True] and guard.store_failure is None
        assert guard.refusals == 1
    finally:
        await guard.stop()


async def _now(value: bool) -> bool:
    return value


def test_a_reserve_must_leave_the_data_half_the_disk_and_be_a_real_size() -> None:
    assert ReservePolicy("64MiB").checked_for(GIB) == 64 * MIB
    for bad in ("600MiB", "99%"):
        with pytest.raises(InvalidInput, match="disk_reserve"):
            ReservePolicy(bad).checked_for(GIB)
    for bad in ("0.5", "512", "100KiB"):  # would be no reserve at all, silently
        with pytest.raises(InvalidInput):
            ReservePolicy(bad).check()
