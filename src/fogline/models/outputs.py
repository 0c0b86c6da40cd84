"""A model's outputs, written back as telemetry of the mapped assets: each value checked on its
own, published in chunks that the bus and the historian both take, and every value that is not
written given back with the reason, so that the companion can dead-letter it.

- A value is refused alone; the other values of its output are written. NaN and the
  infinities are refused (JSON has no such number: orjson would write null); a `readAsString`
  column takes text only and any other column a number or a boolean (a boolean because such a
  column may be bound to a bool telemetry; the historian checks the telemetry's own type). No
  value is ever converted: not a number to text, not the text "1.5" to a number, and never
  anything to its Python repr.
- An output's `ts` must be the time of one of the readings of its asset in the request that
  it answers (an asynchronous model cannot write at any past time); an output without `ts`
  takes its asset's reading's time when the request held exactly one.
- Chunks are measured as they are built: each is under both the bus's largest message and the
  platform's `max_message_bytes`. A value that cannot fit in any message on its own is refused
  `too-large`; nothing else is lost with it.
- `written` counts what JetStream acknowledged, nothing else: a chunk that could not be
  published after the bus's retries is given back value by value as `publish-failed`.
"""

from __future__ import annotations

import json
import logging
import math
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson

from fogline.bus.connection import Bus
from fogline.bus.errors import BrokerUnavailable, BusError
from fogline.domain.assets import INT_MIN, MAX_STRING_VALUE, UINT_MAX
from fogline.models.mappings import ResolvedAsset
from fogline.models.runtimes.base import ModelSpec

log = logging.getLogger(__name__)

# Readings per published message at most (the historian takes up to 10,000 in one).
OUTPUT_CHUNK = 1000
# Bytes of the bus's largest message kept for the message's headers (its id).
HEADER_ROOM = 1024
# The most of a refused value a dead letter keeps, as JSON text.
VALUE_TEXT_LIMIT = 2048
NAME_LIMIT = 64  # the widest asset or column name a refusal keeps
_OPEN, _CLOSE = b'{"readings":[', b"]}"
_FRAME = len(_OPEN) + len(_CLOSE)


class OutputRefusal(StrEnum):
    """Why an output value (or a whole output item) was not written."""

    NOT_FINITE = "not-finite"
    WRONG_TYPE = "wrong-type"
    TOO_LARGE = "too-large"
    UNMAPPED = "unmapped"
    BAD_TIMESTAMP = "bad-timestamp"
    PUBLISH_FAILED = "publish-failed"
    MALFORMED = "malformed"


@dataclass(frozen=True)
class RefusedOutput:
    """One refused value, or a whole refused output item (`column` None). `value` is the
    original as JSON text (NaN stays "NaN", a string keeps its quotes), clipped to 2 KiB."""

    reason_code: str
    reason: str
    asset: str | None
    ts: int | None
    column: str | None  # the model's output column
    value: str | None
    telemetry: str | None = None  # what the column is mapped to, when it is

    def __post_init__(self) -> None:
        # An asset or column a model made up is kept as a name any store can hold.
        for name in ("asset", "column"):
            text = getattr(self, name)
            if text is not None and (len(text) > NAME_LIMIT or "\x00" in text):
                object.__setattr__(self, name, text.replace("\x00", "")[:NAME_LIMIT])


@dataclass(frozen=True)
class OutputResult:
    written: int  # values JetStream acknowledged
    refused: list[RefusedOutput]
    written_at: list[tuple[str, int]] = field(default_factory=list)  # (asset, ts) per item


Allowed = dict[str, set[int]]  # asset -> the times of its readings in the request


def allowed_timestamps(readings: list[dict[str, Any]]) -> Allowed:
    """What outputs to the request holding `readings` may be written at."""
    allowed: Allowed = {}
    for reading in readings:
        allowed.setdefault(reading["asset"], set()).add(reading["ts"])
    return allowed


