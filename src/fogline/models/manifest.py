"""The model manifest (JSON or YAML), checked in full: every problem at once, each with its
field path, before anything is stored.

The shape follows the design guide; field names are the manifest's own camelCase. One addition:
`model.local`, the start command of a model that Fogline runs as a local process.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fogline.domain.errors import InvalidInput, Problem
from fogline.domain.ids import slug_problem

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
    """What the local runtime lets a model process use (rlimits, CPU affinity)."""

    memory_mb: int = Field(default=1024, ge=64, alias="memoryMb")
    cpus: int = Field(default=1, ge=1)
    open_files: int = Field(default=1024, ge=16, alias="openFiles")
    file_size_mb: int = Field(default=256, ge=1, alias="fileSizeMb")


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


class Trigger(_Strict):
    type: TriggerType
    frequency: int | None = Field(default=None, description="ms, TIME_WINDOW only")
    time_window_size: int | None = Field(default=None, alias="timeWindowSize")


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


def parse_manifest(text: str | bytes) -> Manifest:
    """JSON or YAML to a checked manifest, or InvalidInput listing every problem."""
    try:
        document = yaml.safe_load(text)  # YAML is a superset of JSON
    except yaml.YAMLError as exc:
        raise InvalidInput.of([Problem("", f"not JSON or YAML: {exc}")], "manifest") from None
    return check_manifest(document)


def check_manifest(document: Any) -> Manifest:
    if isinstance(document, dict) and "manifest" not in document and "name" in document:
        document = {"manifest": document}  # the bare body is accepted too
    try:
        manifest = Manifest.model_validate(document)
    except ValidationError as exc:
        problems = [Problem(".".join(str(p) for p in e["loc"]), e["msg"]) for e in exc.errors()]
        raise InvalidInput.of(problems, "manifest") from None
    problems = _semantic_problems(manifest.manifest)
    if problems:
        raise InvalidInput.of(problems, "manifest")
    return manifest


def _semantic_problems(m: ManifestBody) -> list[Problem]:
    p: list[Problem] = []
    if (slug := slug_problem(m.name, "manifest.name")) is not None:
        p.append(slug)
    if not _SEMVER.fullmatch(m.version) or len(m.version) > MAX_VERSION_LENGTH:
        p.append(
            Problem(
                "manifest.version",
                f"{m.version[:80]!r} is not a version like 1.0.0 "
                f"(at most {MAX_VERSION_LENGTH} characters)",
            )
        )
    model = m.model
    if model.type == "http":
        for field, value in (
            ("scoreEndpoint", model.score_endpoint),
            ("healthCheckEndpoint", model.health_check_endpoint),
        ):
            if not value.startswith("/"):
                p.append(Problem(f"manifest.model.{field}", "must be a path starting with '/'"))
    if model.hosted == "external":
        if not model.url:
            p.append(Problem("manifest.model.url", "an external model needs its url"))
        elif not _URL.match(model.url):
            p.append(Problem("manifest.model.url", f"{model.url!r} is not an http(s) or amqp URL"))
    else:
        if model.url:
            p.append(Problem("manifest.model.url", "only an external model has a url"))
        if model.container is None and model.local is None:
            p.append(
                Problem("manifest.model", "an internal model needs a container or a local command")
            )
    t = m.trigger
    timing = (("frequency", t.frequency), ("timeWindowSize", t.time_window_size))
    for name, ms in timing:
        if t.type is TriggerType.TIME_WINDOW and (ms is None or ms <= 0):
            p.append(Problem(f"manifest.trigger.{name}", "TIME_WINDOW needs a positive ms"))
        if t.type is TriggerType.REAL_TIME and ms is not None:
            p.append(Problem(f"manifest.trigger.{name}", "applies to TIME_WINDOW only"))
    for side, columns in (("inputs", m.inputs), ("outputs", m.outputs)):
        if not columns:
            p.append(Problem(f"manifest.{side}", "at least one column is needed"))
        seen: set[str] = set()
        for i, c in enumerate(columns):
            where = f"manifest.{side}.{i}.dataColumnName"
            if (slug := slug_problem(c.data_column_name, where)) is not None:
                p.append(slug)
            if c.data_column_name in seen:
                p.append(Problem(where, f"duplicate column {c.data_column_name!r}"))
            seen.add(c.data_column_name)
    return p
