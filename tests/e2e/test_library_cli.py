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
    assert "parameters.warm_up: 5 is below the minimum 20" in " ".join(r.stderr.split())
    # The outside review's values: every problem in one answer, under parameters.<name>.
    given = ["nope=1", "period_s=-5", "window=abc", "bins=1e9", "warning=nan", "alarm=1.1"]
    r = p.cli("library", "import", "robust-anomaly", *(a for g in given for a in ("--param", g)))
    assert r.returncode == 2
    err = " ".join(r.stderr.split())
    for expected in (
        "6 problems",
        "parameters.nope: the model has no such parameter",
        "parameters.period_s: -5 is below the minimum 0",
        "parameters.window: 'abc' is not a whole number",
        "parameters.bins: 1000000000 is above the maximum 1440",
        "parameters.warning: 'nan' is not a number",
        "parameters: need 0 < warning <= alarm, got 1.3 and 1.1",
    ):
        assert expected in err, err
    r = p.cli("library", "import", "temperature-anomaly", "--param", "warm_upp=20")
    assert r.returncode == 2 and "it has: accept, alarm, bins, calibration" in " ".join(
        r.stderr.split()
    )

    r = p.cli(
        "library", "import", "temperature-anomaly", "--param", "warm_up=30", "--version", "1.1.0"
    )
    assert r.returncode == 0, r.stderr
    r = p.cli("--json", "model", "show", "temperature-anomaly", "1.1.0")
    manifest = json.loads(r.stdout)["manifest"]["manifest"]
    assert manifest["version"] == "1.1.0"
    assert manifest["parameters"]["warm_up"]["value"] == 30

    r = p.cli(
        "library", "import", "temperature-anomaly", "--param", "warm_up=40", "--version", "1.1.0"
    )
    said = " ".join(r.stderr.split())
    assert r.returncode == 4 and "--version X.Y.Z" in said, said
    r = p.cli(
        "library", "import", "temperature-anomaly", "--param", "window=10", "--param", "window=20"
    )
    assert r.returncode == 2 and "given twice" in r.stderr
