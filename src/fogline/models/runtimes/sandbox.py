"""The model sandbox: what a local model may see, reach and use, and the bubblewrap command
line that makes it so.

Why bubblewrap: it is the small, audited tool Flatpak uses to build a sandbox from nothing but
the namespaces of an unprivileged user: the model gets an empty root file system made only of
what is listed here, its own PID, IPC, UTS, cgroup, user and network namespaces, no
capabilities, no way to make user namespaces of its own, and it dies with its launcher. The
launcher (launch.py) sets the limits and moves to the model's own uid first, so inside the
sandbox the model is an unprivileged user of its own even to the host.

A model sees:
- `/usr` and the top-level system links, a few harmless files of `/etc` (no shadow, no
  machine secrets), its own `/etc/passwd`, `/etc/group` and `/etc/hosts`;
- the platform's interpreter and packages, read-only (the SDK and what models import);
- its package at `/model/package`, read-only, as its working directory;
- its disk image at `/model/state` (HOME, the state dir, its own virtualenv) and `/tmp` inside
  that image: the image's size is the model's disk limit, less the package;
- `/run/fogline`: its sockets (the one it serves on, the relays out);
- nothing else: not the data dir, not other models' packages or state, not the platform's
  keys, not other processes.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fogline
from fogline.domain.errors import InvalidInput, Problem
from fogline.models.manifest import LimitCaps

SANDBOX_MODES = ("bwrap", "off")
MODEL_ROOT = "/model"
PACKAGE_DIR = f"{MODEL_ROOT}/package"
STATE_DIR = f"{MODEL_ROOT}/state"
RUN_DIR = "/run/fogline"
SOCKET = f"{RUN_DIR}/model.sock"
VENV_DIR = f"{STATE_DIR}/venv"
WHEELS_DIR = f"{MODEL_ROOT}/wheels"
MIN_IMAGE_BYTES = 8 * 1024 * 1024

# What of /etc a model may read: the loader's cache, certificates, time zones, name service
# switch. Never /etc/shadow, /etc/gshadow, ssh host keys or the machine's id.
ETC_READABLE = (
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "ssl",
    "ca-certificates",
    "ca-certificates.conf",
    "localtime",
    "timezone",
    "nsswitch.conf",
    "alternatives",
    "mime.types",
    "os-release",
)
TOP_LEVEL = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")


@dataclass(frozen=True)
class SandboxSettings:
    mode: str = "bwrap"  # "off" runs models unsandboxed: only when the operator says so
    uid_base: int = 2_000_000_000  # a model's uid and gid: uid_base + its id
    bwrap: str = "bwrap"
    caps: LimitCaps = field(default_factory=LimitCaps)

    def uid_of(self, model_id: int) -> int:
        return self.uid_base + model_id


class SandboxUnavailable(InvalidInput):
    """The sandbox cannot be set up here: the model does not start."""

    def __init__(self, reason: str) -> None:
        super().__init__("the model cannot be sandboxed here", [Problem("sandbox", reason)])
        self.reason = reason


def find_bwrap(configured: str) -> str:
    found = shutil.which(configured)
    if found is None:
        raise SandboxUnavailable(
            f"bubblewrap ({configured!r}) is not installed, so models cannot be sandboxed: "
            "install Debian's `bubblewrap` package (make does, as root), or let models run "
            "unsandboxed with FOGLINE_MODEL_SANDBOX=off"
        )
    return found


def check_can_isolate(mode: str) -> None:
    if mode == "bwrap" and os.geteuid() != 0:
        raise SandboxUnavailable(
            "the sandbox gives each model a user id of its own, which needs the platform to run "
            "as root; run it as root, or let models run unsandboxed with "
            "FOGLINE_MODEL_SANDBOX=off"
        )


def platform_code_dirs() -> list[str]:
    """What the platform's interpreter needs: its base installation, the platform's virtualenv
    and, for a source checkout, the directory the `fogline` package is in."""
    dirs = [os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix)]
    source = os.path.realpath(Path(fogline.__file__).parent.parent)
    dirs.append(source)
    unique: list[str] = []
    for d in sorted(set(dirs), key=len):
        if not any(d == u or d.startswith(u + os.sep) for u in unique):
            unique.append(d)
    return unique


def platform_site_dirs() -> list[str]:
    import site

    return [p for p in site.getsitepackages() if os.path.isdir(p)]


@dataclass(frozen=True)
class SandboxView:
    """One sandboxed run: who, what it sees, and how it reaches out."""

    uid: int
    gid: int
    package_dir: Path | None
    image: Path
    run_dir: Path  # host side of /run/fogline
    wheels: Path | None = None  # what pip installs from, while building its virtualenv


def write_identity_files(run_dir: Path, uid: int, gid: int) -> dict[str, Path]:
    """/etc/passwd, /etc/group and /etc/hosts of the sandbox: the model's user, nothing else."""
    files = {
        "passwd": f"model:x:{uid}:{gid}:model:{STATE_DIR}:/usr/sbin/nologin\n",
        "group": f"model:x:{gid}:\n",
        "hosts": "127.0.0.1 localhost\n::1 localhost\n",
    }
    etc = run_dir.parent / "etc"
    etc.mkdir(mode=0o700, exist_ok=True)
    paths = {}
    for name, text in files.items():
        path = etc / name
        path.unlink(missing_ok=True)
        path.write_text(text)
        os.chown(path, uid, gid)
        path.chmod(0o400)
        paths[name] = path
    return paths


