"""Starts a model process in its sandbox: `python -I -m fogline.models.runtimes.launch SPEC`.

Runs between fork and the model's own program, as the platform's user, from the platform's
own files only (`-I`: no PYTHON* variables, no working directory or user site on the import
path; the working directory is `/`). So nothing a model or its manifest wrote is ever imported
or run here with the platform's privileges. In order:

1. limits: address space, processes, open files, file size, no core dumps, nice, CPUs;
2. when the spec gives a uid (the platform runs as root): a private mount namespace in which a
   tmpfs stage holds bind mounts of everything the sandbox needs, made while still root (the
   interpreter may live where the model's uid cannot reach, e.g. under /root), and the model's
   disk image mounted as its state directory;
3. drop to the model's own uid and gid, no supplementary groups;
4. die with the platform (PDEATHSIG, set after the drop, which clears it);
5. exec bubblewrap, unprivileged, with its own user, mount, PID, IPC, UTS, cgroup and network
   namespaces, which builds the model's whole file system view from the stage.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import resource
import signal
import subprocess
import sys
from typing import Any

_PR_SET_PDEATHSIG = 1
_CLONE_NEWNS = 0x00020000
_MS_BIND = 4096
_MS_REC = 16384
_MS_PRIVATE = 1 << 18
_MS_NOSUID = 2
_MS_NODEV = 4
STAGE = "/tmp"  # noqa: S108 - mounted over, inside the launcher's own mount namespace only

_libc = ctypes.CDLL(None, use_errno=True)


class LaunchError(Exception):
    pass


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise LaunchError(f"{what}: {os.strerror(errno)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str) -> None:
    _check(
        _libc.mount(
            source.encode() if source else None,
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        ),
        f"mount {source or fstype} on {target}",
    )


def apply_limits(spec: dict[str, Any]) -> None:
    memory = int(spec["memory_bytes"])
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    files = int(spec["open_files"])
    resource.setrlimit(resource.RLIMIT_NOFILE, (files, files))
    size = int(spec["file_size_bytes"])
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if spec.get("processes") is not None:
        # Counted per real uid: each model has its own, so this caps the model's processes.
        procs = int(spec["processes"])
        resource.setrlimit(resource.RLIMIT_NPROC, (procs, procs))
    os.nice(int(spec.get("nice", 5)))
    cpus = sorted(os.sched_getaffinity(0))
    wanted = int(spec["cpus"])
    if wanted < len(cpus):
        offset = int(spec.get("cpu_offset", 0)) % len(cpus)
        os.sched_setaffinity(0, [cpus[(offset + i) % len(cpus)] for i in range(wanted)])


def build_stage(binds: list[dict[str, Any]], image: dict[str, Any] | None) -> None:
    """As root, in a mount namespace of our own: the stage tmpfs at STAGE with one bind mount
    per entry (`stage` names its place), and the disk image mounted. Sources are opened before
    the stage hides anything: a source may itself live under STAGE's path."""
    _check(_libc.unshare(_CLONE_NEWNS), "unshare the mount namespace")
    _mount(None, "/", None, _MS_REC | _MS_PRIVATE, "")
    opened = [os.open(b["source"], os.O_PATH | os.O_CLOEXEC) for b in binds]
    image_fd = os.open(image["source"], os.O_RDWR | os.O_CLOEXEC) if image else None
    _mount("fogline-stage", STAGE, "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=0755,size=1m")
    for bind, fd in zip(binds, opened, strict=True):
        target = os.path.join(STAGE, bind["stage"])
        if os.path.isdir(f"/proc/self/fd/{fd}"):
            os.mkdir(target, 0o755)
        else:
            with open(target, "w"):
                pass
        _mount(f"/proc/self/fd/{fd}", target, None, _MS_BIND | _MS_REC, "")
        os.close(fd)
    if image is not None and image_fd is not None:
        target = os.path.join(STAGE, image["stage"])
        os.mkdir(target, 0o755)
        # mount(8) sets up the loop device (auto-cleared when the namespace goes away).
        done = subprocess.run(
            [
                "mount",
                "-o",
                "loop,nosuid,nodev",
                f"/proc/self/fd/{image_fd}",
                target,
            ],
            pass_fds=(image_fd,),
            capture_output=True,
            text=True,
            check=False,
        )
        os.close(image_fd)
        if done.returncode != 0:
            raise LaunchError(f"mount the model's disk image: {done.stderr.strip()}")


def drop_privileges(uid: int, gid: int) -> None:
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    if os.getuid() != uid or os.geteuid() != uid:
        raise LaunchError("the privilege drop did not take")


def die_with_parent(parent_pid: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:
        sys.exit(0)  # the platform died before we could ask to die with it


def prepare_state(spec: dict[str, Any]) -> None:
    """Directories the model's uid makes in its own disk image (the /tmp it gets, for one)."""
    image = spec.get("image")
    if image is None:
        return
    for name in image.get("make", []):
        os.makedirs(os.path.join(STAGE, image["stage"], name), mode=0o700, exist_ok=True)


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        sys.exit("usage: python -I -m fogline.models.runtimes.launch SPEC_JSON")
    spec = json.loads(argv[1])
    command: list[str] = spec["command"]
    try:
        apply_limits(spec)
        if spec.get("uid") is not None:
            build_stage(spec.get("binds", []), spec.get("image"))
            drop_privileges(int(spec["uid"]), int(spec["gid"]))
            prepare_state(spec)
        die_with_parent(int(spec["parent_pid"]))
    except (OSError, LaunchError) as exc:
        sys.exit(f"fogline sandbox: cannot set up the model's sandbox: {exc}")
    os.chdir(spec.get("cwd", "/"))
    env = spec.get("env")
    try:
        if env is None:
            os.execvp(command[0], command)  # noqa: S606 - bubblewrap, no shell
        else:  # unsandboxed: the model's own command, with its environment
            os.execvpe(command[0], command, env)  # noqa: S606
    except OSError as exc:
        sys.exit(f"fogline sandbox: cannot run {command[0]!r}: {exc.strerror}")


if __name__ == "__main__":
    main(sys.argv)
