"""The model manifest (JSON or YAML), checked in full: every problem at once, each with its
field path, before anything is stored.

The shape follows the design guide; field names are the manifest's own camelCase. One addition:
`model.local`, the start command of a model that Fogline runs as a local process.
"""

from __future__ import annotations

import contextlib
import copy
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fogline.domain.errors import InvalidInput, Problem
from fogline.domain.ids import slug_problem
from fogline.domain.models import ModelRecord

REDACTED = "***"
# ASCII digits only (Python's \d takes any script's); the API schema says the same.
SEMVER_PATTERN = r"^[0-9]+\.[0-9]+\.[0-9]+(?:[-+][0-9A-Za-z.-]+)?$"
MAX_VERSION_LENGTH = 64
_SEMVER = re.compile(SEMVER_PATTERN)
_URL = re.compile(r"^(https?|amqps?)://[^\s/]+")


class TriggerType(Enum):
    REAL_TIME = "REAL_TIME"
    TIME_WINDOW = "TIME_WINDOW"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class CustomRegistry(_Strict):
    registry: str = Field(min_length=1)
    username: str | None = None
    password: str | None = None  # a secret: encrypted at rest, never shown again


class Container(_Strict):
    image: str = Field(min_length=1)
    tag: str = "latest"
    custom_registry: CustomRegistry | None = Field(default=None, alias="customRegistry")


class Limits(_Strict):
    """What the local runtime lets a model use: memory per process (address space), CPUs,
    processes, disk (its package and its state together), open files and the size of one
    file. Each is capped by the operator (LimitCaps), checked at submit and at deploy."""

    memory_mb: int = Field(default=1024, ge=64, alias="memoryMb")
    cpus: int = Field(default=1, ge=1)
    processes: int = Field(default=64, ge=1)
    disk_mb: int = Field(default=512, ge=16, alias="diskMb")
    open_files: int = Field(default=1024, ge=16, alias="openFiles")
    file_size_mb: int = Field(default=256, ge=1, alias="fileSizeMb")


@dataclass(frozen=True)
class LimitCaps:
    """The most a manifest may ask for: the operator's settings."""

    memory_mb: int = 4096
    cpus: int = 2
    processes: int = 256
    disk_mb: int = 2048
    open_files: int = 4096
    file_size_mb: int = 1024

    def problems(self, limits: Limits) -> list[Problem]:
        asked = {
            "memoryMb": (limits.memory_mb, self.memory_mb, "model_max_memory_mb"),
            "cpus": (limits.cpus, self.cpus, "model_max_cpus"),
            "processes": (limits.processes, self.processes, "model_max_processes"),
            "diskMb": (limits.disk_mb, self.disk_mb, "model_max_disk_mb"),
            "openFiles": (limits.open_files, self.open_files, "model_max_open_files"),
            "fileSizeMb": (limits.file_size_mb, self.file_size_mb, "model_max_file_size_mb"),
        }
        return [
            Problem(
                f"manifest.model.local.limits.{name}",
                f"{value} is over this platform's limit of {cap} (the operator's {setting})",
            )
            for name, (value, cap, setting) in asked.items()
            if value > cap
        ]


ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
# Names a manifest may not set: the loader's, the interpreter's, the shell's and the platform's.
ENV_REFUSED_PREFIXES = ("LD_", "PYTHON", "FOGLINE_", "DYLD_", "GCONV_", "MALLOC_", "BASH_FUNC")
ENV_REFUSED = frozenset(
    {"PATH", "HOME", "VIRTUAL_ENV", "TMPDIR", "IFS", "ENV", "BASH_ENV", "SHELL", "NLSPATH"}
)


