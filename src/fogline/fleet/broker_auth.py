"""Where device credentials take effect: the adapters behind the `BrokerAuth` Protocol.

The embedded nats-server enforces them itself (each device is a broker user); an external NATS
is its operator's to manage, so there Fogline only says what it would have applied.
"""

from __future__ import annotations

import logging
from typing import Protocol

from fogline.bus.server import BrokerUser, EmbeddedNats

log = logging.getLogger(__name__)


class BrokerAuth(Protocol):
    """Where device credentials take effect: the embedded nats-server, or nowhere when the
    operator runs their own NATS and manages its users."""

    enforced: bool

    async def apply(self, users: list[BrokerUser]) -> None: ...
    async def wait_accepted(self, username: str, password: str) -> None: ...


class UnmanagedBrokerAuth:
    """An external NATS: its operator owns its users (auth callout is the scale-out path)."""

    enforced = False

    async def apply(self, users: list[BrokerUser]) -> None:
        log.info("broker.auth_unmanaged", extra={"fields": {"devices": len(users)}})

    async def wait_accepted(self, username: str, password: str) -> None:
        return None


class EmbeddedBrokerAuth:
    """Device credentials enforced by our own nats-server."""

    enforced = True

    def __init__(self, server: EmbeddedNats) -> None:
        self.server = server

    async def apply(self, users: list[BrokerUser]) -> None:
        await self.server.reload(users)

    async def wait_accepted(self, username: str, password: str) -> None:
        await self.server.wait_user_accepted(username, password)
