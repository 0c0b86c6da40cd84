"""`fogline bench e2e` and `fogline bench faults` as a user runs them, small: every published
reading comes back scored (e2e), every acknowledged reading is stored through a fault (faults),
and the runs leave nothing behind. (Their figures are printed, not asserted.)"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import httpx

from tests.e2e.conftest import FOGLINE, start_platform


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


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            environ = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if text in cmdline or text in environ:
            found.append(f"{pid}: {cmdline}")
    return found


def test_bench_faults_historian_freeze_loses_nothing_and_leaves_nothing_running(
    tmp_path: Path,
) -> None:
    work = tmp_path / "work"
    result = subprocess.run(
        [
            FOGLINE, "--json", "bench", "faults", "--fault", "historian-freeze",
            "--rate", "150", "--devices", "2", "--batch", "3",
            "--warmup", "1", "--duration", "2", "--after", "1", "--recovery-timeout", "30",
            "--work-dir", str(work),
        ],
        capture_output=True, text=True, timeout=240,
        env={k: v for k, v in os.environ.items() if not k.startswith("FOGLINE_")},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True
    [fault] = report["faults"]
    assert fault["fault"] == "historian-freeze" and fault["status"] == "ok"
    for name in ("published", "acknowledged", "stored", "lost", "duplicated", "recovery_s"):
        assert name in fault, name
    assert fault["acknowledged"] > 0
    assert fault["lost"] == 0 and fault["foreign"] == 0
    assert fault["stored"] >= fault["acknowledged"]
    assert fault["recovery_s"] is not None
    assert fault["details"]["historian_pid"] > 0
    assert (work / "historian-freeze" / "platform.log").is_file()
    assert _processes_mentioning(str(work)) == []  # platform, broker, historian all gone


def test_bench_faults_refuses_an_unknown_fault_before_starting_anything(tmp_path: Path) -> None:
    result = subprocess.run(
        [FOGLINE, "bench", "faults", "--fault", "meteor", "--work-dir", str(tmp_path / "w")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "meteor" in result.stderr
    assert not (tmp_path / "w").exists()
