"""`fogline bench e2e` as a user runs it, small: every published reading comes back scored,
in both phases, and the run leaves nothing behind. (Its figures are printed, not asserted.)"""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.e2e.conftest import start_platform


def test_bench_e2e_scores_every_reading_and_cleans_up(tmp_path: Path) -> None:
    p = start_platform(tmp_path / "data")
    try:
        result = p.cli(
            "--json",
            "bench",
            "e2e",
            "--rate", "300",
            "--duration", "3",
            "--models", "4",
            "--fleet-rate", "120",
            "--devices", "2",
            "--batch", "3",
            timeout=240,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        report = json.loads(result.stdout)
        for phase in (report["latency"], report["fleet"]):
            assert phase["published_readings"] > 0
            assert phase["scored_readings"] == phase["published_readings"], phase
            assert phase["inputs_without_output"] == 0
            assert phase["dropped_by_companions"] == phase["failed_calls"] == 0
            assert phase["output_committed"]["samples"] > 0
        assert report["fleet"]["models_fed"] == 4
        assert report["latency"]["input_committed"]["samples"] > 0

        headers = {"Authorization": f"Bearer {p.api_key()}"}
        with httpx.Client(base_url=f"{p.url}/api/v1", headers=headers) as http:
            models = http.get("/tenants/default/models").json()
            assert [m for m in models if m["state"] != "removed"] == []
            assert http.get("/tenants/default/assets").json() == []
            assert http.get("/tenants/default/devices").json() == []
            assert http.get("/tenants/default/asset-types").json() == []

        refused = p.cli("bench", "e2e", "--models", "999", "--devices", "1", "--batch", "2")
        assert refused.returncode != 0
        assert "models" in refused.stdout + refused.stderr
    finally:
        p.stop()