def env_problems(env: dict[str, str]) -> list[Problem]:
    """A manifest's env holds plain settings for the model, never what changes how a program
    is loaded or what the platform itself sets."""
    problems = []
    for name, value in env.items():
        where = f"manifest.model.local.env.{name}"
        if not ENV_NAME.match(name):
            problems.append(Problem(where, "not a plain variable name ([A-Za-z_][A-Za-z0-9_]*)"))
        elif name.upper() in ENV_REFUSED or name.upper().startswith(ENV_REFUSED_PREFIXES):
            problems.append(
                Problem(
                    where,
                    "the platform sets this kind of variable itself; a manifest may not "
                    "(PATH, HOME, LD_*, PYTHON*, FOGLINE_* and the like)",
                )
            )
        elif "\x00" in value or len(value) > 4096:
            problems.append(Problem(where, "at most 4096 characters, no NUL"))
    return problems


class LocalProcess(_Strict):
    """How the local runtime starts the model: a command run in the model's package directory
    ("python" means the model's own interpreter), its own requirements, limits and env."""

    command: list[str] = Field(min_length=1)
    requirements: str | None = None  # a requirements file in the package: own virtualenv
    env: dict[str, str] = Field(default_factory=dict)
    limits: Limits = Field(default_factory=Limits)


class ModelSection(_Strict):
    type: Literal["http", "amqp"] = "http"
    score_endpoint: str = Field(default="/score", alias="scoreEndpoint")
    health_check_endpoint: str = Field(default="/health", alias="healthCheckEndpoint")
    hosted: Literal["internal", "external"] = "internal"
    url: str | None = None
    stateful: bool = False
    is_async: bool = Field(default=False, alias="async")
    container: Container | None = None
    local: LocalProcess | None = None
    timeout_ms: int = Field(default=10_000, ge=100, le=600_000, alias="timeoutMs")
    # How many calls the model serves at once (a stateless model only; a stateful one is
    # always called one at a time). The companion never has more in flight, and the SDK's
    # server runs this many workers: no call waits inside the model, so none times out there.
    concurrency: int = Field(default=1, ge=1, le=32)


DEFAULT_ALLOWED_LATENESS_MS = 10_000
DEFAULT_IDLE_TIMEOUT_MS = 30_000
MAX_LATENESS_MS = 86_400_000  # a day: readings older than that past the newest are late anyway
MAX_WINDOWS_PER_READING = 100  # timeWindowSize / frequency: how many windows hold one reading


class Trigger(_Strict):
    """REAL_TIME, or TIME_WINDOW on the readings' own times (event time, see
    `models.windows`): windows of `timeWindowSize` ms starting every `frequency` ms (tumbling
    when equal, sliding when smaller), closed when the asset's newest reading time minus
    `allowedLateness` passes their end, or when the asset has sent nothing for `idleTimeout`
    ms of wall-clock time."""

    type: TriggerType
    frequency: int | None = Field(default=None, description="ms, TIME_WINDOW only")
    time_window_size: int | None = Field(default=None, alias="timeWindowSize")
    allowed_lateness: int | None = Field(default=None, alias="allowedLateness")
    idle_timeout: int | None = Field(default=None, alias="idleTimeout")

    @property
    def lateness_ms(self) -> int:
        return (
            DEFAULT_ALLOWED_LATENESS_MS if self.allowed_lateness is None else self.allowed_lateness
        )

    @property
    def idle_ms(self) -> int:
        return DEFAULT_IDLE_TIMEOUT_MS if self.idle_timeout is None else self.idle_timeout


ParameterType = Literal["number", "integer", "boolean", "string"]
PARAMETER_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
MAX_PARAMETERS = 64
MAX_PARAMETER_TEXT = 1024


class Parameter(_Strict):
    """One setting the model reads at start (`fogline.sdk.parameters()`): its type, its
    default, the value this version runs with (the default when absent), and what it trades.
    A new value is a new version: what was scored with which settings stays known."""

    type: ParameterType
    default: Any
    value: Any = None
    minimum: float | None = None
    maximum: float | None = None
    enum: list[Any] | None = None
    description: str | None = Field(default=None, max_length=2000)

    @property
    def effective(self) -> Any:
        return self.default if self.value is None else self.value


class Column(_Strict):
    data_column_name: str = Field(alias="dataColumnName")
    read_as_string: bool = Field(default=False, alias="readAsString")


