"""One platform per data dir: a lock file the running platform holds (`flock`), with its pid
and API address written in it for the message a second start gets.

The kernel releases a `flock` when its holder dies, even by SIGKILL: a lock file left behind by
a killed platform is taken over at the next start, with nothing to clean up by hand. The file
itself is never deleted (deleting it while another start has it open would let two platforms
each hold a lock on a different file)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any

from fogline.domain.errors import ConfigurationError

LOCK_FILE = "platform.lock"


class PlatformAlreadyRunning(ConfigurationError):
    """Another platform holds this data dir."""

    def __init__(self, data_dir: Path, holder: dict[str, Any]) -> None:
        pid = holder.get("pid", "unknown")
        url = holder.get("url") or "not listening yet"
        super().__init__(
            f"a Fogline platform is already running on the data dir {data_dir} "
            f"(pid {pid}, API {url}); stop it first (Ctrl-C where it runs, or kill {pid}), "
            "or start this one on another data dir with --data-dir or FOGLINE_DATA_DIR"
        )
        self.holder = holder


class DataDirLock:
    """Held from a platform's start until it has stopped every part."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.path = data_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise PlatformAlreadyRunning naming its holder."""
        try:
            # Not inherited by the platform's processes (Python's default): the lock is the
            # platform's alone, and goes with it.
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot open the lock file {self.path}: {exc.strerror or exc}"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise PlatformAlreadyRunning(self.data_dir, holder) from None
        self._fd = fd
        self.record(url=None)

    def record(self, url: str | None) -> None:
        """Say who holds the lock, and (once it listens) where its API is."""
        if self._fd is None:
            return
        document = {"pid": os.getpid(), "url": url, "since": round(time.time(), 3)}
        text = json.dumps(document).encode()
        os.pwrite(self._fd, text, 0)
        os.ftruncate(self._fd, len(text))

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)  # nobody holds it: a reader finds no stale pid in it
        os.close(fd)  # closing the last descriptor releases the flock


def _read_holder(fd: int) -> dict[str, Any]:
    """What the holder wrote; empty while it has not written yet (it is starting)."""
    with contextlib.suppress(OSError, ValueError):
        document = json.loads(os.pread(fd, 4096, 0) or b"{}")
        if isinstance(document, dict):
            return document
    return {}
