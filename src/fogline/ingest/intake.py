"""Telemetry that arrives over HTTP joins the MQTT path: the same stream, the same historian."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from fogline.bus.connection import Bus
from fogline.bus.errors import BrokerUnavailable, BusError
from fogline.domain.errors import Unavailable
from fogline.domain.telemetry import DeadLetterReason
from fogline.ingest.cache import RegistryCache
from fogline.ingest.validation import (
    IngestLimits,
    MessageContext,
    Outcome,
    validate_message,
)
from fogline.store.telemetry import TelemetryStore


@dataclass(frozen=True)
class IntakeReceipt:
    stream_seq: int
    duplicate: bool
    preview: Outcome  # what the historian will make of it, for the caller's benefit

    @property
    def refused(self) -> bool:
        """Nothing of it reached the stream (it was too large): it is a dead letter only."""
        return self.stream_seq == 0


class IntakeClosed(Unavailable):
    """The platform takes no data in for now (the disk is nearly full): nothing was stored."""

    retry_after_s = 30


class HttpIntake:
    def __init__(
        self, bus: Bus, cache: RegistryCache, store: TelemetryStore, limits: IngestLimits
    ) -> None:
        self.bus = bus
        self.store = store
        self.cache = cache
        self.limits = limits
        self.closed_because: str | None = None  # set while the platform refuses data

    def refuse_if_closed(self) -> None:
        if self.closed_because is not None:
            raise IntakeClosed(f"telemetry is not taken in for now: {self.closed_because}")

    async def publish(
        self, tenant: str, device: str, payload: bytes, idempotency_key: str | None
    ) -> IntakeReceipt:
        """Put the body on the device's telemetry subject; JetStream's ack means it is kept.

        An `Idempotency-Key` becomes the JetStream message id, so a client that retries a
        request it is unsure about does not store its readings twice.
        """
        self.refuse_if_closed()
        received_at = int(time.time() * 1000)
        if len(payload) > self.limits.max_message_bytes:
            # Too big for the hot store; kept as a dead letter here, as the historian would.
            outcome = validate_message(
                MessageContext(tenant, device, received_at), payload, self.cache, self.limits
            )
            await asyncio.to_thread(self.store.commit_batch, [], outcome.dead_letters, [], None)
            return IntakeReceipt(0, False, outcome)
        preview = validate_message(
            MessageContext(tenant, device, received_at), payload, self.cache, self.limits
        )
        dedup_id = f"{tenant}.{device}.{idempotency_key}" if idempotency_key else None
        try:
            ack = await self.bus.publish_telemetry(tenant, device, payload, dedup_id)
        except BusError as exc:
            raise BrokerUnavailable(
                f"telemetry could not be stored in the hot store: {exc}"
            ) from None
        return IntakeReceipt(ack.seq, ack.duplicate, preview)

    async def refuse_too_large(
        self, tenant: str, device: str, size: int | None, limit: int
    ) -> IntakeReceipt:
        """A body refused while it was read, as soon as it passed the limit: nothing of it is
        kept but a dead letter saying how large it was (or that it was larger than the limit)."""
        self.refuse_if_closed()
        told = f"{size} bytes" if size is not None else f"more than {limit} bytes"
        letter = MessageContext(tenant, device, int(time.time() * 1000)).dead_letter(
            DeadLetterReason.TOO_LARGE, f"message is {told}; the limit is {limit}", None
        )
        await asyncio.to_thread(self.store.commit_batch, [], [letter], [], None)
        return IntakeReceipt(0, False, Outcome(dead_letters=[letter]))
