"""Model packages: the directory a local model runs from, uploaded as a tar.gz and kept under
the data dir, one per model version."""

from __future__ import annotations

import asyncio
import io
import shutil
import tarfile
import uuid
from pathlib import Path

from fogline.domain.errors import InvalidInput, Problem
from fogline.domain.lifecycle import ModelState
from fogline.store.models import ModelStore

MAX_PACKAGE_BYTES = 64 * 1024 * 1024


class PackageStore:
    def __init__(self, root: Path, models: ModelStore) -> None:
        self.root = root
        self.models = models

    def path(self, tenant: str, name: str, version: str) -> Path:
        return self.root / tenant / name / version

    def find(self, tenant: str, name: str, version: str) -> Path | None:
        path = self.path(tenant, name, version)
        return path if path.is_dir() else None

    async def put(self, tenant: str, name: str, version: str, archive: bytes) -> list[str]:
        """Only a draft's package can change: what runs, or ran, stays what was deployed."""
        model = await asyncio.to_thread(self.models.get_model, tenant, name, version)
        if model.state is not ModelState.DRAFT:
            raise InvalidInput.of(
                [Problem("state", f"the package of a {model.state.value} model cannot change")],
                "package",
            )
        return await asyncio.to_thread(self._put, tenant, name, version, archive)

    def _put(self, tenant: str, name: str, version: str, archive: bytes) -> list[str]:
        """Unpack safely (no absolute paths, no `..`, no links out, no devices) into a fresh
        directory, then swap it in: a bad archive leaves the previous package untouched."""
        if len(archive) > MAX_PACKAGE_BYTES:
            raise InvalidInput.of(
                [Problem("package", f"{len(archive)} bytes; the limit is {MAX_PACKAGE_BYTES}")],
                "package",
            )
        target = self.path(tenant, name, version)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.parent / f".{version}.{uuid.uuid4().hex}"
        try:
            with tarfile.open(fileobj=io.BytesIO(archive), mode="r:*") as tar:
                members = tar.getmembers()
                tar.extractall(staging, filter="data")
        except (tarfile.TarError, OSError, EOFError) as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise InvalidInput.of(
                [Problem("package", f"not a usable tar.gz archive: {exc}")], "package"
            ) from None
        previous = target.parent / f".{version}.old.{uuid.uuid4().hex}"
        if target.exists():
            target.rename(previous)
        staging.rename(target)
        shutil.rmtree(previous, ignore_errors=True)
        return sorted(m.name for m in members if m.isfile())
