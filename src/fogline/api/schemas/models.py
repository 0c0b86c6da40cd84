"""Models, their mappings and deployments, and the library."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

from fogline.api.schemas.common import Out, Strict, Timestamp
from fogline.domain.errors import Problem
from fogline.domain.lifecycle import ModelState
from fogline.domain.models import (
    Direction,
    Mapping,
    ModelEventRecord,
    ModelMappings,
    ModelRecord,
    StoredModelDeadLetter,
)
from fogline.domain.timeseries import iso_from_ms
from fogline.library.catalog import LibraryModel
from fogline.models.manifest import MAX_VERSION_LENGTH, SEMVER_PATTERN, shown_manifest
from fogline.models.mappings import ColumnRenames, MappingRequest, ResolvedAsset

# -- models -----------------------------------------------------------------------------------


class ModelOut(Out):
    name: str
    version: str
    description: str | None
    state: ModelState
    state_reason: str | None
    inputs: list[str] = Field(description="the manifest's input columns")
    outputs: list[str] = Field(description="the manifest's output columns")
    manifest: dict[str, Any] = Field(description="as submitted; a registry password as '***'")
    created_at: Timestamp
    updated_at: Timestamp

    @classmethod
    def of(cls, m: ModelRecord) -> ModelOut:
        return cls(
            name=m.name,
            version=m.version,
            description=m.description,
            state=m.state,
            state_reason=m.state_reason,
            inputs=[t.name for t in m.templates if t.direction is Direction.INPUT],
            outputs=[t.name for t in m.templates if t.direction is Direction.OUTPUT],
            manifest=shown_manifest(m),
            created_at=iso_from_ms(m.created_at),
            updated_at=iso_from_ms(m.updated_at),
        )


class ModelEventOut(Out):
    id: int
    event: str
    from_state: str | None = Field(serialization_alias="from")
    to_state: str = Field(serialization_alias="to")
    reason: str | None
    at: Timestamp

    @classmethod
    def of(cls, e: ModelEventRecord) -> ModelEventOut:
        return cls(
            id=e.id,
            event=e.event,
            from_state=e.from_state,
            to_state=e.to_state,
            reason=e.reason,
            at=iso_from_ms(e.at),
        )


class UpdateBody(Strict):
    to_version: str = Field(max_length=MAX_VERSION_LENGTH, pattern=SEMVER_PATTERN)


class BackfillIn(Strict):
    asset: str = Field(min_length=1, max_length=200, description="a mapped asset")
    from_: str = Field(
        alias="from",
        min_length=1,
        max_length=64,
        description="epoch ms, ISO 8601, `now`, or relative like `-2h`",
    )
    to: str = Field(min_length=1, max_length=64, description="as `from`; the range is [from, to)")
    stateful_ok: bool = Field(
        False,
        description="run a stateful model anyway, knowing that its live state learns the old "
        "readings and the outputs are scored from its current state (refused with 409 without)",
    )


class BackfillOut(Out):
    """What a backfill did. Outputs are written as telemetry at the readings' own times;
    what was lost is in the model's dead letters."""

    asset: str
    start: int = Field(description="epoch ms, the range's start (inclusive)")
    end: int = Field(description="epoch ms, the range's end (exclusive)")
    readings_read: int = Field(description="stored readings of the model's inputs in the range")
    incomplete: int = Field(description="REAL_TIME: held back, an input not seen yet")
    windows: int = Field(description="TIME_WINDOW: windows (overlapping the range) scored")
    covered_windows: int = Field(
        description="TIME_WINDOW: windows not sent, every reading of theirs in an earlier window"
    )
    calls: int
    scored: int = Field(description="readings the model answered, each once")
    outputs_written: int
    outputs_overwritten: int = Field(
        description="output items written at an (asset, time) this backfill had written before"
    )
    refused_outputs: int
    dead_lettered: int = Field(description="readings whose call failed")
    dead_letters: int = Field(description="dead-letter records written")


class PackageOut(Out):
    files: list[str] = Field(description="the files of the package, as unpacked")


# -- mappings ---------------------------------------------------------------------------------

# The messages are those of every other problem of a mapping body, wherever it is found.
_TARGETS_RULE = "must be a list of ids or a mapping of id to columns"
_COLUMNS_RULE = "must be {'inputs': {...}, 'outputs': {...}}"
_UNKNOWN_KEY = "unknown key; use 'assets' and 'asset_types'"