def load_answer(content: bytes | str) -> Any:
    """A model's answer read as JSON. NaN and the infinities, which Python models easily write,
    are read as the floats they are (orjson would refuse the whole answer), so that each is
    refused as one value, and kept. Raises ValueError when it is not JSON."""
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        try:
            return json.loads(content)
        except RecursionError:
            raise ValueError("the answer is nested too deeply") from None


def value_text(value: Any) -> str:
    """A refused value as a dead letter keeps it: its JSON, NaN and the infinities as written."""
    if isinstance(value, str) and len(value) > VALUE_TEXT_LIMIT:
        value = value[:VALUE_TEXT_LIMIT]  # not the whole of a 5 MB string, only to clip it
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        text = f"<{type(value).__name__}>"
    return text if len(text) <= VALUE_TEXT_LIMIT else text[:VALUE_TEXT_LIMIT] + "…"


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    return "an object" if isinstance(value, dict) else "an array"


def value_problem(value: Any, as_string: bool) -> tuple[OutputRefusal, str] | None:
    """Why `value` cannot be written to a column (`as_string`: a readAsString column)."""
    kind = type(value)
    if as_string:
        if kind is not str:
            return OutputRefusal.WRONG_TYPE, (
                f"a readAsString column takes text; got {_json_kind(value)} (never converted)"
            )
        if len(value) > MAX_STRING_VALUE:
            return OutputRefusal.TOO_LARGE, (
                f"text of {len(value)} characters; a telemetry keeps at most {MAX_STRING_VALUE}"
            )
        if "\x00" in value:
            return OutputRefusal.WRONG_TYPE, "text with a NUL character cannot be stored"
        return None
    if kind is bool:
        return None
    if kind is int:
        if INT_MIN <= value <= UINT_MAX:
            return None
        return OutputRefusal.TOO_LARGE, "an integer wider than 64 bits cannot be stored"
    if kind is float:
        if math.isfinite(value):
            return None
        return OutputRefusal.NOT_FINITE, f"{value_text(value)} is not a finite number"
    got = _json_kind(value)
    if kind is str:
        got = f"the text {value_text(value)} (text is never read as a number)"
    return OutputRefusal.WRONG_TYPE, f"a numeric column takes a number or a boolean; got {got}"


@dataclass
class _Piece:
    """One reading as it will be published: its values (column, telemetry, value) and JSON."""

    asset: str
    ts: int
    values: list[tuple[str, str, Any]]
    encoded: bytes


@dataclass
class OutputChunk:
    """One message to publish."""

    pieces: list[_Piece] = field(default_factory=list)
    size: int = _FRAME

    def payload(self) -> bytes:
        return _OPEN + b",".join(p.encoded for p in self.pieces) + _CLOSE

    @property
    def values(self) -> int:
        return sum(len(p.values) for p in self.pieces)


def _encode(asset: str, ts: int, values: list[tuple[str, str, Any]]) -> bytes:
    return orjson.dumps({"asset": asset, "ts": ts, "values": {t: v for _, t, v in values}})


def _chunks(pieces: list[_Piece], budget: int) -> Iterator[OutputChunk]:
    """The pieces in order, in as few messages of at most `budget` bytes as they fit."""
    chunk = OutputChunk()
    for piece in pieces:
        grown = chunk.size + len(piece.encoded) + (1 if chunk.pieces else 0)
        if chunk.pieces and (grown > budget or len(chunk.pieces) >= OUTPUT_CHUNK):
            yield chunk
            chunk = OutputChunk()
            grown = chunk.size + len(piece.encoded)
        chunk.pieces.append(piece)
        chunk.size = grown
    if chunk.pieces:
        yield chunk


@dataclass
class OutputPlan:
    """An answer checked: the chunks to publish, and what was refused before publishing."""

    chunks: list[OutputChunk]
    refused: list[RefusedOutput]


