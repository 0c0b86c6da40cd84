"""Telemetry that arrives over HTTP joins the MQTT path: the same stream, the same historian."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from dataclasses import dataclass

from fogline.bus.connection import TELEMETRY_DUPLICATE_WINDOW_S, Bus
from fogline.bus.errors import PublishFateUnknown, PublishNotStored
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


class TelemetryNotStored(Unavailable):
    """Nothing of the request was stored: sending it again stores it once."""

    stored: bool | None = False


class TelemetryFateUnknown(Unavailable):
    """The hot store did not answer in time: the request may or may not be stored."""

    stored: bool | None = None


@dataclass(frozen=True)
class IntakeReceipt:
    stream_seq: int
    duplicate: bool
    preview: Outcome  # what the historian will make of it, for the caller's benefit

    @property
    def refused(self) -> bool:
        """Nothing of it reached the stream (it was too large): it is a dead letter only."""
        return self.stream_seq == 0


class IntakeClosed(TelemetryNotStored):
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

        Every request is published under a message id: the client's `Idempotency-Key` (scoped
        to the tenant and device) or one made here. A publish that gets no answer is tried
        again under that id until the bus's deadline, so the answer is true: 202 when the
        stream has it (JetStream answers `duplicate` to a try it already kept), an error only
        when it surely has not, or when that could not be learned, which the error says. A
        client that retries with the same key within the duplicate window stores it once,
        with the time of its first receipt (the stream's timestamp of the kept message).
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
        try:
            ack = await self.bus.publish_telemetry(
                tenant, device, payload, message_id(tenant, device, idempotency_key, payload)
            )
        except PublishNotStored as exc:
            raise TelemetryNotStored(
                f"telemetry was not stored: {exc.message}; nothing of it is kept, send it again"
            ) from None
        except PublishFateUnknown as exc:
            raise TelemetryFateUnknown(_fate_unknown(exc.message, idempotency_key)) from None
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


def message_id(tenant: str, device: str, idempotency_key: str | None, body: bytes) -> str:
    """The JetStream message id of an HTTP request: a client's key is scoped to its tenant and
    device (no other sender's request can be taken for its duplicate) and to the body it came
    with: the same key with another body (a device whose key counter started over after a
    reboot) is another request, stored too, never dropped as a duplicate. Without a key, an
    id made here (a ':' no tenant id has keeps the two kinds apart)."""
    if idempotency_key:
        digest = hashlib.sha256(body).hexdigest()[:32]
        return f"{tenant}.{device}.{idempotency_key}.{digest}"
    return f"http:{uuid.uuid4().hex}"


def _fate_unknown(why: str, idempotency_key: str | None) -> str:
    window = f"{TELEMETRY_DUPLICATE_WINDOW_S / 60:g} minutes"
    if idempotency_key:
        advice = f"send it again with the same Idempotency-Key within {window}: it is stored once"
    else:
        advice = (
            "sent again without an Idempotency-Key it may be stored twice; send an "
            "Idempotency-Key to retry safely"
        )
    return f"it is not known whether this telemetry was stored: {why}; {advice}"
