"""The runtime interface: provision, start, check, stop, deprovision. `local` runs a model as a
supervised process here; `external` proxies to a model hosted elsewhere; `kubernetes` is the
planned next one (kubernetes.py says what it will create)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from fogline.models.manifest import ManifestBody


@dataclass(frozen=True)
class ModelSpec:
    """What a runtime needs to know of a model."""

    model_id: int
    tenant: str
    name: str
    version: str
    manifest: ManifestBody
    package_dir: Path | None  # the uploaded package, when there is one

    @property
    def key(self) -> str:
        return f"{self.tenant}/{self.name}/{self.version}"

    @property
    def queue_prefix(self) -> str:
        return f"fogline.{self.tenant}.{self.name}.{self.version}"


@dataclass(frozen=True)
class RuntimeHandle:
    """What a started model is, as persisted by the saga (so a restart can find and stop it)."""

    kind: str
    endpoint: str | None = None  # the HTTP base URL, for HTTP models
    score_queue: str | None = None  # for AMQP models
    health_queue: str | None = None
    pid: int | None = None
    started_at_ticks: int | None = None  # with pid, tells our process from a reused pid
    run_as: str | None = None
    note: str | None = None
    log_file: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RuntimeHandle:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


class Runtime(Protocol):
    kind: str

    async def provision(self, spec: ModelSpec) -> None:
        """Prepare what starting needs (directories, a virtualenv). Idempotent."""

    async def start(self, spec: ModelSpec) -> RuntimeHandle: ...

    def alive(self, handle: RuntimeHandle) -> bool:
        """False when the model's process is known to be gone."""
        ...

    async def stop(self, handle: RuntimeHandle) -> None:
        """Stop what `start` started; harmless when it is already gone."""

    async def deprovision(self, spec: ModelSpec) -> None: ...
