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
from fogline.domain.telemetry import DeadLetter, DeadLetterReason, Reading
from fogline.domain.timeseries import (
    EARLIEST_TS_MS,
    MAX_FUTURE_SKEW_MS,
    reading_timestamp_problem,
)

MAX_STRING_VALUE = 4096
_FLOAT = DType.FLOAT
_INF = float("inf")
DEAD_LETTER_PAYLOAD_LIMIT = 2048


@dataclass(frozen=True)
class IngestLimits:
    max_message_bytes: int = 256 * 1024
    max_readings_per_message: int = 10_000


class SchemaLookup(Protocol):
    def device_known(self, tenant: str, device: str) -> bool: ...
    def asset_type_of(self, tenant: str, asset: str) -> AssetType | None: ...


@dataclass
class Outcome:
    readings: list[Reading] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    value_count: int = 0


@dataclass(frozen=True)
class MessageContext:
    tenant: str
    device: str
    received_at: int
    stream_seq: int | None = None
    # Model outputs come from the platform itself (only it may publish on those subjects).
    trusted_source: bool = False

    def dead_letter(
        self,
        code: DeadLetterReason,
        reason: str,
        payload: str | None,
        item: int | None = None,
        asset: str | None = None,
        telemetry: str | None = None,
    ) -> DeadLetter:
        """A refusal of this message, or of one of its readings or values."""
        return DeadLetter(
            tenant=self.tenant,
            device=self.device,
            received_at=self.received_at,
            reason_code=code,
            reason=reason,
            payload=payload,
            stream_seq=self.stream_seq,
            item=item,
            asset=asset,
            telemetry=telemetry,
        )


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
        outcome.dead_letters.append(ctx.dead_letter(code, reason, raw))
        return outcome

    if len(payload) > limits.max_message_bytes:
        return refuse(
            DeadLetterReason.TOO_LARGE,
            f"message is {len(payload)} bytes; the limit is {limits.max_message_bytes}",
            _clip(payload[:DEAD_LETTER_PAYLOAD_LIMIT]),
        )
    if not ctx.trusted_source and not lookup.device_known(ctx.tenant, ctx.device):
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


def _refuse_reading(
    ctx: MessageContext,
    item: int | None,
    reading: Any,
    outcome: Outcome,
    code: DeadLetterReason,
    reason: str,
    asset: str | None = None,
    name: str | None = None,
) -> None:
    payload = _dump(reading if name is None else {name: reading["values"][name]})
    outcome.dead_letters.append(ctx.dead_letter(code, reason, payload, item, asset, name))


def _validate_reading(
    ctx: MessageContext, item: int | None, reading: Any, lookup: SchemaLookup, outcome: Outcome
) -> None:
    if type(reading) is not dict:
        return _refuse_reading(
            ctx,
            item,
            reading,
            outcome,
            DeadLetterReason.BAD_SHAPE,
            "a reading must be a JSON object",
        )
    asset_id = reading.get("asset")
    if type(asset_id) is not str or not asset_id:
        return _refuse_reading(
            ctx,
            item,
            reading,
            outcome,
            DeadLetterReason.BAD_SHAPE,
            "a reading must name its 'asset'",
        )
    values = reading.get("values")
    if type(values) is not dict or not values:
        return _refuse_reading(
            ctx,
            item,
            reading,
            outcome,
            DeadLetterReason.BAD_SHAPE,
            "a reading needs a non-empty 'values' object",
            asset_id,
        )
    asset_type = lookup.asset_type_of(ctx.tenant, asset_id)
    if asset_type is None:
        return _refuse_reading(
            ctx,
            item,
            reading,
            outcome,
            DeadLetterReason.UNKNOWN_ASSET,
            f"asset {asset_id!r} does not exist in tenant {ctx.tenant!r}",
            asset_id,
        )
    raw_ts = reading.get("ts")
    if raw_ts is None:
        ts = ctx.received_at
    elif type(raw_ts) is int and EARLIEST_TS_MS <= raw_ts <= ctx.received_at + MAX_FUTURE_SKEW_MS:
        ts = raw_ts  # the common case, decided without the general parser
    else:
        parsed, problem = reading_timestamp_problem(raw_ts, ctx.received_at)
        if parsed is None:
            return _refuse_reading(
                ctx,
                item,
                reading,
                outcome,
                DeadLetterReason.BAD_TIMESTAMP,
                problem or "bad timestamp",
                asset_id,
            )
        ts = parsed

    definitions = asset_type.definitions
    accepted: dict[str, Any] = {}
    for name, value in values.items():
        d = definitions.get(name)
        if d is None:
            _refuse_reading(
                ctx,
                item,
                reading,
                outcome,
                DeadLetterReason.UNKNOWN_TELEMETRY,
                f"asset type {asset_type.id!r} defines no telemetry {name!r}",
                asset_id,
                name,
            )
            continue
        # The common case inline: a finite number within range for a float telemetry.
        kind = type(value)
        if (
            d.dtype is _FLOAT
            and (kind is int or (kind is float and -_INF < value < _INF))
            and (d.min is None or value >= d.min)
            and (d.max is None or value <= d.max)
        ):
            accepted[name] = value
            continue
        problem_code, problem = value_problem(d, value)
        if problem_code is not None:
            _refuse_reading(ctx, item, reading, outcome, problem_code, problem, asset_id, name)
            continue
        accepted[name] = value
    if accepted:
        outcome.readings.append(Reading(ctx.tenant, asset_id, ts, accepted))
        outcome.value_count += len(accepted)


def value_problem(d: TelemetryDefinition, value: Any) -> tuple[DeadLetterReason | None, str]:
    if not value_matches(d.dtype, value):
        return DeadLetterReason.WRONG_TYPE, f"{d.name} must be a {d.dtype.value}, got {value!r}"
    if d.min is not None and value < d.min:
        return DeadLetterReason.OUT_OF_RANGE, f"{d.name}={value} is below its minimum {d.min}"
    if d.max is not None and value > d.max:
        return DeadLetterReason.OUT_OF_RANGE, f"{d.name}={value} is above its maximum {d.max}"
    if type(value) is str and len(value) > MAX_STRING_VALUE:
        return DeadLetterReason.OUT_OF_RANGE, f"{d.name} is longer than {MAX_STRING_VALUE}"
    return None, ""


def decode_value(dtype: DType, value: Any) -> Any:
    """A stored JSON value back to its dtype: SQL engines may hand back 1/0 for booleans and
    3.0 for ints."""
    if value is None:
        return None
    if dtype is DType.BOOL:
        return bool(value)
    if dtype is DType.INT:
        return int(value)
    if dtype is DType.FLOAT:
        return float(value)
    return value
