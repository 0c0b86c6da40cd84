"""Starts a model process under limits: `python -m fogline.models.runtimes.launch SPEC -- CMD`.

Runs between fork and the model's own program, so no Python code runs in a forked copy of the
threaded platform: it sets the rlimits (address space, open files, file size, no core dumps),
lowers the priority and pins the CPUs, drops to the unprivileged user, asks the kernel to kill
the model when the platform dies (after dropping privileges: changing user clears that), and
then execs the model's command.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import resource
import signal
import sys

_PR_SET_PDEATHSIG = 1


def _apply(spec: dict[str, object]) -> None:
    memory = int(str(spec["memory_bytes"]))
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    files = int(str(spec["open_files"]))
    resource.setrlimit(resource.RLIMIT_NOFILE, (files, files))
    size = int(str(spec["file_size_bytes"]))
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    os.nice(int(str(spec.get("nice", 5))))
    cpus = sorted(os.sched_getaffinity(0))
    wanted = int(str(spec["cpus"]))
    if wanted < len(cpus):
        offset = int(str(spec.get("cpu_offset", 0))) % len(cpus)
        os.sched_setaffinity(0, [cpus[(offset + i) % len(cpus)] for i in range(wanted)])
    uid, gid = spec.get("uid"), spec.get("gid")
    if uid is not None and gid is not None:
        os.setgroups([])
        os.setgid(int(str(gid)))
        os.setuid(int(str(uid)))
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != int(str(spec["parent_pid"])):
        sys.exit(0)  # the platform died before we could ask to die with it


def main(argv: list[str]) -> None:
    if len(argv) < 4 or argv[2] != "--":
        sys.exit("usage: launch SPEC_JSON -- COMMAND...")
    spec = json.loads(argv[1])
    command = argv[3:]
    try:
        _apply(spec)
    except OSError as exc:
        sys.exit(f"fogline launch: cannot apply limits: {exc}")
    os.chdir(str(spec["cwd"]))
    try:
        os.execvp(command[0], command)  # noqa: S606 - the manifest's own command, no shell
    except OSError as exc:
        sys.exit(f"fogline launch: cannot run {command[0]!r}: {exc.strerror}")


if __name__ == "__main__":
    main(sys.argv)