def _as_targets(given: Any) -> Any:
    """A list of ids is each id with no column renamed."""
    if isinstance(given, list) and all(isinstance(target, str) for target in given):
        return {target: {} for target in given}
    if isinstance(given, dict):
        return given
    raise PydanticCustomError("mapping_targets", _TARGETS_RULE)


def _as_columns(given: Any) -> Any:
    if isinstance(given, dict) and set(given) <= {"inputs", "outputs"}:
        return given
    raise PydanticCustomError("mapping_columns", _COLUMNS_RULE)


class ColumnsIn(Strict):
    """The model's columns to bind to telemetry of another name: column -> telemetry. A column
    not named is bound to the telemetry of its own name."""

    inputs: dict[str, str] | None = None
    outputs: dict[str, str] | None = None

    def to_domain(self) -> ColumnRenames:
        return ColumnRenames(dict(self.inputs or {}), dict(self.outputs or {}))


Columns = Annotated[ColumnsIn, BeforeValidator(_as_columns)]
Targets = Annotated[
    dict[str, Columns],
    BeforeValidator(_as_targets, json_schema_input_type=list[str] | dict[str, ColumnsIn]),
    Field(
        description="ids (every column bound to the telemetry of its own name), or ids each "
        "with the columns bound to telemetry of another name"
    ),
]


class MappingsIn(BaseModel):
    """Every mapping of the model (what was there before is replaced), by asset and by asset
    type; a type's mappings reach every asset of the type, now and later."""

    # A key of its own is not refused here but told with the checks of the models context
    # (whether the assets, columns and telemetry exist), so that one answer lists every problem.
    model_config = ConfigDict(
        extra="allow", strict=True, json_schema_extra={"additionalProperties": False}
    )

    assets: Targets = Field(default_factory=dict)
    asset_types: Targets = Field(default_factory=dict)

    def unknown_keys(self) -> list[Problem]:
        return [Problem(key, _UNKNOWN_KEY) for key in self.model_extra or {}]

    def to_domain(self) -> MappingRequest:
        return MappingRequest(
            {target: columns.to_domain() for target, columns in self.assets.items()},
            {target: columns.to_domain() for target, columns in self.asset_types.items()},
        )


class ColumnsOut(Out):
    inputs: dict[str, str] = Field(description="column -> telemetry")
    outputs: dict[str, str] = Field(description="column -> telemetry")


class ResolvedAssetOut(Out):
    asset: str
    via: str = Field(description="`asset`, or `asset-type:<id>` for a type's mapping")
    inputs: dict[str, str]
    outputs: dict[str, str]

    @classmethod
    def of(cls, r: ResolvedAsset) -> ResolvedAssetOut:
        return cls(asset=r.asset, via=r.via, inputs=r.inputs, outputs=r.outputs)


def _by_target(mappings: tuple[Mapping, ...]) -> dict[str, ColumnsOut]:
    grouped: dict[str, ColumnsOut] = {}
    for m in mappings:
        columns = grouped.setdefault(m.target, ColumnsOut(inputs={}, outputs={}))
        (columns.inputs if m.direction is Direction.INPUT else columns.outputs)[m.column] = (
            m.telemetry
        )
    return grouped


class MappingsOut(Out):
    assets: dict[str, ColumnsOut]
    asset_types: dict[str, ColumnsOut]
    resolved: list[ResolvedAssetOut] = Field(
        description="every asset the model is fed from now, type mappings expanded"
    )

    @classmethod
    def of(cls, mappings: ModelMappings, resolved: list[ResolvedAsset]) -> MappingsOut:
        return cls(
            assets=_by_target(mappings.assets),
            asset_types=_by_target(mappings.asset_types),
            resolved=[ResolvedAssetOut.of(r) for r in resolved],
        )


# -- deployments ------------------------------------------------------------------------------


class SagaOut(Out):
    name: str
    status: str
    step: str | None
    detail: str | None


class RuntimeHealthOut(Out):
    last: str | None = Field(description="`ok`, or why the last check failed")
    failures: int = Field(description="failed restart attempts in a row, while recovering")
    restarts: int = Field(description="restarts since the deployment started on this platform")
    problem: str | None = Field(None, description="why the model is degraded now; null: well")
    restarts_in_window: int = Field(0, description="restarts within the monitor's window")
    next_backoff_s: float = Field(0.0, description="the wait before the last or next restart")


class LossCountOut(Out):
    records: int = Field(description="dead letters of this reason")
    readings: int = Field(description="readings they stand for (0 for an output value)")


class SagaStepOut(Out):
    saga: str
    step: str
    status: str
    attempt: int
    detail: str | None
    at: int = Field(description="epoch ms")


