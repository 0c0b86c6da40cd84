"""`fogline status` as a person reads it: a line per part, the disk's time left in a unit that
says it, the retention job and the tenant's ingest counters."""

from __future__ import annotations

from typing import Any

import pytest

from fogline.cli.status_view import disk_line, status_lines, time_left

MIB = 1024**2


@pytest.mark.parametrize(
    ("days", "said"),
    [
        (12.34, "12.3 days"),
        (1.0, "1.0 days"),
        (0.5, "about 12 hours"),
        (1 / 24, "about 1 hour"),
        (9 / 1440, "about 9 minutes"),
        (1 / 1440, "about 1 minute"),
        (0.1 / 1440, "under a minute"),
    ],
)
def test_time_left_is_said_in_days_hours_or_minutes(days: float, said: str) -> None:
    assert time_left(days) == said


def _disk(days_left: float | None, refusing: bool = False) -> dict[str, Any]:
    return {
        "ok": not refusing,
        "problem": "the disk is full" if refusing else None,
        "free_bytes": 300 * MIB,
        "total_bytes": 1000 * MIB,
        "headroom_bytes": 100 * MIB,
        "reserve_bytes": 200 * MIB,
        "days_left": days_left,
        "refusing": refusing,
    }


def test_the_disk_line_says_minutes_not_zero_days() -> None:
    line = disk_line(_disk(9 / 1440))
    assert line.endswith(
        "100 MiB above the 200 MiB reserve; about 9 minutes left at the current rate"
    )
    assert "not filling" in disk_line(_disk(None))
    assert disk_line(_disk(0.001, refusing=True)).endswith("; REFUSING NEW DATA")


def test_status_is_a_line_per_part_then_disk_retention_and_ingest() -> None:
    checks = {
        "broker": {
            "ok": True,
            "problem": None,
            "connected": True,
            "embedded": True,
            "state": "running",
            "pid": 42,
            "restarts": 1,
        },
        "database": {"ok": True, "problem": None, "dialect": "postgresql"},
        "historian": {
            "ok": False,
            "problem": "the historian process is frozen (stopped by a signal)",
            "state": "stalled",
            "backlog": 2912,
            "last_commit_age_s": 61.2,
            "restarts": 0,
        },
        "models": {"ok": True, "problem": None, "deployed": 2, "items": [{"id": "x"}] * 2},
        "disk": _disk(3.0),
    }
    ready = {"status": 503, "detail": "the historian process is frozen", "checks": checks}
    system = {
        "retention": {
            "readings_deleted": 5,
            "runs": 2,
            "last_run_at_ms": None,
            "oldest_reading_ms": None,
            "last_error": None,
        }
    }
    ingest = {
        "messages": 10,
        "values": 30,
        "dead_letters": 1,
        "dead_letters_by_reason": {"schema": 1},
        "devices": [{}, {}],
    }
    lines = status_lines(ready, system, ingest, "acme")
    assert lines[0] == "NOT READY: the historian process is frozen"
    assert [line.split()[0] for line in lines[1:6]] == [
        "broker",
        "database",
        "historian",
        "models",
        "disk",
    ]
    assert lines[1].split()[1] == "ok" and "pid 42, 1 restart(s)" in lines[1]
    historian = lines[3]
    assert historian.split()[1] == "PROBLEM"
    assert "stalled, backlog 2912, last commit 61s ago" in historian
    assert historian.endswith("; the historian process is frozen (stopped by a signal)")
    assert lines[6].startswith("disk: 300 MiB free") and "3.0 days left" in lines[6]
    assert lines[7].startswith("retention: 5 readings deleted in 2 run(s)")
    assert (
        lines[8] == "ingest (acme): 10 messages, 30 values, 1 dead letters (schema 1), 2 device(s)"
    )
    assert len(lines) == 9  # no JSON dump


def test_status_with_parts_away_still_says_what_it_knows() -> None:
    ready = {
        "status": "ready",
        "checks": {"database": {"ok": True, "problem": None, "dialect": "sqlite"}},
        "warnings": [],
    }
    unavailable = {"status": 503, "detail": "the database does not answer"}
    lines = status_lines(ready, unavailable, unavailable, "default")
    assert lines == [
        "ready",
        "database  ok       sqlite",
        "ingest (default): unavailable: the database does not answer",
    ]


def test_status_says_where_the_platform_listens_and_with_what() -> None:
    from fogline.cli.status_view import listeners_line

    listeners = [
        {"name": "http", "host": "0.0.0.0", "port": 8470, "tls": True},
        {
            "name": "mqtt",
            "host": "0.0.0.0",
            "port": 18883,
            "tls": True,
            "client_certificates": True,
        },
        {"name": "nats", "host": "127.0.0.1", "port": 14222, "tls": False},
    ]
    assert listeners_line(listeners) == (
        "listening  http 0.0.0.0:8470 (TLS), mqtt 0.0.0.0:18883 (TLS, client certificates), "
        "nats 127.0.0.1:14222"
    )
    lines = status_lines({"status": "ready", "checks": {}}, {"listeners": listeners}, {}, "t")
    assert lines[1] == listeners_line(listeners)
