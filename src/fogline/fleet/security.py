"""Security events per device: what nats-server refused (failed logins, publishes and
subscriptions outside a device's own topics), counted per device and kind.

The bus watches nats-server and publishes `security.refused` events, already counted per
(user, kind) over a few seconds; this ledger maps each user name to its device, adds the
counts to the store, and logs at most one warning per (device, kind) and `log_interval_s`
with the number of refusals not logged since. A user name that is no device's (an unknown
user, a deleted device) is counted under that name, with no device.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from fogline.bus.connection import Bus, Subscription
from fogline.bus.events import Change, DeviceChanged, EventType, PlatformEvent, SecurityEvent
from fogline.bus.security import NO_TENANT
from fogline.store.devices import DeviceStore
from fogline.store.errors import DatabaseUnavailable
from fogline.store.security import SecurityCount, SecurityStore

log = logging.getLogger(__name__)

LOG_INTERVAL_S = 60.0
TOP_DEVICES = 5
# User names that are no device's: anyone who reaches the MQTT port can make up new ones, so
# they are kept one by one up to this many, and folded into one name past it; their log lines
# share one window per kind, however many names there are.
MAX_UNKNOWN_USERS = 1_000
OTHER_UNKNOWN_USERS = "(other unknown users)"
UNKNOWN_USERS_LOG_KEY = "(unknown users)"


@dataclass
class _LogWindow:
    last: float
    suppressed: int = 0


@dataclass
class SecurityLedger:
    store: SecurityStore
    devices: DeviceStore
    log_interval_s: float = LOG_INTERVAL_S
    recorded: int = 0  # events added to the store
    logged: int = 0  # warning lines written
    _windows: dict[tuple[str, str, str], _LogWindow] = field(default_factory=dict)

    async def follow(self, bus: Bus) -> Subscription:
        return await bus.subscribe_events(
            self._on_event, [EventType.SECURITY_REFUSED, EventType.DEVICE_CHANGED]
        )

    async def _on_event(self, event: PlatformEvent) -> None:
        if isinstance(event, SecurityEvent):
            await self.record(event)
        elif isinstance(event, DeviceChanged) and event.change is Change.DELETED:
            # A device registered again later under the same id starts with none.
            await asyncio.to_thread(self.store.forget_security_device, event.tenant, event.device)

    async def record(self, event: SecurityEvent) -> None:
        tenant = "" if event.tenant == NO_TENANT else event.tenant
        device = event.device
        if device is not None and tenant:
            known = await asyncio.to_thread(self.devices.device_password_hash, tenant, device)
            if known is None:
                device = None
        username = event.username[:200]
        if device is None:
            username = await asyncio.to_thread(self._unknown_user_name, username)
        count = SecurityCount(
            username=username,
            kind=event.kind,
            tenant=tenant,
            device=device,
            count=event.count,
            first_seen_ms=event.first_at,
            last_seen_ms=event.at,
            last_subject=event.subject[:200] if event.subject else None,
            last_address=event.address[:64] if event.address else None,
        )
        await asyncio.to_thread(self.store.add_security_counts, [count])
        self.recorded += 1
        self._log(count)

    def _unknown_user_name(self, username: str) -> str:
        """The name an unknown user's counts are kept under: its own while there is room."""
        if self.store.security_user_known(username):
            return username
        if self.store.unknown_security_users() >= MAX_UNKNOWN_USERS:
            return OTHER_UNKNOWN_USERS
        return username

    def _log(self, c: SecurityCount) -> None:
        key = (c.tenant, c.device or UNKNOWN_USERS_LOG_KEY, c.kind)
        now = time.monotonic()
        window = self._windows.get(key)
        if window is not None and now - window.last < self.log_interval_s:
            window.suppressed += c.count
            return
        suppressed = window.suppressed if window is not None else 0
        self._windows[key] = _LogWindow(now)
        self.logged += 1
        log.warning(
            "security.refused",
            extra={
                "fields": {
                    "kind": c.kind,
                    "tenant": c.tenant or None,
                    "device": c.device,
                    "username": c.username,
                    "count": c.count,
                    "suppressed_since_last_line": suppressed,
                    "subject": c.last_subject,
                    "address": c.last_address,
                }
            },
        )

    async def device_counts(self, tenant: str, device: str) -> list[SecurityCount]:
        return await asyncio.to_thread(self.store.device_security_counts, tenant, device)

    async def summary(self, tenant: str | None = None) -> dict[str, Any]:
        """Totals per kind, the devices with the most refusals, and the user names that are
        no device's (of one tenant, or of all and of no tenant)."""
        try:
            totals = await asyncio.to_thread(self.store.security_totals, tenant)
            counts = await asyncio.to_thread(self.store.security_counts, tenant)
        except DatabaseUnavailable:
            # /system and /metrics answer during an outage: this part says it cannot tell.
            return {"unavailable": True}
        per_device: dict[tuple[str, str], dict[str, int]] = {}
        unknown: dict[str, int] = {}
        for c in counts:
            if c.device is None:
                unknown[c.username] = unknown.get(c.username, 0) + c.count
            else:
                kinds = per_device.setdefault((c.tenant, c.device), {})
                kinds[c.kind] = kinds.get(c.kind, 0) + c.count
        top = sorted(per_device.items(), key=lambda item: (-sum(item[1].values()), item[0]))
        return {
            "totals": {kind: totals.get(kind, 0) for kind in _KINDS},
            "total": sum(totals.values()),
            "top_devices": [
                {"tenant": t, "device": d, "total": sum(k.values()), "kinds": k}
                for (t, d), k in top[:TOP_DEVICES]
            ],
            "unknown_users": [
                {"username": u, "total": n}
                for u, n in sorted(unknown.items(), key=lambda item: (-item[1], item[0]))[
                    :TOP_DEVICES
                ]
            ],
            "unknown_users_count": len(unknown),
        }


_KINDS = ("login_failed", "publish_denied", "subscribe_denied")