class StaleRequestOut(Out):
    request_id: str
    readings: int
    sent_at: int = Field(description="epoch ms")
    timed_out_at: int = Field(description="epoch ms")


class ModelDeadLetterOut(Out):
    """Readings a model's companion accepted but could not score, or one output value that
    could not be written, with the reason."""

    id: int
    at: int = Field(description="epoch ms")
    reason_code: str = Field(
        description="model-error, model-down, timeout, malformed-answer, "
        "refused-output, dropped-on-overload, discarded-at-stop, late or future"
    )
    detail_code: str | None = Field(description="for refused-output: why the value was refused")
    reason: str
    readings: int = Field(description="readings this record stands for (0: an output value)")
    request_id: str | None
    asset: str | None
    ts: int | None = Field(description="of the reading or output, when the record is about one")
    column: str | None = Field(description="the output column, for a refused output value")
    payload: str | None = Field(description="the original readings or value (JSON), clipped")

    @classmethod
    def of(cls, stored: StoredModelDeadLetter) -> ModelDeadLetterOut:
        d = stored.letter
        return cls(
            id=stored.id,
            at=d.at,
            reason_code=d.reason_code.value,
            detail_code=d.detail_code,
            reason=d.reason,
            readings=d.readings,
            request_id=d.request_id,
            asset=d.asset,
            ts=d.ts,
            column=d.column,
            payload=d.payload,
        )


class ModelDeadLettersOut(Out):
    items: list[ModelDeadLetterOut] = Field(description="newest first")
    next_before: int | None = Field(description="pass as `before` for the next (older) page")


class ModelLogOut(Out):
    lines: list[str] = Field(
        description="the last lines of the model process's stdout and stderr, oldest first"
    )


class DeploymentOut(Out):
    """What `DeploymentManager.describe` tells of a model's deployment."""

    state: ModelState
    state_reason: str | None
    saga: SagaOut | None
    runtime: dict[str, Any] | None = Field(description="where it runs, as its runtime says")
    health: RuntimeHealthOut | None
    companion: dict[str, Any] | None = Field(
        description="the data companion's counters; `readings` accounts for every reading it "
        "accepted: scored + dead_lettered + queued + in_flight = accepted"
    )
    dead_letters: dict[str, LossCountOut] = Field(
        default_factory=dict,
        description="the model's dead letters per reason, since it was submitted",
    )
    outputs_refused_by_historian: dict[str, int] = Field(
        default_factory=dict,
        description="output values the model gave that were published but refused when stored, "
        "per reason (e.g. device-telemetry); they are the tenant's dead letters with the "
        "device `model:<name>@<version>`",
    )
    steps: list[SagaStepOut]
    stale_requests: list[StaleRequestOut]


# -- the library ------------------------------------------------------------------------------


class ParameterOut(Out):
    type: str
    default: Any
    minimum: float | None = None
    maximum: float | None = None
    enum: list[Any] | None = None
    description: str | None = None


class LibraryEntryOut(Out):
    name: str
    version: str
    summary: str
    expects: str | None = Field(
        default=None,
        description="what the model expects of its inputs beyond their names (units, ranges, "
        "the machine it was trained on), where that matters",
    )
    trigger: str
    inputs: list[str]
    outputs: list[str]
    parameters: dict[str, ParameterOut] = Field(
        default_factory=dict, description="what can be set at import (`parameters`)"
    )

    @classmethod
    def of(cls, m: LibraryModel) -> LibraryEntryOut:
        manifest = m.manifest["manifest"]
        return cls(
            name=m.name,
            version=manifest["version"],
            summary=m.summary,
            expects=m.expects or None,
            trigger=manifest["trigger"]["type"],
            inputs=[c["dataColumnName"] for c in manifest["inputs"]],
            outputs=[c["dataColumnName"] for c in manifest["outputs"]],
            parameters={
                name: ParameterOut.model_validate(spec)
                for name, spec in (manifest.get("parameters") or {}).items()
            },
        )


class LibraryImportIn(Strict):
    parameters: dict[str, Any] = Field(
        default_factory=dict,
        description="values for the model's parameters (`GET /library/{name}` lists them); "
        "the rest keep their defaults",
    )
    version: str | None = Field(
        default=None,
        pattern=SEMVER_PATTERN,
        max_length=MAX_VERSION_LENGTH,
        description="the version to import as (the library's own by default): another one "
        "lets a tenant keep the same model with other parameters",
    )
