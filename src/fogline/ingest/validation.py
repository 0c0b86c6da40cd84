"""Turning a device's message into stored values and dead letters. Pure: no I/O.

A message is JSON: one reading `{"asset": "m1", "ts": 1700000000000, "values": {...}}`, a list
of readings, or `{"readings": [...]}`. `ts` is optional (the server's receive time is used).
Problems are kept as narrow as they can be: a bad value refuses that value, a bad reading that
reading, and only a message that cannot be read at all is refused whole. Everything valid around
a problem is stored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from fogline.domain.registry import AssetType, DType, TelemetryDefinition, value_matches
from fogline.domain.telemetry import DeadLetter, DeadLetterReason, TelemetryValue
from fogline.domain.timeseries import reading_timestamp_problem

MAX_STRING_VALUE = 4096
DEAD_LETTER_PAYLOAD_LIMIT = 2048


@dataclass(frozen=True)
class IngestLimits:
    max_message_bytes: int = 256 * 1024
    max_readings_per_message: int = 10_000


class SchemaLookup(Protocol):
    def device_known(self, tenant: str, device: str) -> bool: ...
    def asset_type_of(self, tenant: str, asset: str) -> AssetType | None: ...


@dataclass
class AcceptedReading:
    """A reading as it was stored, for the live stream: values decoded to their dtype."""

    asset: str
    ts: int
    values: dict[str, Any]


@dataclass
class Outcome:
    values: list[TelemetryValue] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    accepted: list[AcceptedReading] = field(default_factory=list)


@dataclass(frozen=True)
class MessageContext:
    tenant: str
    device: str
    received_at: int
    stream_seq: int | None = None


def _clip(raw: bytes | str) -> str:
    text = raw if isinstance(raw, str) else raw.decode("utf-8", errors="replace")
    return (
        text if len(text) <= DEAD_LETTER_PAYLOAD_LIMIT else text[:DEAD_LETTER_PAYLOAD_LIMIT] + "…"
    )


def _dump(value: Any) -> str:
    try:
        return _clip(orjson.dumps(value))
    except TypeError:
        return _clip(repr(value))


def validate_message(
    ctx: MessageContext, payload: bytes, lookup: SchemaLookup, limits: IngestLimits
) -> Outcome:
    outcome = Outcome()

    def refuse(code: DeadLetterReason, reason: str, raw: str | None) -> Outcome:
        outcome.dead_letters.append(
            DeadLetter(
                tenant=ctx.tenant,
                device=ctx.device,
                received_at=ctx.received_at,
                reason_code=code,
                reason=reason,
                payload=raw,
                stream_seq=ctx.stream_seq,
            )
        )
        return outcome

    if len(payload) > limits.max_message_bytes:
        return refuse(
            DeadLetterReason.TOO_LARGE,
            f"message is {len(payload)} bytes; the limit is {limits.max_message_bytes}",
            _clip(payload[:DEAD_LETTER_PAYLOAD_LIMIT]),
        )
    if not lookup.device_known(ctx.tenant, ctx.device):
        return refuse(
            DeadLetterReason.UNKNOWN_DEVICE,
            f"device {ctx.device!r} is not registered in tenant {ctx.tenant!r}",
            _clip(payload),
        )
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        return refuse(DeadLetterReason.NOT_JSON, f"not JSON: {exc}", _clip(payload))

    readings: Any
    if isinstance(document, list):
        readings = document
    elif isinstance(document, dict) and "readings" in document:
        readings = document["readings"]
        if not isinstance(readings, list):
            return refuse(DeadLetterReason.BAD_SHAPE, "'readings' must be a list", _clip(payload))
    elif isinstance(document, dict):
        readings = [document]
    else:
        return refuse(
            DeadLetterReason.BAD_SHAPE,
            "a message is a reading object, a list of readings or {'readings': [...]}",
            _clip(payload),
        )
    if len(readings) > limits.max_readings_per_message:
        return refuse(
            DeadLetterReason.TOO_LARGE,
            f"{len(readings)} readings in one message; the limit is "
            f"{limits.max_readings_per_message}",
            _clip(payload),
        )
    batch = len(readings) > 1 or isinstance(document, list) or "readings" in document
    for index, reading in enumerate(readings):
        _validate_reading(ctx, index if batch else None, reading, lookup, outcome)
    return outcome


def _validate_reading(
    ctx: MessageContext, item: int | None, reading: Any, lookup: SchemaLookup, outcome: Outcome
) -> None:
    def refuse(
        code: DeadLetterReason, reason: str, asset: str | None = None, name: str | None = None
    ) -> None:
        outcome.dead_letters.append(
            DeadLetter(
                tenant=ctx.tenant,
                device=ctx.device,
                received_at=ctx.received_at,
                reason_code=code,
                reason=reason,
                payload=_dump(reading if name is None else {name: reading["values"][name]}),
                stream_seq=ctx.stream_seq,
                item=item,
                asset=asset,
                telemetry=name,
            )
        )

    if not isinstance(reading, dict):
        return refuse(DeadLetterReason.BAD_SHAPE, "a reading must be a JSON object")
    asset_id = reading.get("asset")
    if not isinstance(asset_id, str) or not asset_id:
        return refuse(DeadLetterReason.BAD_SHAPE, "a reading must name its 'asset'")
    values = reading.get("values")
    if not isinstance(values, dict) or not values:
        return refuse(
            DeadLetterReason.BAD_SHAPE, "a reading needs a non-empty 'values' object", asset_id
        )
    asset_type = lookup.asset_type_of(ctx.tenant, asset_id)
    if asset_type is None:
        return refuse(
            DeadLetterReason.UNKNOWN_ASSET,
            f"asset {asset_id!r} does not exist in tenant {ctx.tenant!r}",
            asset_id,
        )
    if "ts" in reading and reading["ts"] is not None:
        ts, problem = reading_timestamp_problem(reading["ts"], ctx.received_at)
        if ts is None:
            return refuse(DeadLetterReason.BAD_TIMESTAMP, problem or "bad timestamp", asset_id)
    else:
        ts = ctx.received_at

    accepted: dict[str, Any] = {}
    for name, value in values.items():
        definition = asset_type.definition(name)
        if definition is None:
            refuse(
                DeadLetterReason.UNKNOWN_TELEMETRY,
                f"asset type {asset_type.id!r} defines no telemetry {name!r}",
                asset_id,
                name,
            )
            continue
        problem_code, problem = value_problem(definition, value)
        if problem_code is not None:
            refuse(problem_code, problem, asset_id, name)
            continue
        num, text = encode_value(definition.dtype, value)
        outcome.values.append(TelemetryValue(ctx.tenant, asset_id, name, ts, num, text))
        accepted[name] = decode_value(definition.dtype, num, text)
    if accepted:
        outcome.accepted.append(AcceptedReading(asset_id, ts, accepted))


def value_problem(d: TelemetryDefinition, value: Any) -> tuple[DeadLetterReason | None, str]:
    if not value_matches(d.dtype, value):
        return DeadLetterReason.WRONG_TYPE, f"{d.name} must be a {d.dtype.value}, got {value!r}"
    if d.dtype is DType.STRING and len(value) > MAX_STRING_VALUE:
        return DeadLetterReason.OUT_OF_RANGE, f"{d.name} is longer than {MAX_STRING_VALUE}"
    if d.dtype.numeric:
        if d.min is not None and value < d.min:
            return DeadLetterReason.OUT_OF_RANGE, f"{d.name}={value} is below its minimum {d.min}"
        if d.max is not None and value > d.max:
            return DeadLetterReason.OUT_OF_RANGE, f"{d.name}={value} is above its maximum {d.max}"
    return None, ""


def encode_value(dtype: DType, value: Any) -> tuple[float | None, str | None]:
    if dtype is DType.STRING:
        return None, str(value)
    return float(value), None


def decode_value(dtype: DType, num: float | None, text: str | None) -> Any:
    if dtype is DType.STRING:
        return text
    if num is None:
        return None
    if dtype is DType.BOOL:
        return num != 0
    if dtype is DType.INT:
        return int(num)
    return num
