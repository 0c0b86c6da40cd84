"""The bus's key-value buckets: the latest value per key, on the platform's own JetStream,
kept across a restart."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


async def test_a_bucket_keeps_the_latest_value_per_key_across_a_restart(
    platform_settings: Callable[..., Any],
) -> None:
    from fogline.app.platform import Platform

    settings = platform_settings()
    p = Platform(settings)
    await p.start()
    try:
        twins = await p.bus.key_value("twins", history=5)
        assert await twins.get("default.gw1") is None
        assert await twins.keys() == []
        first = await twins.put("default.gw1", b'{"firmware": "1.0"}')
        second = await twins.put("default.gw1", b'{"firmware": "1.1"}')
        await twins.put("default.gw2", b"{}")
        assert second > first
        await twins.delete("default.gw2")
        assert await twins.get("default.gw2") is None
        assert await twins.keys() == ["default.gw1"]
    finally:
        await p.stop()

    again = Platform(settings)
    await again.start()
    try:
        twins = await again.bus.key_value("twins")  # the bucket as it was, not made anew
        assert await twins.get("default.gw1") == b'{"firmware": "1.1"}'
    finally:
        await again.stop()