class ManifestBody(_Strict):
    name: str
    version: str
    description: str | None = None
    model: ModelSection
    trigger: Trigger
    inputs: list[Column]
    outputs: list[Column]
    parameters: dict[str, Parameter] = Field(default_factory=dict)

    def parameter_values(self) -> dict[str, Any]:
        """What the model gets at start: each parameter's value, or its default."""
        return {name: p.effective for name, p in self.parameters.items()}


class Manifest(_Strict):
    manifest: ManifestBody

    def public(self) -> dict[str, Any]:
        """The manifest as the API shows it: the registry password replaced by a marker."""
        data = self.model_dump(by_alias=True, mode="json")
        registry = (data["manifest"]["model"].get("container") or {}).get("customRegistry")
        if registry and registry.get("password") is not None:
            registry["password"] = REDACTED
        return data

    @property
    def registry_password(self) -> str | None:
        container = self.manifest.model.container
        if container and container.custom_registry:
            return container.custom_registry.password
        return None

    def without_secrets(self) -> dict[str, Any]:
        data = self.model_dump(by_alias=True, mode="json")
        registry = (data["manifest"]["model"].get("container") or {}).get("customRegistry")
        if registry:
            registry.pop("password", None)
        return data


def shown_manifest(model: ModelRecord) -> dict[str, Any]:
    """A stored manifest (kept without secrets) as the API shows it: where a registry password
    is set, a marker says so, never what it is."""
    manifest = copy.deepcopy(model.manifest)
    if model.has_registry_password:
        manifest["manifest"]["model"]["container"]["customRegistry"]["password"] = REDACTED
    return manifest


def parse_manifest(text: str | bytes, caps: LimitCaps | None = None) -> Manifest:
    """JSON or YAML to a checked manifest, or InvalidInput listing every problem."""
    try:
        document = yaml.safe_load(text)  # YAML is a superset of JSON
    except yaml.YAMLError as exc:
        raise InvalidInput.of([Problem("", f"not JSON or YAML: {exc}")], "manifest") from None
    return check_manifest(document, caps)


def check_manifest(document: Any, caps: LimitCaps | None = None) -> Manifest:
    if isinstance(document, dict) and "manifest" not in document and "name" in document:
        document = {"manifest": document}  # the bare body is accepted too
    try:
        manifest = Manifest.model_validate(document)
    except ValidationError as exc:
        problems = [Problem(".".join(str(p) for p in e["loc"]), e["msg"]) for e in exc.errors()]
        reported = {p.field for p in problems}
        problems += [
            p
            for p in _readable_part_problems(document, caps)
            if not any(p.field == r or p.field.startswith(f"{r}.") for r in reported)
        ]
        raise InvalidInput.of(problems, "manifest") from None
    problems = _semantic_problems(manifest.manifest)
    local = manifest.manifest.model.local
    if caps is not None and local is not None:
        problems += caps.problems(local.limits)  # with the rest: every problem at once
    if problems:
        raise InvalidInput.of(problems, "manifest")
    return manifest


def _semantic_problems(m: ManifestBody) -> list[Problem]:
    return (
        _identity_problems(m.name, m.version)
        + _model_problems(m.model)
        + _trigger_problems(m.trigger)
        + _column_problems("inputs", list(enumerate(m.inputs)), empty=not m.inputs)
        + _column_problems("outputs", list(enumerate(m.outputs)), empty=not m.outputs)
        + parameter_problems(m.parameters)
    )


def _identity_problems(name: str, version: str) -> list[Problem]:
    p: list[Problem] = []
    if (slug := slug_problem(name, "manifest.name")) is not None:
        p.append(slug)
    return p + _version_problems(version)


def _version_problems(version: str) -> list[Problem]:
    if not _SEMVER.fullmatch(version) or len(version) > MAX_VERSION_LENGTH:
        return [
            Problem(
                "manifest.version",
                f"{version[:80]!r} is not a version like 1.0.0 "
                f"(at most {MAX_VERSION_LENGTH} characters)",
            )
        ]
    return []


