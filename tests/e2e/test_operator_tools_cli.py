"""`fogline device import` and `fogline telemetry export` as an operator runs them."""

from __future__ import annotations

import csv
import io
import os
import socket
import stat
import subprocess
import threading
from pathlib import Path

import httpx

from fogline.domain.timeseries import now_ms
from tests.conftest import MOTOR_TYPE, wait_for
from tests.e2e.conftest import FOGLINE, RunningPlatform
from tests.mqtt_client import Device

BAD_FILE = """id,name,labels,cpu_cores,colour
pump-1,Pump 1,site=north;line=2,4,red
Pump 2,Bad id,,,
pump-3,,site,,
pump-4,,,four,
pump-1,twice,,,
taken,exists,,,
pump-7,,,0,
"""


def _api(p: RunningPlatform) -> httpx.Client:
    return httpx.Client(
        base_url=f"{p.url}/api/v1", headers={"Authorization": f"Bearer {p.api_key()}"}
    )


def test_device_import_all_or_nothing_and_credentials_file(
    platform_process: RunningPlatform, tmp_path: Path
) -> None:
    p = platform_process
    api = _api(p)
    assert api.post("/tenants/default/devices", json={"id": "taken"}).status_code == 201
    bad = tmp_path / "bad.csv"
    bad.write_text(BAD_FILE)
    creds = tmp_path / "creds.csv"

    r = p.cli("device", "import", str(bad), "--credentials", str(creds))
    assert r.returncode == 2, (r.stdout, r.stderr)
    err = " ".join(r.stderr.split())  # rich may wrap long lines
    # One answer: the unknown column with the rows' problems, the count the list's, each row
    # and column named as the file has them.
    for expected in [
        "7 problems",
        "column 'colour': unknown: the columns are id,",
        "row 2 (line 3) id: 'Pump 2' is not a slug",
        "row 3 (line 4) labels: 'site' is not key=value",
        "row 4 (line 5) cpu_cores: 'four' is not a whole number",
        "row 5 (line 6) id: 'pump-1' is also the id of row 1 (line 2)",
        "row 6 (line 7) id: device 'taken' already exists",
        "row 7 (line 8) cpu_cores:",
    ]:
        assert expected in err, err
    assert "hardware." not in err and "devices." not in err, err
    assert not creds.exists()
    assert [d["id"] for d in api.get("/tenants/default/devices").json()] == ["taken"]

    good = tmp_path / "good.csv"
    good.write_text(
        "id,name,labels,connectivity\npump-1,Pump 1,site=north;line=2,wifi\npump-2,,,\n"
    )
    creds.write_text("someone else's\n")
    r = p.cli("device", "import", str(good), "--credentials", str(creds))
    assert r.returncode == 2 and "never overwritten" in r.stderr, r.stderr
    assert creds.read_text() == "someone else's\n"
    creds.unlink()

    r = p.cli("device", "import", str(good), "--credentials", str(creds))
    assert r.returncode == 0, r.stderr
    assert "2 device(s) registered" in r.stdout
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    rows = list(csv.DictReader(io.StringIO(creds.read_text())))
    assert [row["id"] for row in rows] == ["pump-1", "pump-2"]
    for row in rows:
        assert row["password"] not in r.stdout + r.stderr
    pump1 = api.get("/tenants/default/devices/pump-1").json()
    assert pump1["labels"] == {"site": "north", "line": "2"}
    assert pump1["hardware"] == {"connectivity": "wifi"}

    device = Device("127.0.0.1", p.mqtt_port, rows[1]["username"], rows[1]["password"], "e2e-p2")
    try:
        assert not device.connect().is_failure
    finally:
        device.close()

    # The same file again: every row a conflict (409: exit 4), nothing written.
    again = tmp_path / "again.csv"
    r = p.cli("device", "import", str(good), "--credentials", str(again))
    assert r.returncode == 4, r.stderr
    assert "row 1 (line 2) id: device 'pump-1' already exists" in " ".join(r.stderr.split())
    assert not again.exists()


