"""Turning a device's message into stored values and dead letters. Pure: no I/O.

A message is JSON: one reading `{"asset": "m1", "ts": 1700000000000, "values": {...}}`, a list
of readings, or `{"readings": [...]}`. `ts` is optional (the server's receive time is used).
Problems are kept as narrow as they can be: a bad value refuses that value, a bad reading that
reading, and only a message that cannot be read at all is refused whole. Everything valid around
a problem is stored. One message gives at most `max_dead_letters_per_message` dead letters; one
more record counts the rest, so a bad firmware cannot turn a message into thousands of rows.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from fogline.domain.assets import (
    INT_MIN,
    MAX_STRING_VALUE,
    UINT_MAX,
    AssetType,
    DType,
    TelemetryDefinition,
    value_matches,
)
from fogline.domain.telemetry import DeadLetter, DeadLetterReason, Reading, SourceKind
from fogline.domain.timeseries import (
    EARLIEST_TS_MS,
    MAX_FUTURE_SKEW_MS,
    reading_timestamp_problem,
)

_FLOAT = DType.FLOAT
_MODEL, _DEVICE = SourceKind.MODEL, SourceKind.DEVICE
_INF = float("inf")
DEAD_LETTER_PAYLOAD_LIMIT = 2048
# The widest asset and telemetry names a dead letter keeps (its SQL columns' width).
DEAD_LETTER_NAME_LIMIT = 200


@dataclass(frozen=True)
class IngestLimits:
    max_message_bytes: int = 256 * 1024
    max_readings_per_message: int = 10_000
    max_dead_letters_per_message: int = 100


class Unrepresentable:
    """A number JSON text may hold but no stored value can: NaN, Infinity, -Infinity (which
    some device libraries write), or an integer wider than 64 bits. It stands in for the value
    so that only that value is refused, not the message around it. (Not a dataclass: orjson
    would write those as objects; this one is written back as its own text.)"""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text

    @property
    def non_finite(self) -> bool:
        return self.text in ("NaN", "Infinity", "-Infinity")


def _marker_text(value: Any) -> str:
    if isinstance(value, Unrepresentable):
        return value.text
    raise TypeError


def _parse_int(text: str) -> int | Unrepresentable:
    value = int(text)
    return value if INT_MIN <= value <= UINT_MAX else Unrepresentable(text)


def _loads_lenient(payload: bytes) -> Any:
    """The message again, for when orjson (strict JSON) refused it: Python's parser also reads
    NaN and the infinities, which arrive as `Unrepresentable`. Anything else orjson refused
    (bad UTF-8, lone surrogates) stays refused: the result must be something orjson can write
    back, or the store could not keep it."""
    document = json.loads(
        payload.decode("utf-8"), parse_constant=Unrepresentable, parse_int=_parse_int
    )
    orjson.dumps(document, default=_marker_text)  # raises TypeError on what cannot be stored
    return document


def _safe(text: str) -> str:
    """Text a dead letter can keep in any database: PostgreSQL refuses NUL characters."""
    return text.replace("\x00", "\\u0000") if "\x00" in text else text


def _name(text: str | None) -> str | None:
    return None if text is None else _safe(text)[:DEAD_LETTER_NAME_LIMIT]


class SchemaLookup(Protocol):
    def device_known(self, tenant: str, device: str) -> bool: ...
    def asset_type_of(self, tenant: str, asset: str) -> AssetType | None: ...


@dataclass
class Outcome:
    readings: list[Reading] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    value_count: int = 0  # values that will be stored: one per asset, time and telemetry
    # Values that landed on the same asset, time and telemetry as a later one of the same
    # message (e.g. two readings without `ts`): one value is stored, so they are not counted.
    merged: int = 0

    def count_merged(self) -> None:
        """Count each (asset, ts, telemetry) once: what is stored, not what was sent."""
        if len(self.readings) < 2:
            return
        seen = {(r.asset, r.ts, name) for r in self.readings for name in r.values}
        self.merged = self.value_count - len(seen)
        self.value_count = len(seen)


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
            reason=_safe(reason),
            payload=payload,
            stream_seq=self.stream_seq,
            item=item,
            asset=_name(asset),
            telemetry=_name(telemetry),
        )


def clip_payload(raw: bytes | str) -> str:
    """At most 2 KiB of an offending payload, as text any database can keep."""
    text = (
        raw
        if isinstance(raw, str)
        else raw[: DEAD_LETTER_PAYLOAD_LIMIT * 4].decode("utf-8", errors="replace")
    )
    text = _safe(text)
    return (
        text if len(text) <= DEAD_LETTER_PAYLOAD_LIMIT else text[:DEAD_LETTER_PAYLOAD_LIMIT] + "…"
    )


def _dump(value: Any) -> str:
    try:
        return clip_payload(orjson.dumps(value, default=_marker_text))
    except TypeError:
        return clip_payload(repr(value))


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
            clip_payload(payload[:DEAD_LETTER_PAYLOAD_LIMIT]),
        )
    if not ctx.trusted_source and not lookup.device_known(ctx.tenant, ctx.device):
        return refuse(
            DeadLetterReason.UNKNOWN_DEVICE,
            f"device {ctx.device!r} is not registered in tenant {ctx.tenant!r}",
            clip_payload(payload),
        )
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        try:
            document = _loads_lenient(payload)
        except (ValueError, TypeError, RecursionError):
            return refuse(DeadLetterReason.NOT_JSON, f"not JSON: {exc}", clip_payload(payload))

    readings: Any
    if isinstance(document, list):
        readings = document
    elif isinstance(document, dict) and "readings" in document:
        readings = document["readings"]
        if not isinstance(readings, list):
            return refuse(
                DeadLetterReason.BAD_SHAPE, "'readings' must be a list", clip_payload(payload)
            )
    elif isinstance(document, dict):
        readings = [document]
    else:
        return refuse(
            DeadLetterReason.BAD_SHAPE,
            "a message is a reading object, a list of readings or {'readings': [...]}",
            clip_payload(payload),
        )
    if len(readings) > limits.max_readings_per_message:
        return refuse(
            DeadLetterReason.TOO_LARGE,
            f"{len(readings)} readings in one message; the limit is "
            f"{limits.max_readings_per_message}",
            clip_payload(payload),
        )
    batch = len(readings) > 1 or isinstance(document, list) or "readings" in document
    for index, reading in enumerate(readings):
        _validate_reading(ctx, index if batch else None, reading, lookup, outcome)
    outcome.count_merged()
    if len(outcome.dead_letters) > limits.max_dead_letters_per_message:
        _cap_dead_letters(ctx, outcome, limits.max_dead_letters_per_message)
    return outcome


def _cap_dead_letters(ctx: MessageContext, outcome: Outcome, keep: int) -> None:
    """The first `keep` dead letters of a message, and one record that counts the rest by reason
    and telemetry: what went wrong stays visible without a row per refused value."""
    rest = outcome.dead_letters[keep:]
    del outcome.dead_letters[keep:]
    by_reason = Counter(d.reason_code.value for d in rest)
    by_telemetry = Counter(d.telemetry for d in rest if d.telemetry is not None)
    assets = {d.asset for d in rest}
    summary = ", ".join(f"{code} {n}" for code, n in by_reason.most_common())
    detail = {
        "refused": len(rest),
        "by_reason": dict(by_reason.most_common()),
        "by_telemetry": dict(by_telemetry.most_common(20)),
        "first_item": rest[0].item,
        "last_item": rest[-1].item,
    }
    outcome.dead_letters.append(
        ctx.dead_letter(
            DeadLetterReason.CAPPED,
            f"{len(rest)} more refusals in this message are counted here, not kept one by one "
            f"(the first {keep} are): {summary}",
            clip_payload(orjson.dumps(detail)),
            asset=next(iter(assets)) if len(assets) == 1 else None,
        )
    )


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
        source = _MODEL if ctx.trusted_source else _DEVICE
        outcome.readings.append(Reading(ctx.tenant, asset_id, ts, accepted, source))
        outcome.value_count += len(accepted)


def value_problem(d: TelemetryDefinition, value: Any) -> tuple[DeadLetterReason | None, str]:
    if type(value) is Unrepresentable:
        if value.non_finite:
            return DeadLetterReason.WRONG_TYPE, (
                f"{d.name} must be a finite {d.dtype.value}, got {value.text}"
            )
        return DeadLetterReason.OUT_OF_RANGE, f"{d.name}={value.text} does not fit in 64 bits"
    if not value_matches(d.dtype, value):
        return DeadLetterReason.WRONG_TYPE, f"{d.name} must be a {d.dtype.value}, got {value!r}"
    if d.min is not None and value < d.min:
        return DeadLetterReason.OUT_OF_RANGE, f"{d.name}={value} is below its minimum {d.min}"
    if d.max is not None and value > d.max:
        return DeadLetterReason.OUT_OF_RANGE, f"{d.name}={value} is above its maximum {d.max}"
    if type(value) is str:
        if len(value) > MAX_STRING_VALUE:
            return DeadLetterReason.OUT_OF_RANGE, f"{d.name} is longer than {MAX_STRING_VALUE}"
        if "\x00" in value:
            # PostgreSQL's JSON cannot hold it; refused on every database alike.
            return DeadLetterReason.OUT_OF_RANGE, f"{d.name} contains a NUL character"
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