def _model_problems(
    model: ModelSection, unread: frozenset[str] | set[str] = frozenset()
) -> list[Problem]:
    """The rules of the model section; those that depend on a field in `unread` (one pydantic
    refused, its default standing in) are left out, except the endpoints' (checked unless the
    model is known to be amqp)."""
    p: list[Problem] = []
    if model.type == "http":
        for field, value in (
            ("scoreEndpoint", model.score_endpoint),
            ("healthCheckEndpoint", model.health_check_endpoint),
        ):
            if not value.startswith("/"):
                p.append(Problem(f"manifest.model.{field}", "must be a path starting with '/'"))
    if {"stateful", "concurrency"} & unread:
        pass
    elif model.stateful and model.concurrency > 1:
        p.append(
            Problem(
                "manifest.model.concurrency",
                "a stateful model is called one call at a time, in order; drop concurrency",
            )
        )
    if {"hosted", "url"} & unread:
        pass
    elif model.hosted == "external":
        if not model.url:
            p.append(Problem("manifest.model.url", "an external model needs its url"))
        elif not _URL.match(model.url):
            p.append(Problem("manifest.model.url", f"{model.url!r} is not an http(s) or amqp URL"))
    else:
        if model.url:
            p.append(Problem("manifest.model.url", "only an external model has a url"))
        if model.container is None and model.local is None and not {"container", "local"} & unread:
            p.append(
                Problem("manifest.model", "an internal model needs a container or a local command")
            )
    if model.local is not None:
        p.extend(env_problems(model.local.env))
    return p


def _trigger_problems(t: Trigger) -> list[Problem]:
    p: list[Problem] = []
    timing = (("frequency", t.frequency), ("timeWindowSize", t.time_window_size))
    for name, ms in timing:
        if t.type is TriggerType.TIME_WINDOW and (ms is None or ms <= 0):
            p.append(Problem(f"manifest.trigger.{name}", "TIME_WINDOW needs a positive ms"))
    optional = (("allowedLateness", t.allowed_lateness, 0), ("idleTimeout", t.idle_timeout, 100))
    for name, ms, least in optional:
        if ms is not None and not least <= ms <= MAX_LATENESS_MS:
            p.append(
                Problem(f"manifest.trigger.{name}", f"ms from {least} to {MAX_LATENESS_MS} (a day)")
            )
    if t.type is TriggerType.REAL_TIME:
        for name, ms in (*timing, *((n, v) for n, v, _ in optional)):
            if ms is not None:
                p.append(Problem(f"manifest.trigger.{name}", "applies to TIME_WINDOW only"))
    freq, size = t.frequency, t.time_window_size
    if t.type is TriggerType.TIME_WINDOW and freq and size and freq > 0 and size > 0:
        if freq > size:
            p.append(
                Problem(
                    "manifest.trigger.frequency",
                    f"windows start every {freq} ms but last {size} ms: readings between "
                    "them would be in no window; frequency may be at most timeWindowSize",
                )
            )
        elif size / freq > MAX_WINDOWS_PER_READING:
            p.append(
                Problem(
                    "manifest.trigger.frequency",
                    f"each reading would be in {size // freq} sliding windows; at most "
                    f"{MAX_WINDOWS_PER_READING} (timeWindowSize / frequency)",
                )
            )
    return p


def _column_problems(side: str, columns: list[tuple[int, Column]], empty: bool) -> list[Problem]:
    p: list[Problem] = []
    if empty:
        p.append(Problem(f"manifest.{side}", "at least one column is needed"))
    seen: set[str] = set()
    for i, c in columns:
        where = f"manifest.{side}.{i}.dataColumnName"
        if (slug := slug_problem(c.data_column_name, where)) is not None:
            p.append(slug)
        if c.data_column_name in seen:
            p.append(Problem(where, f"duplicate column {c.data_column_name!r}"))
        seen.add(c.data_column_name)
    return p


