"""Model packages: the directory a local model runs from, uploaded as a tar.gz and kept under
the data dir, one per model version."""

from __future__ import annotations

import asyncio
import io
import shutil
import tarfile
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path

from fogline.domain.errors import InvalidInput, Problem
from fogline.domain.lifecycle import ModelState
from fogline.store.models import ModelStore

MAX_PACKAGE_BYTES = 64 * 1024 * 1024
MAX_EXPANDED_BYTES = 256 * 1024 * 1024
MAX_FILES = 10_000


@dataclass(frozen=True)
class PackageLimits:
    """An upload is refused past any of these; the expanded ones stop a small archive that
    unpacks to gigabytes (a gzip bomb) before it reaches the disk."""

    archive_bytes: int = MAX_PACKAGE_BYTES
    expanded_bytes: int = MAX_EXPANDED_BYTES
    files: int = MAX_FILES


class PackageStore:
    def __init__(self, root: Path, models: ModelStore, limits: PackageLimits | None = None) -> None:
        self.root = root
        self.models = models
        self.limits = limits or PackageLimits()

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
        if len(archive) > self.limits.archive_bytes:
            raise InvalidInput.of(
                [
                    Problem(
                        "package", f"{len(archive)} bytes; the limit is {self.limits.archive_bytes}"
                    )
                ],
                "package",
            )
        target = self.path(tenant, name, version)
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        staging = target.parent / f".{version}.{uuid.uuid4().hex}"
        try:
            with tarfile.open(fileobj=io.BytesIO(archive), mode="r:*") as tar:
                members = self._checked_members(tar)
                tar.extractall(staging, members=members, filter="data")
            private_tree(staging)
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise InvalidInput.of(
                [Problem("package", f"not a usable tar.gz archive: {exc}")], "package"
            ) from None
        except InvalidInput:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        previous = target.parent / f".{version}.old.{uuid.uuid4().hex}"
        if target.exists():
            target.rename(previous)
        staging.rename(target)
        shutil.rmtree(previous, ignore_errors=True)
        return sorted(m.name for m in members if m.isfile())

    def _checked_members(self, tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
        """Headers read one by one, the expanded size and file count added up as they come:
        the first member past a limit ends the upload, before anything is written."""
        members: list[tarfile.TarInfo] = []
        expanded = 0
        while (member := tar.next()) is not None:
            members.append(member)
            expanded += max(member.size, 0)
            if len(members) > self.limits.files:
                raise InvalidInput.of(
                    [Problem("package", f"more than {self.limits.files} files and directories")],
                    "package",
                )
            if expanded > self.limits.expanded_bytes:
                raise InvalidInput.of(
                    [
                        Problem(
                            "package",
                            f"unpacks to more than {self.limits.expanded_bytes} bytes "
                            "(the limit on a package's expanded size)",
                        )
                    ],
                    "package",
                )
        return members

    async def remove(self, tenant: str, name: str, version: str) -> None:
        """A removed model's package goes with it."""
        await asyncio.to_thread(shutil.rmtree, self.path(tenant, name, version), True)


def private_tree(root: Path) -> None:
    """The platform's user only: the data dir's rule (a model's uid is given its package when
    it deploys)."""
    for path in [root, *root.rglob("*")]:
        if not path.is_symlink():
            path.chmod(path.stat().st_mode & 0o700)