class OutputPlanner:
    """Checks an answer value by value and packs what may be written into messages of at most
    `budget` bytes. `as_string`: output column -> readAsString. No I/O."""

    def __init__(self, as_string: dict[str, bool], budget: int) -> None:
        self.as_string = as_string
        self.budget = budget

    def plan(self, answer: Any, allowed: Allowed, mappings: dict[str, ResolvedAsset]) -> OutputPlan:
        outputs = answer.get("outputs") if isinstance(answer, dict) else None
        if not isinstance(outputs, list):
            refusal = RefusedOutput(
                OutputRefusal.MALFORMED,
                "the model's answer has no 'outputs' list",
                None,
                None,
                None,
                value_text(answer),
            )
            return OutputPlan([], [refusal])
        refused: list[RefusedOutput] = []
        pieces: list[_Piece] = []
        for output in outputs:
            pieces += self._pieces(output, allowed, mappings, refused)
        return OutputPlan(list(_chunks(pieces, self.budget)), refused)

    def _pieces(
        self,
        output: Any,
        allowed: Allowed,
        mappings: dict[str, ResolvedAsset],
        refused: list[RefusedOutput],
    ) -> list[_Piece]:
        """One output item as pieces to publish; what cannot be written goes to `refused`."""
        asset = output.get("asset") if isinstance(output, dict) else None
        if not isinstance(asset, str) or not isinstance(output.get("values"), dict):
            refused.append(
                RefusedOutput(
                    OutputRefusal.MALFORMED,
                    "an output is an object with 'asset' (text) and a 'values' object",
                    asset if isinstance(asset, str) else None,
                    None,
                    None,
                    value_text(output),
                )
            )
            return []
        mapping = mappings.get(asset)
        if mapping is None:
            refused.append(
                RefusedOutput(
                    OutputRefusal.UNMAPPED,
                    f"asset {asset!r} is not mapped to this model",
                    asset,
                    output["ts"] if type(output.get("ts")) is int else None,
                    None,
                    value_text(output["values"]),
                )
            )
            return []
        ts, problem = _timestamp(output.get("ts"), allowed.get(asset, set()))
        if ts is None:
            refused.append(
                RefusedOutput(
                    OutputRefusal.BAD_TIMESTAMP,
                    problem,
                    asset,
                    output.get("ts") if type(output.get("ts")) is int else None,
                    None,
                    value_text(output["values"]),
                )
            )
            return []
        values: list[tuple[str, str, Any]] = []
        for column, value in output["values"].items():
            telemetry = mapping.outputs.get(column)
            if telemetry is None:
                why = f"output column {column!r} is not mapped for asset {asset!r}"
                refused.append(
                    RefusedOutput(OutputRefusal.UNMAPPED, why, asset, ts, column, value_text(value))
                )
                continue
            found = value_problem(value, self.as_string.get(column, False))
            if found is not None:
                code, why = found
                refused.append(
                    RefusedOutput(code, why, asset, ts, column, value_text(value), telemetry)
                )
                continue
            values.append((column, telemetry, value))
        return self._fitted(asset, ts, values, refused) if values else []

    def _fitted(
        self, asset: str, ts: int, values: list[tuple[str, str, Any]], refused: list[RefusedOutput]
    ) -> list[_Piece]:
        """The values of one output as one reading, or, when that is too large for a message,
        as readings of one value each (the historian merges them again: same asset and time);
        a value too large for a message on its own is refused."""
        try:
            encoded = _encode(asset, ts, values)
            if len(encoded) + _FRAME <= self.budget:
                return [_Piece(asset, ts, values, encoded)]
        except TypeError:  # text orjson cannot write (a lone surrogate): find which value
            pass
        pieces = []
        for value in values:
            column, telemetry, raw = value
            try:
                encoded = _encode(asset, ts, [value])
            except TypeError:
                refused.append(
                    RefusedOutput(
                        OutputRefusal.WRONG_TYPE,
                        "text that is not valid Unicode cannot be stored",
                        asset,
                        ts,
                        column,
                        value_text(raw),
                        telemetry,
                    )
                )
                continue
            if len(encoded) + _FRAME > self.budget:
                refused.append(
                    RefusedOutput(
                        OutputRefusal.TOO_LARGE,
                        f"this value alone is {len(encoded)} bytes written; one message holds "
                        f"at most {self.budget} (the bus's largest message and the platform's "
                        "max_message_bytes)",
                        asset,
                        ts,
                        column,
                        value_text(raw),
                        telemetry,
                    )
                )
                continue
            pieces.append(_Piece(asset, ts, [value], encoded))
        return pieces


