"""Issue 11: the ingest counters count each stream message once, even when the historian
commits a batch whose answer it never got (the database went away during COMMIT) and so
commits it again."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import orjson
from sqlalchemy.exc import OperationalError

from fogline.domain.telemetry import DeadLetter, DeviceActivity, Reading
from fogline.ingest.cache import RegistryCache
from fogline.ingest.historian import Historian
from fogline.ingest.validation import IngestLimits
from fogline.store.telemetry import StreamOffset, TelemetryStore
from tests.conftest import Api, async_wait_for, setup_motor

MESSAGES = 40
PER_MESSAGE = 5


class AnswerLostStore:
    """The platform's own store, except that the first commit of readings raises after it
    committed: what a connection dropped while COMMIT was answered looks like."""

    def __init__(self, store: TelemetryStore) -> None:
        self._store = store
        self.lost_answers = 0

    def commit_batch(
        self,
        readings: Sequence[Reading],
        dead_letters: Sequence[DeadLetter],
        activity: Sequence[DeviceActivity],
        offset: StreamOffset | None,
        first_seq: int | None = None,
    ) -> None:
        self._store.commit_batch(readings, dead_letters, activity, offset, first_seq)
        if readings and self.lost_answers == 0:
            self.lost_answers += 1
            raise OperationalError("COMMIT", None, Exception("server closed the connection"))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


async def test_a_commit_whose_answer_was_lost_is_counted_once(platform: Any, api: Api) -> None:
    await setup_motor(api)
    # The platform's historian is stopped: an in-process one, on the same stream, consumer
    # and database, takes over with a store that loses the answer of its first commit.
    await platform.historian.stop()
    t0 = int(time.time() * 1000) - 600_000
    for m in range(MESSAGES):
        body = [
            {"asset": "m1", "ts": t0 + m * 100 + i, "values": {"rpm": m * 100 + i}}
            for i in range(PER_MESSAGE)
        ]
        r = await api.http.post("/tenants/default/devices/d1/telemetry", content=orjson.dumps(body))
        assert r.status_code == 202, r.text
    store = AnswerLostStore(platform.db.telemetry)
    cache = RegistryCache(platform.db.assets, platform.db.devices)
    await cache.follow(platform.bus)
    historian = Historian(platform.bus, store, cache, IngestLimits())  # type: ignore[arg-type]
    await historian.start()
    try:

        async def caught_up() -> dict[str, Any] | None:
            # The historian first, then the counters: read the other way round, the counters
            # could be from before the commit that settled it (a race make test saw).
            settled = historian.stats.messages + historian.stats.skipped_redeliveries
            if settled < MESSAGES or historian.stats.backlog != 0:
                return None
            stats: dict[str, Any] = (await api.http.get("/tenants/default/ingest/stats")).json()
            return stats

        s = await async_wait_for(caught_up, timeout=30, what="the backlog to be committed")
    finally:
        await historian.stop()
    assert store.lost_answers == 1
    assert (s["messages"], s["values"], s["dead_letters"]) == (
        MESSAGES,
        MESSAGES * PER_MESSAGE,
        0,
    )
    assert platform.db.telemetry.count_readings("default", "m1") == MESSAGES * PER_MESSAGE
    # The retried batch was found committed: skipped, not split into dead letters.
    assert historian.stats.poison_messages == 0 and historian.stats.skipped_redeliveries > 0
