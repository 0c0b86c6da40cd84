"""`fogline library show` and `import --param` as a user runs them."""

from __future__ import annotations

import json

from tests.e2e.conftest import RunningPlatform


def test_library_parameters_shown_and_set_at_import(platform_process: RunningPlatform) -> None:
    p = platform_process
    r = p.cli("library", "show", "temperature-anomaly")
    assert r.returncode == 0, r.stderr
    out = " ".join(r.stdout.split())
    for expected in ("warm_up", "integer", "20..100000", "what it trades", "--param window="):
        assert expected in out, out

    r = p.cli("--json", "library", "show", "temperature-anomaly")
    assert json.loads(r.stdout)["parameters"]["alarm"]["default"] == 1.6

    r = p.cli("library", "import", "temperature-anomaly", "--param", "warm_up=5")
    assert r.returncode == 2
    assert "manifest.parameters.warm_up.value: 5 is below the minimum 20" in " ".join(
        r.stderr.split()
    )
    r = p.cli("library", "import", "temperature-anomaly", "--param", "warm_upp=20")
    assert r.returncode == 2 and "it has: alarm, bins, calibration" in " ".join(r.stderr.split())

    r = p.cli(
        "library", "import", "temperature-anomaly", "--param", "warm_up=30", "--version", "1.1.0"
    )
    assert r.returncode == 0, r.stderr
    r = p.cli("--json", "model", "show", "temperature-anomaly", "1.1.0")
    manifest = json.loads(r.stdout)["manifest"]["manifest"]
    assert manifest["version"] == "1.1.0"
    assert manifest["parameters"]["warm_up"]["value"] == 30
