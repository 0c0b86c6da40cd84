"""Running Fogline's long-lived event loops."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run`, on uvloop where it is installed: the platform's processes relay many
    small NATS messages and HTTP calls, and uvloop's loop costs less per message, which shows
    in the tail of the publish-to-output latency (`fogline bench e2e`)."""
    try:
        import uvloop
    except ImportError:  # e.g. Windows, where uvloop does not exist
        return asyncio.run(main)
    return uvloop.run(main)
