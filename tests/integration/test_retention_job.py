"""The retention job inside a running platform: expired readings leave the history, their
hourly aggregates answer bucketed queries, and /api/v1/system counts what went."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fogline.domain.telemetry import Reading
from fogline.domain.timeseries import now_ms
from tests.conftest import Api, async_wait_for, setup_motor

HOUR = 3_600_000
DAY = 24 * HOUR


async def test_platform_expires_history_and_answers_old_ranges_from_aggregates(
    platform_settings: Callable[..., Any],
) -> None:
    from fogline.app.platform import Platform

    platform = Platform(platform_settings(history_retention="2d", aggregate_retention="forever"))
    await platform.start()
    api = Api(platform.http_url, platform.bootstrap.admin_key)
    try:
        await setup_motor(api)
        # The run at start is over (the next one is an hour away), so the one below is ours.
        await async_wait_for(lambda: platform.retention_job.stats.runs >= 1)
        now = now_ms()
        old_hour = now - now % HOUR - 5 * DAY
        old = [Reading("default", "m1", old_hour + i * 60_000, {"rpm": i}) for i in range(30)]
        fresh = [Reading("default", "m1", now - 1000, {"rpm": 7})]
        platform.db.telemetry.commit_batch(old + fresh, [], [], None)

        report = await platform.retention_job.run_once()
        assert report.readings_deleted == 30

        params = {"keys": "rpm", "from": str(old_hour - DAY), "to": "now"}
        raw = await api.http.get("/tenants/default/assets/m1/telemetry/history", params=params)
        assert raw.json()["resolution"] == "raw"
        assert [p[1] for p in raw.json()["series"]["rpm"]["points"]] == [7]
        hourly = await api.http.get(
            "/tenants/default/assets/m1/telemetry/history", params={**params, "bucket": "1h"}
        )
        body = hourly.json()
        assert body["resolution"] == "mixed", body
        first, last = body["series"]["rpm"]["buckets"][0], body["series"]["rpm"]["buckets"][-1]
        assert (first["ts"], first["count"], first["min"], first["max"]) == (old_hour, 30, 0, 29)
        assert first["avg"] == sum(range(30)) / 30
        assert (last["count"], last["avg"]) == (1, 7)

        system = (await api.http.get("/system")).json()["retention"]
        assert system["readings_deleted"] == 30 and system["aggregates_written"] == 1
        assert system["oldest_reading_ms"] == now - 1000 and system["last_error"] is None
    finally:
        await api.close()
        await platform.stop()