def test_device_import_whose_answer_is_lost_says_how_to_find_out(tmp_path: Path) -> None:
    """The connection breaks after the request went out: the devices may exist with passwords
    nobody has, and the message says how to learn that and how to get new ones."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def take_and_drop() -> None:  # reads the whole request, then the line goes dead
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(10)
            while b"pump-2" not in (data := conn.recv(65536)) and data:
                pass

    thread = threading.Thread(target=take_and_drop, daemon=True)
    thread.start()
    good = tmp_path / "good.csv"
    good.write_text("id,name\npump-1,Pump 1\npump-2,\n")
    creds = tmp_path / "creds.csv"
    env = {**os.environ, "FOGLINE_URL": f"http://127.0.0.1:{port}", "FOGLINE_API_KEY": "k"}
    try:
        r = subprocess.run(
            [FOGLINE, "device", "import", str(good), "--credentials", str(creds)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        thread.join(10)
        listener.close()
    assert r.returncode != 0
    err = " ".join(r.stderr.split())
    assert "fogline device ls" in err and "fogline device rotate ID" in err, err
    assert not creds.exists()


def test_telemetry_export_to_a_file_and_stdout(
    platform_process: RunningPlatform, tmp_path: Path
) -> None:
    p = platform_process
    api = _api(p)
    assert api.put("/tenants/default/asset-types/motor", json=MOTOR_TYPE).status_code == 201
    asset = {"id": "m1", "asset_type": "motor", "attributes": {"power_kw": 7.5}}
    assert api.post("/tenants/default/assets", json=asset).status_code == 201
    assert api.post("/tenants/default/devices", json={"id": "d1"}).status_code == 201
    t0 = now_ms() - 600_000
    readings = [
        {"asset": "m1", "ts": t0 + i * 1000, "values": {"rpm": i, "state": f"s{i}"}}
        for i in range(500)
    ]
    r = api.post("/tenants/default/devices/d1/telemetry", json={"readings": readings})
    assert r.status_code == 202, r.text
    out = tmp_path / "m1.csv"
    args = ["telemetry", "export", "m1", "--keys", "rpm,state", "--from", "-15m"]

    def exported() -> bool:
        r = p.cli(*args, "--out", str(out))
        assert r.returncode == 0, r.stderr
        return out.read_text().count("\n") == 501

    wait_for(exported, what="every reading exported")
    rows = list(csv.reader(io.StringIO(out.read_text())))
    assert rows[0] == ["ts", "time", "rpm", "state"]
    assert [int(row[0]) for row in rows[1:]] == [t0 + i * 1000 for i in range(500)]
    assert rows[500][2:] == ["499", "s499"]

    r = p.cli(*args)  # to stdout
    assert r.returncode == 0, r.stderr
    assert r.stdout == out.read_text()  # both read with universal newlines

    r = p.cli("telemetry", "export", "m1", "--keys", "rpm,nope", "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "defines no 'nope'" in r.stderr, r.stderr
    assert not (tmp_path / "x").exists()
    r = p.cli("telemetry", "export", "nope")
    assert r.returncode == 3 and "nope" in r.stderr, r.stderr

    # Parquet: typed columns, to a file only.
    import pyarrow.parquet as pq

    r = p.cli(*args, "--format", "parquet")
    assert r.returncode == 2 and "--out" in r.stderr and "Parquet" in r.stderr, r.stderr
    parquet = tmp_path / "m1.parquet"
    r = p.cli(*args, "--format", "parquet", "--out", str(parquet))
    assert r.returncode == 0, r.stderr
    table = pq.read_table(parquet)
    assert table.column_names == ["ts", "asset", "rpm", "state"]
    assert str(table.schema.field("rpm").type) == "int64"
    assert table.column("rpm").to_pylist() == list(range(500))
    assert table.column("state").to_pylist() == [f"s{i}" for i in range(500)]
    assert [int(t.timestamp() * 1000) for t in table.column("ts").to_pylist()] == [
        t0 + i * 1000 for i in range(500)
    ]