class OutputWriter:
    """Writes one model version's answers back as telemetry (see the module's doc)."""

    def __init__(
        self,
        spec: ModelSpec,
        bus: Bus,
        max_message_bytes: int,
        publish_deadline_s: float | None = None,
    ) -> None:
        self.spec = spec
        self.bus = bus
        # What one message may hold: the bus takes it, and the historian does not refuse it.
        self.planner = OutputPlanner(
            {c.data_column_name: c.read_as_string for c in spec.manifest.outputs},
            min(max_message_bytes, bus.max_payload - HEADER_ROOM),
        )
        self.publish_deadline_s = publish_deadline_s

    async def write(
        self, answer: Any, allowed: Allowed, mappings: dict[str, ResolvedAsset]
    ) -> OutputResult:
        """Check every value of `answer`, publish the good ones, give back the rest."""
        plan = self.planner.plan(answer, allowed, mappings)
        refused = plan.refused
        written = 0
        written_at: list[tuple[str, int]] = []
        for chunk in plan.chunks:
            published = await self._publish(chunk, refused)
            written += published
            if published:
                written_at += [(piece.asset, piece.ts) for piece in chunk.pieces]
        if refused:
            by_reason: dict[str, int] = {}
            for r in refused:
                by_reason[r.reason_code] = by_reason.get(r.reason_code, 0) + 1
            log.warning(
                "companion.outputs_refused",
                extra={"fields": {"model": self.spec.key, "written": written, **by_reason}},
            )
        return OutputResult(written, refused, written_at)

    async def _publish(self, chunk: OutputChunk, refused: list[RefusedOutput]) -> int:
        """Publish one chunk: the number of values written, or 0 with each of its values
        given back as `publish-failed`."""
        try:
            await self.bus.publish_model_outputs(
                self.spec.tenant,
                self.spec.name,
                self.spec.version,
                chunk.payload(),
                uuid.uuid4().hex,
                self.publish_deadline_s,
            )
            return chunk.values
        except (BusError, BrokerUnavailable, TimeoutError) as exc:
            reason = f"publishing the outputs failed: {exc}"
            log.error(
                "companion.write_failed",
                extra={
                    "fields": {"model": self.spec.key, "values": chunk.values, "error": str(exc)}
                },
            )
        for piece in chunk.pieces:
            for column, telemetry, value in piece.values:
                refused.append(
                    RefusedOutput(
                        OutputRefusal.PUBLISH_FAILED,
                        reason,
                        piece.asset,
                        piece.ts,
                        column,
                        value_text(value),
                        telemetry,
                    )
                )
        return 0


def _timestamp(ts: Any, allowed: set[int]) -> tuple[int | None, str]:
    """The time an output is written at, or None and why it cannot be."""
    if ts is None:
        if len(allowed) == 1:
            return next(iter(allowed)), ""
        return None, (
            f"the output has no 'ts' and its asset had {len(allowed)} readings in the request: "
            "which one it answers is not known"
        )
    if type(ts) is not int:
        return None, f"'ts' must be an integer (ms), got {value_text(ts)}"
    if ts not in allowed:
        return None, (
            f"ts {ts} is not the time of a reading of this asset in the request it answers; "
            "a model writes only at the times of the readings it was sent"
        )
    return ts, ""
