"""The bubblewrap command line of a model's sandbox, read as a reviewer would."""

from __future__ import annotations

import os
from pathlib import Path

from fogline.models.runtimes import sandbox


def _argv(tmp_path: Path) -> list[str]:
    run = tmp_path / "work" / "run"
    run.mkdir(parents=True)
    view = sandbox.SandboxView(
        os.getuid(), os.getgid(), tmp_path / "pkg", tmp_path / "work" / "state.img", run
    )
    argv, _binds, _image = sandbox.bwrap_command("bwrap", view, {"A": "1"}, ["python"], "/")
    return argv


def test_the_model_tmp_never_hides_the_platforms_code(tmp_path: Path) -> None:
    """A checkout under /tmp (a fresh clone there): the model's /tmp is mounted first."""
    argv = _argv(tmp_path)
    tmp_mount = argv.index("/tmp")
    for directory in sandbox.platform_code_dirs():
        assert argv.index(directory, 1) > tmp_mount, directory


def test_no_network_no_nested_namespaces_and_a_clean_environment(tmp_path: Path) -> None:
    argv = _argv(tmp_path)
    assert {"--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent"} <= set(argv)
    assert "--share-net" not in argv
    assert argv.index("--clearenv") < argv.index("--setenv")
    assert not any(a in argv for a in ("/etc/shadow", "/etc/machine-id", "/root/.fogline"))
