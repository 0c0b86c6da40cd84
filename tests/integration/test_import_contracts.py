"""The import contracts hold today, and each one breaks when the rule it states is broken: a
copy of the package with one offending import is linted with the project's own contracts."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LINT = Path(sys.executable).parent / "lint-imports"


def lint(
    tmp_path: Path, offence: tuple[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """lint-imports over a copy of src/, with `offence` = (module file, line) added to it."""
    src = tmp_path / "src"
    shutil.copytree(REPO / "src", src, ignore=shutil.ignore_patterns("__pycache__"))
    if offence is not None:
        path = src / offence[0]
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.parent / "__init__.py").touch()
        with path.open("a") as f:
            f.write(f"\n{offence[1]}\n")
    return subprocess.run(
        [str(LINT), "--config", str(REPO / "pyproject.toml"), "--no-cache"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_contracts_hold(tmp_path: Path) -> None:
    result = lint(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("offence", "broken"),
    [
        (
            ("fogline/models/mappings.py", "import fogline.fleet.assets"),
            "Peer contexts are independent BROKEN",
        ),
        (
            ("fogline/monitor/drift.py", "import fogline.ingest.queries"),
            "Layers: domain/sdk/retry < store/bus/client/saga < contexts",  # one still to come
        ),
        (("fogline/ingest/intake.py", "import nats"), "Only the bus talks to NATS BROKEN"),
        (("fogline/domain/assets.py", "import fogline.store.assets"), "BROKEN"),
        (("fogline/store/assets.py", "import fogline.models.mappings"), "BROKEN"),
    ],
    ids=["peer-contexts", "future-context", "raw-nats", "domain-up", "store-up"],
)
def test_each_contract_breaks_when_its_rule_is_broken(
    tmp_path: Path, offence: tuple[str, str], broken: str
) -> None:
    result = lint(tmp_path, offence)
    assert result.returncode != 0, result.stdout
    assert broken in result.stdout