def _readable_part_problems(document: Any, caps: LimitCaps | None) -> list[Problem]:
    """When the manifest as a whole cannot be read, the rules of every field that can (so that
    one answer names every problem, not those of the first pass only): each field is read on
    its own, and the rules run on those that read, the defaults standing in for the others."""
    body = document.get("manifest") if isinstance(document, dict) else None
    if not isinstance(body, dict):
        return []
    p: list[Problem] = []
    name, version = body.get("name"), body.get("version")
    if isinstance(name, str) and (slug := slug_problem(name, "manifest.name")) is not None:
        p.append(slug)
    if isinstance(version, str):
        p += _version_problems(version)
    if isinstance(model := body.get("model"), dict):
        p += _readable_model_problems(model, caps)
    trigger = body.get("trigger")
    if isinstance(trigger, dict):
        read = _readable(Trigger, trigger, {"type": trigger.get("type")})
        if read is not None:
            p += _trigger_problems(read[0])
    for side in ("inputs", "outputs"):
        if isinstance(columns := body.get(side), list):
            readable = []
            for i, c in enumerate(columns):
                with contextlib.suppress(ValidationError):
                    readable.append((i, Column.model_validate(c)))
            p += _column_problems(side, readable, empty=not columns)
    parameters = body.get("parameters")
    if isinstance(parameters, dict):
        for name, spec in parameters.items():
            with contextlib.suppress(ValidationError):
                p += parameter_problems({str(name): Parameter.model_validate(spec)})
    return p


_M = TypeVar("_M", bound=BaseModel)


def _readable(
    cls: type[_M], data: dict[str, Any], fill: dict[str, Any]
) -> tuple[_M, set[str]] | None:
    """`cls` from the fields of `data` that read on their own (beside `fill`, what a field
    needs to be read at all), the defaults standing in for the others; with the names of the
    fields that did not read. None when even `fill` does not read."""
    good: dict[str, Any] = {}
    unread: set[str] = set()
    for key, value in data.items():
        try:
            cls.model_validate({**fill, key: value})
            good[key] = value
        except ValidationError:
            unread.add(str(key))
    try:
        return cls.model_validate({**fill, **good}), unread
    except ValidationError:
        return None


def _readable_model_problems(model: dict[str, Any], caps: LimitCaps | None) -> list[Problem]:
    local = model.get("local")
    rest = {k: v for k, v in model.items() if k != "local"}
    read = _readable(ModelSection, rest, {})
    if read is None:
        return []
    section, unread = read
    p: list[Problem] = []
    if isinstance(local, dict):
        filler = {"command": ["python"]}  # stands in for an unreadable command
        limits = local.get("limits")
        others = {k: v for k, v in local.items() if k != "limits"}
        process = _readable(LocalProcess, others, filler)
        if process is not None:
            section = section.model_copy(update={"local": process[0]})
            if isinstance(limits, dict):
                read_limits = _readable(Limits, limits, {})
                if read_limits is not None and caps is not None:
                    given = set(limits) - read_limits[1]
                    p += [
                        c
                        for c in caps.problems(read_limits[0])
                        if c.field.rsplit(".", 1)[1] in given
                    ]
    elif local is not None:
        unread.add("local")
    return _model_problems(section, unread) + p


# -- parameters -----------------------------------------------------------------------------


def parameter_problems(parameters: dict[str, Parameter]) -> list[Problem]:
    p: list[Problem] = []
    if len(parameters) > MAX_PARAMETERS:
        p.append(Problem("manifest.parameters", f"at most {MAX_PARAMETERS} parameters"))
    for name, spec in parameters.items():
        where = f"manifest.parameters.{name}"
        if not PARAMETER_NAME.fullmatch(name):
            p.append(Problem(where, "a name like warning_quantile: a-z, 0-9 and _, at most 64"))
        p += _spec_problems(where, spec)
        # Checked even when the spec has problems: each value check stops at a wrong type,
        # so no comparison ever runs between values of different kinds.
        p += _value_problems(f"{where}.default", spec, spec.default)
        if spec.value is not None:
            p += _value_problems(f"{where}.value", spec, spec.value)
    return p