def give_to(root: Path, uid: int) -> None:
    """The model's uid owns what it reads (its package, its wheels: 0700/0600 like all of the
    data dir), so it can read them inside the sandbox, where they are mounted read-only."""
    for path in [root, *root.rglob("*")]:
        os.chown(path, uid, uid, follow_symlinks=False)


def bwrap_command(
    bwrap: str,
    view: SandboxView,
    env: dict[str, str],
    command: list[str],
    cwd: str,
) -> tuple[list[str], list[dict[str, Any]], dict[str, Any]]:
    """The bubblewrap command line, with the stage binds and the image the launcher makes
    (as root) before it drops to the model's uid. Returns (argv, binds, image)."""
    from fogline.models.runtimes.launch import STAGE

    binds: list[dict[str, Any]] = []

    def staged(source: Path | str, dest: str, mode: str) -> list[str]:
        name = f"b{len(binds)}"
        binds.append({"source": str(source), "stage": name})
        flag = "--ro-bind" if mode == "ro" else "--bind"
        return [flag, f"{STAGE}/{name}", dest]

    args = [
        bwrap,
        "--unshare-all",
        "--unshare-user",
        "--disable-userns",
        "--die-with-parent",
        "--new-session",
        "--hostname",
        "model",
        "--ro-bind",
        "/usr",
        "/usr",
    ]
    for name in TOP_LEVEL:
        path = Path("/") / name
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    for name in ETC_READABLE:
        args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    for name, path in write_identity_files(view.run_dir, view.uid, view.gid).items():
        args += staged(path, f"/etc/{name}", "ro")
    # The model's state and /tmp first: the platform's code may itself live under /tmp (a
    # checkout there), and a later mount must not hide it.
    image = {"source": str(view.image), "stage": "state", "make": ["tmp"]}
    tmp = "/tmp"  # noqa: S108 - the sandbox's own, inside the model's disk image
    args += ["--bind", f"{STAGE}/state", STATE_DIR, "--bind", f"{STAGE}/state/tmp", tmp]
    for d in platform_code_dirs():
        args += staged(d, d, "ro")
    if view.package_dir is not None:
        args += staged(view.package_dir, PACKAGE_DIR, "ro")
    else:
        args += ["--dir", PACKAGE_DIR]
    if view.wheels is not None:
        args += staged(view.wheels, WHEELS_DIR, "ro")
    args += staged(view.run_dir, RUN_DIR, "rw")
    args += ["--proc", "/proc", "--dev", "/dev", "--clearenv"]
    for key, value in env.items():
        args += ["--setenv", key, value]
    args += ["--chdir", cwd, "--", *command]
    return args, binds, image


def shim_command(forwards: list[dict[str, Any]], command: list[str]) -> list[str]:
    return [
        sys.executable,
        "-I",
        "-m",
        "fogline.models.runtimes.shim",
        json.dumps({"forwards": forwards}),
        "--",
        *command,
    ]
