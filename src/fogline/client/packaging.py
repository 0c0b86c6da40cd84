"""A model directory as the tar.gz the platform's package endpoint takes."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

MANIFEST_NAMES = ("fogline.yaml", "fogline.yml", "manifest.yaml", "manifest.yml", "manifest.json")
SKIPPED = {".git", "__pycache__", ".venv", "venv", ".pytest_cache", ".mypy_cache"}


def manifest_in(directory: Path) -> Path | None:
    for name in MANIFEST_NAMES:
        if (directory / name).is_file():
            return directory / name
    return None


def pack_directory(directory: Path) -> bytes:
    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        parts = Path(info.name).parts
        if any(p in SKIPPED for p in parts) or info.name.endswith(".pyc"):
            return None
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for child in sorted(directory.iterdir()):
            tar.add(child, arcname=child.name, filter=keep)
    return buffer.getvalue()