def _spec_problems(where: str, spec: Parameter) -> list[Problem]:
    p: list[Problem] = []
    numeric = spec.type in ("number", "integer")
    for bound in ("minimum", "maximum"):
        if getattr(spec, bound) is not None and not numeric:
            p.append(Problem(f"{where}.{bound}", f"only a number or integer has a {bound}"))
    low, high = spec.minimum, spec.maximum
    if numeric and low is not None and high is not None and low > high:
        p.append(Problem(f"{where}.maximum", "is below the minimum"))
    if spec.enum is not None:
        if spec.type == "boolean":
            p.append(Problem(f"{where}.enum", "a boolean has no list of choices"))
        elif not spec.enum:
            p.append(Problem(f"{where}.enum", "at least one choice"))
        else:
            for i, choice in enumerate(spec.enum):
                if (reason := _type_problem(spec.type, choice)) is not None:
                    p.append(Problem(f"{where}.enum.{i}", reason))
    return p


def _type_problem(kind: ParameterType, value: Any) -> str | None:
    if kind == "boolean":
        ok = isinstance(value, bool)
    elif kind == "integer":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind == "number":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok and not math.isfinite(value):
            return f"{value!r} is not a finite number"
    else:
        ok = isinstance(value, str)
        if ok and len(value) > MAX_PARAMETER_TEXT:
            return f"at most {MAX_PARAMETER_TEXT} characters"
    return None if ok else f"{_shown(value)} is not a {_KIND_WORDS[kind]}"


_KIND_WORDS = {
    "number": "number",
    "integer": "whole number",
    "boolean": "boolean (true or false)",
    "string": "string",
}


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _value_problems(where: str, spec: Parameter, value: Any) -> list[Problem]:
    if (reason := _type_problem(spec.type, value)) is not None:
        return [Problem(where, reason)]
    if spec.minimum is not None and value < spec.minimum:
        return [Problem(where, f"{value} is below the minimum {spec.minimum:g}")]
    if spec.maximum is not None and value > spec.maximum:
        return [Problem(where, f"{value} is above the maximum {spec.maximum:g}")]
    if spec.enum is not None and value not in spec.enum:
        choices = ", ".join(_shown(c) for c in spec.enum)
        return [Problem(where, f"{_shown(value)} is not one of: {choices}")]
    return []


def with_parameter_values(
    document: dict[str, Any],
    values: dict[str, Any],
    together: Callable[[dict[str, Any]], list[Problem]] | None = None,
) -> dict[str, Any]:
    """A manifest document with these parameters' values set, or InvalidInput naming every
    problem at once, each under `parameters.<name>` (the name given): a name the manifest does
    not declare, each value's type, bounds and choices, and `together` (what the values say
    together, e.g. warning <= alarm) run with the values that passed, the defaults standing in
    for the refused ones. A whole number given as a float (1e9) for an integer parameter is
    judged, and passed on, as the integer it is."""
    document = copy.deepcopy(document)
    body = document.get("manifest", document)
    declared = body.get("parameters") or {}
    problems: list[Problem] = []
    accepted: dict[str, Any] = {}
    for name, value in values.items():
        where = f"parameters.{name}"
        if name not in declared:
            has = f"; it has: {', '.join(sorted(declared))}" if declared else "; it has none"
            problems.append(Problem(where, "the model has no such parameter" + has))
            continue
        spec = Parameter.model_validate(declared[name])
        if spec.type == "integer" and isinstance(value, float) and value.is_integer():
            value = int(value)
        if found := _value_problems(where, spec, value):
            problems += found
        else:
            accepted[name] = value
    if together is not None:
        problems += together(accepted)
    if problems:
        raise InvalidInput.of(problems, "parameters")
    for name, value in accepted.items():
        declared[name]["value"] = value
    return document
