"""What `fogline bench faults` starts and must always take down again: a platform process (its
own data dir and free ports, in a process group of its own), a scratch PostgreSQL run as an
unprivileged user, and a small tmpfs for the data dir with a ballast file to fill it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import IO

from fogline.client.http import FoglineClient
from fogline.domain.errors import Unavailable
from fogline.retry import block_until

READY_LINE = "Press Ctrl-C to stop."
MiB = 1024**2


class Skipped(Exception):
    """A fault this machine cannot stage (no root to mount, no PostgreSQL): the reason."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group, read from /proc."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry))
    return members


def kill_group(pgid: int, timeout_s: float = 10.0) -> int:
    """SIGKILL whatever is left of a process group; how many processes were left."""
    left = group_members(pgid)
    if left:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        block_until(lambda: not group_members(pgid), timeout_s, interval_s=0.05)
    return len(left)


class PlatformProcess:
    """`fogline up` as a subprocess with its own data dir and ports, restartable on the same
    ones; its output goes to a log file (kept with the bench's work dir on failure)."""

    def __init__(self, data_dir: Path, log_path: Path, extra_env: dict[str, str]) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.http_port, nats_port, mqtt_port = free_port(), free_port(), free_port()
        self.env = {
            **os.environ,
            "FOGLINE_DATA_DIR": str(data_dir),
            "FOGLINE_HTTP_PORT": str(self.http_port),
            "FOGLINE_NATS_PORT": str(nats_port),
            "FOGLINE_MQTT_PORT": str(mqtt_port),
            "PYTHONUNBUFFERED": "1",
            **extra_env,
        }
        for name in ("FOGLINE_URL", "FOGLINE_API_KEY", "FOGLINE_CONFIG"):
            self.env.pop(name, None)  # the caller's platform is not this one
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._log_offset = 0
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def spawn(self) -> None:
        """Start it without waiting (a restart storm kills some during start-up)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._log is None:
            self._log = self.log_path.open("ab")
        self._log_offset = self.log_path.stat().st_size
        self.process = subprocess.Popen(
            [sys.executable, "-m", "fogline.cli.main", "up"],
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own group: the bench can take all of it down
        )
        self.starts += 1

    def started(self) -> bool:
        """The banner of the latest start is in the log."""
        try:
            with self.log_path.open("rb") as f:
                f.seek(self._log_offset)
                return READY_LINE.encode() in f.read()
        except OSError:
            return False

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        def settled() -> bool:
            return self.started() or (self.process is not None and self.process.poll() is not None)

        block_until(settled, timeout_s, interval_s=0.1)
        if not self.started():
            raise Unavailable(f"fogline up did not start in {timeout_s:.0f} s: {self.log_tail()}")

    def start(self, timeout_s: float = 90.0) -> None:
        self.spawn()
        self.wait_ready(timeout_s)

    def api_key(self) -> str:
        key: str = json.loads((self.data_dir / "client.json").read_text())["api_key"]
        return key

    def client(self, timeout_s: float = 30.0) -> FoglineClient:
        return FoglineClient(self.url, self.api_key(), timeout=timeout_s)

    def crash(self) -> int:
        """SIGKILL the platform process alone, as a crash would; its children are expected
        to die with it. Returns how many of its processes were still alive 10 s later (then
        killed)."""
        if self.process is None:
            return 0
        pgid = self.process.pid
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        block_until(lambda: not group_members(pgid), 10.0, interval_s=0.05)
        return kill_group(pgid)

    def stop(self, timeout_s: float = 30.0) -> None:
        """Ctrl-C, then SIGKILL for it and anything of its group still there."""
        if self.process is not None:
            pgid = self.process.pid
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGINT)
                try:
                    self.process.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(10)
            kill_group(pgid)
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def _postgres_bin(name: str) -> str | None:
    found = shutil.which(name) or next(
        (str(p) for p in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))), None
    )
    if found is None and Path(f"/usr/local/bin/{name}").exists():
        found = f"/usr/local/bin/{name}"
    return found


class ScratchPostgres:
    """A PostgreSQL of the bench's own (initdb in a temporary dir, a free port, trust auth on
    127.0.0.1), run as `user` when the bench is root: postgres refuses to run as root."""

    def __init__(self, user: str = "postgres") -> None:
        initdb, pg_ctl = _postgres_bin("initdb"), _postgres_bin("pg_ctl")
        if initdb is None or pg_ctl is None:
            raise Skipped("no PostgreSQL server programs (initdb, pg_ctl) on this machine")
        self.initdb, self.pg_ctl = initdb, pg_ctl
        self.as_user: list[str] = []
        owner: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam(user)
            except KeyError:
                raise Skipped(
                    f"running as root and there is no user {user!r} to run PostgreSQL"
                ) from None
            self.as_user = ["runuser", "-u", user, "--"]
        # Its own temp dir, not the work dir: the unprivileged user must own all of it.
        self.root = Path(tempfile.mkdtemp(prefix="fogline-faults-pg-"))
        if owner is not None:
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
        self.port = free_port()
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.running = False

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout_s: float = 120) -> None:
        done = subprocess.run(
            [*self.as_user, *args], capture_output=True, text=True, timeout=timeout_s
        )
        if done.returncode != 0:
            raise Unavailable(f"{Path(args[0]).name} failed: {(done.stderr or done.stdout)[-500:]}")

    def init(self) -> None:
        self._run(self.initdb, "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        self.start()

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root}"
        self._run(self.pg_ctl, "-D", str(self.data), "-l", str(self.log), "-o", options, "-w",
                  "-t", "60", "start")  # fmt: skip
        self.running = True

    def stop(self, mode: str = "immediate") -> None:
        """`immediate`: the server dies as in a crash (no checkpoint); it recovers on start."""
        self._run(self.pg_ctl, "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")
        self.running = False

    def destroy(self) -> None:
        if self.running:
            try:
                self.stop("immediate")
            except (Unavailable, subprocess.TimeoutExpired):
                self._kill_postmaster()
        shutil.rmtree(self.root, ignore_errors=True)

    def _kill_postmaster(self) -> None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int((self.data / "postmaster.pid").read_text().splitlines()[0])
            os.kill(pid, signal.SIGKILL)


class SmallDisk:
    """A tmpfs of `size_mb` at `path` (root only) and a ballast file that fills it."""

    def __init__(self, path: Path, size_mb: int) -> None:
        self.path = path
        self.size_mb = size_mb
        self.ballast = path / "ballast"
        self.mounted = False

    def mount(self) -> None:
        if os.geteuid() != 0:
            raise Skipped("mounting a small tmpfs for the data dir needs root")
        if shutil.which("mount") is None:
            raise Skipped("no mount command on this machine")
        self.path.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={self.size_mb}m,mode=0700", "tmpfs",
             str(self.path)],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        if done.returncode != 0:
            raise Skipped(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
        self.mounted = True

    def unmount(self) -> None:
        if not self.mounted:
            return
        done = subprocess.run(["umount", str(self.path)], capture_output=True, timeout=30)
        if done.returncode != 0:  # still busy: detach it now, the kernel frees it when idle
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True, timeout=30)
        self.mounted = False

    def free_bytes(self) -> int:
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize

    def place_ballast(self, leave_free: int) -> None:
        """Grow the ballast until only `leave_free` bytes are free."""
        self.grow(max(0, self.free_bytes() - leave_free))

    def grow(self, size: int) -> bool:
        """Add `size` bytes to the ballast; False when the disk filled first (ENOSPC)."""
        return self._append(size, MiB)

    def fill(self) -> None:
        """Grow the ballast until the disk is full, to the last page."""
        for step in (MiB, 4096):
            self._append(None, step)

    def _append(self, size: int | None, step: int) -> bool:
        """Write zeros in `step` pieces until `size` bytes (None: no end) or ENOSPC."""
        fd = os.open(self.ballast, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            while size is None or size > 0:
                piece = step if size is None else min(size, step)
                try:
                    written = os.write(fd, b"\0" * piece)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    return False
                if size is not None:
                    size -= written
            return True
        finally:
            os.close(fd)

    def remove_ballast(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.ballast.unlink()

    def usage(self) -> str:
        size = self.ballast.stat().st_size if self.ballast.exists() else 0
        return f"{self.free_bytes() / MiB:.1f} MiB free, ballast {size / MiB:.1f} MiB"
