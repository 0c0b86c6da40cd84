"""Reading-by-reading accounting of a fault run: what the devices published, what the broker
acknowledged (PUBACK), and what the platform's history holds afterwards.

A message is one device's publish at one timestamp and carries one reading per asset of the
device, so a reading is identified by (asset, ts). Pure: the bench gathers the facts, this
module only compares them (and is unit-tested on synthetic records).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

LOST_EXAMPLES = 5  # readings named in the report when some were lost


@dataclass(frozen=True)
class SentMessage:
    device: str
    ts: int
    acknowledged: bool  # the broker's PUBACK arrived


@dataclass(frozen=True)
class Accounting:
    published: int  # readings handed to the devices' MQTT clients
    acknowledged: int  # readings whose message got its PUBACK
    stored: int  # published readings found in the history (once or more)
    lost: int  # acknowledged but not stored: must be 0
    duplicated: int  # extra copies of readings stored more than once
    unacknowledged: int  # no PUBACK by the end: the device still holds them (not lost)
    unacknowledged_stored: int  # stored though their PUBACK never came (lost in the fault)
    foreign: int  # stored readings of the run's assets that no device published
    stored_messages: int  # messages with at least one reading stored
    counted_messages: int | None  # the platform's ingest counter for the run's devices
    lost_examples: list[str] = field(default_factory=list)

    @property
    def counted_twice(self) -> int | None:
        """Messages the ingest counters counted beyond those stored (redeliveries counted
        again); negative when the counters missed some."""
        if self.counted_messages is None:
            return None
        return self.counted_messages - self.stored_messages


def account(
    messages: Iterable[SentMessage],
    assets_of: Mapping[str, Sequence[str]],
    history: Mapping[str, Sequence[int]],
    counted_messages: int | None = None,
) -> Accounting:
    """Compare published messages with `history` (asset -> the timestamps of its stored
    points, repeated when a reading is stored more than once)."""
    stored_at = {asset: Counter(times) for asset, times in history.items()}
    published = acknowledged = stored = lost = unacked = unacked_stored = 0
    stored_messages = 0
    examples: list[str] = []
    expected: dict[str, set[int]] = {}
    for m in messages:
        assets = assets_of[m.device]
        found = 0
        for asset in assets:
            expected.setdefault(asset, set()).add(m.ts)
            if stored_at.get(asset, Counter())[m.ts] > 0:
                found += 1
            elif m.acknowledged and len(examples) < LOST_EXAMPLES:
                examples.append(f"{asset}@{m.ts}")
        published += len(assets)
        stored += found
        stored_messages += found > 0
        if m.acknowledged:
            acknowledged += len(assets)
            lost += len(assets) - found
        else:
            unacked += len(assets)
            unacked_stored += found
    duplicated = sum(
        count - 1 for times in stored_at.values() for count in times.values() if count > 1
    )
    foreign = sum(
        count
        for asset, times in stored_at.items()
        for ts, count in times.items()
        if ts not in expected.get(asset, set())
    )
    return Accounting(
        published=published,
        acknowledged=acknowledged,
        stored=stored,
        lost=lost,
        duplicated=duplicated,
        unacknowledged=unacked,
        unacknowledged_stored=unacked_stored,
        foreign=foreign,
        stored_messages=stored_messages,
        counted_messages=counted_messages,
        lost_examples=examples,
    )
