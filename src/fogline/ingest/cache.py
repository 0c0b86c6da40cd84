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
from fogline.domain.telemetry import Reading, SourceKind
from fogline.store.assets import AssetStore
from fogline.store.devices import DeviceStore
from fogline.store.telemetry import TelemetryStore

NEGATIVE_TTL_SECONDS = 2.0


class RegistryCache:
    def __init__(self, assets: AssetStore, devices: DeviceStore) -> None:
        self.assets = assets
        self.devices = devices
        self._lock = threading.Lock()
        self._devices: dict[tuple[str, str], tuple[bool, float]] = {}
        self._assets: dict[tuple[str, str], tuple[AssetType | None, float]] = {}
        self._types: dict[tuple[str, str], AssetType] = {}
        self.generation = 0  # counts the changes: what is derived from the registry follows

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
            self.generation += 1
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


class DeviceTelemetry:
    """Per asset, the telemetry that devices have written on it: what a model may not write.

    Read from the store once per asset that a model writes to, then kept up to date from what
    the historian commits (it is the only writer of telemetry), so the check costs a set
    lookup. Forgotten when the registry changes (a removed asset takes its history along) and
    when the historian cannot be sure what it committed."""

    def __init__(self, store: TelemetryStore, registry: RegistryCache) -> None:
        self.store = store
        self.registry = registry
        self._generation = registry.generation
        self._known: dict[tuple[str, str], set[str]] = {}

    def of(self, tenant: str, asset: str) -> set[str]:
        if self._generation != self.registry.generation:
            self.forget()
        names = self._known.get((tenant, asset))
        if names is None:
            names = self.store.device_telemetry(tenant, [asset]).get(asset, set())
            self._known[(tenant, asset)] = names
        return names

    def learn(self, readings: list[Reading]) -> None:
        """Committed readings: devices' telemetry of the assets known here is added."""
        if not self._known:
            return
        for r in readings:
            if r.source is SourceKind.DEVICE:
                names = self._known.get((r.tenant, r.asset))
                if names is not None:
                    names.update(r.values)

    def forget(self) -> None:
        self._generation = self.registry.generation
        self._known.clear()
