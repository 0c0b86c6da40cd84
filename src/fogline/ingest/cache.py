"""What validation needs to know of the registry, kept in memory.

The historian validates thousands of readings a second; asking the database each time would be
its bottleneck. Entries are dropped whenever the registry announces a change on the bus, and
refusals ("no such asset") are remembered only briefly, so a device that starts publishing just
before its asset is registered recovers on its own.
"""

from __future__ import annotations

import threading
import time

from fogline.bus.connection import Bus, Subscription
from fogline.bus.events import EventType, PlatformEvent
from fogline.domain.assets import AssetType
from fogline.domain.errors import NotFound
from fogline.store.assets import AssetStore
from fogline.store.devices import DeviceStore

NEGATIVE_TTL_SECONDS = 2.0


class RegistryCache:
    def __init__(self, assets: AssetStore, devices: DeviceStore) -> None:
        self.assets = assets
        self.devices = devices
        self._lock = threading.Lock()
        self._devices: dict[tuple[str, str], tuple[bool, float]] = {}
        self._assets: dict[tuple[str, str], tuple[AssetType | None, float]] = {}
        self._types: dict[tuple[str, str], AssetType] = {}

    async def follow(self, bus: Bus) -> Subscription:
        """Forget what a registry or device change may have made wrong, as the owner of the
        change publishes it (handled before the owner's call returns, in this process)."""

        async def on_change(_event: PlatformEvent) -> None:
            self.invalidate()

        return await bus.subscribe_events(
            on_change, [EventType.REGISTRY_CHANGED, EventType.DEVICE_CHANGED]
        )

    def invalidate(self) -> None:
        with self._lock:
            self._devices.clear()
            self._assets.clear()
            self._types.clear()

    def device_known(self, tenant: str, device: str) -> bool:
        key = (tenant, device)
        hit = self._devices.get(key)
        if hit is not None and (hit[0] or time.monotonic() < hit[1]):
            return hit[0]
        try:
            self.devices.get_device(tenant, device)
            known = True
        except NotFound:
            known = False
        with self._lock:
            self._devices[key] = (known, time.monotonic() + NEGATIVE_TTL_SECONDS)
        return known

    def asset_type_of(self, tenant: str, asset: str) -> AssetType | None:
        key = (tenant, asset)
        hit = self._assets.get(key)
        if hit is not None and (hit[0] is not None or time.monotonic() < hit[1]):
            return hit[0]
        found: AssetType | None
        try:
            type_id = self.assets.get_asset(tenant, asset).asset_type
            found = self._types.get((tenant, type_id))
            if found is None:
                found = self.assets.get_asset_type(tenant, type_id)
        except NotFound:
            found = None
        with self._lock:
            self._assets[key] = (found, time.monotonic() + NEGATIVE_TTL_SECONDS)
            if found is not None:
                self._types[(tenant, found.id)] = found
        return found
