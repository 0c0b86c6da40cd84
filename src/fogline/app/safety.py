"""The disk guard's wiring: which gates it closes while the data dir's disk is nearly full
(device logins on the embedded broker, HTTP ingest, the MQTT bridge), and how the hot store is
recovered after a write error (nats-server restarted once there is room)."""

from __future__ import annotations

from contextlib import AsyncExitStack

from fogline.app.contexts import Backbone, IngestContext
from fogline.bus.bridge import MqttBridge
from fogline.bus.server import EmbeddedNats
from fogline.disk import DiskGuard, Gate, ReservePolicy
from fogline.ingest.intake import HttpIntake


class BrokerGate:
    name = "device logins"

    def __init__(self, nats: EmbeddedNats) -> None:
        self.nats = nats

    async def close(self, reason: str) -> None:
        await self.nats.refuse_devices(reason)

    async def open(self) -> None:
        await self.nats.admit_devices()


class HttpIntakeGate:
    name = "HTTP ingest"

    def __init__(self, intake: HttpIntake) -> None:
        self.intake = intake

    async def close(self, reason: str) -> None:
        self.intake.closed_because = reason

    async def open(self) -> None:
        self.intake.closed_because = None


class BridgeGate:
    name = "the MQTT bridge"

    def __init__(self, bridge: MqttBridge) -> None:
        self.bridge = bridge

    async def close(self, reason: str) -> None:
        await self.bridge.pause(reason)

    async def open(self) -> None:
        await self.bridge.resume()


async def start_disk_guard(b: Backbone, ingest: IngestContext, stack: AsyncExitStack) -> DiskGuard:
    # HTTP first: closing it is immediate; the broker's reload takes a moment.
    gates: list[Gate] = [HttpIntakeGate(ingest.intake)]
    if b.nats is not None:
        gates.append(BrokerGate(b.nats))
    if ingest.bridge is not None:
        gates.append(BridgeGate(ingest.bridge))
    nats = b.nats

    async def restart_broker() -> None:
        if nats is not None:
            await nats.restart("could not write its store (there is room again)")

    guard = DiskGuard(
        b.settings.data_dir,
        ReservePolicy(b.settings.disk_reserve),
        gates,
        recover_store=restart_broker if nats is not None else None,
    )
    if nats is not None:
        nats.on_store_failure = guard.report_store_failure
    stack.push_async_callback(guard.stop)
    guard.start()
    return guard
