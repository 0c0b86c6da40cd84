"""TLS on a real site: `fogline up` with a certificate made here serves the API over HTTPS and
MQTT over TLS, for real clients (httpx, mosquitto_pub, paho) and the CLI (through client.json).
One platform for the module; mutual TLS (device certificates) starts a second one."""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.certs import Issued, TestCA
from tests.conftest import MOTOR_TYPE, free_port, wait_for
from tests.e2e.conftest import FOGLINE, RunningPlatform, start_platform
from tests.mqtt_client import Device

MOSQUITTO_PUB = shutil.which("mosquitto_pub")


class TlsSite:
    def __init__(self, running: RunningPlatform, ca: TestCA, mqtt_tls_port: int) -> None:
        self.running = running
        self.ca = ca
        self.mqtt_tls_port = mqtt_tls_port
        self.url = f"https://localhost:{running.http_port}"
        self.http = httpx.Client(
            base_url=self.url + "/api/v1",
            headers={"Authorization": f"Bearer {running.api_key()}"},
            verify=ssl.create_default_context(cafile=str(ca.cert_file)),
            timeout=30,
        )
        self._devices = 0

    def device(self) -> dict[str, Any]:
        """A new device of asset m1; its credentials."""
        self._devices += 1
        r = self.http.post("/tenants/default/devices", json={"id": f"d{self._devices}"})
        assert r.status_code == 201, r.text
        creds: dict[str, Any] = r.json()["credentials"]
        return creds

    def stored(self, rpm: int, ts: int) -> bool:
        r = self.http.get(
            "/tenants/default/assets/m1/telemetry/history",
            params={"keys": "rpm", "from": str(ts), "to": str(ts + 1)},
        )
        assert r.status_code == 200, r.text
        points = r.json()["series"].get("rpm", {}).get("points", [])
        return [ts, rpm] in [[p[0], p[1]] for p in points]


def _start(tmp: Path, ca: TestCA, server: Issued, **extra: str) -> tuple[RunningPlatform, int]:
    tls_port = free_port()
    running = start_platform(
        tmp / "data",
        extra_env={
            "FOGLINE_HTTP_HOST": "127.0.0.1",
            "FOGLINE_TLS_CERT_FILE": str(server.cert),
            "FOGLINE_TLS_KEY_FILE": str(server.key),
            "FOGLINE_MQTT_TLS_PORT": str(tls_port),
            **extra,
        },
    )
    return running, tls_port


def _stop(running: RunningPlatform) -> None:
    if running.process.poll() is None:
        running.stop()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsSite]:
    tmp = tmp_path_factory.mktemp("tls")
    ca = TestCA(tmp / "pki")
    server = ca.issue("server", "fogline test server", server=True)
    running, tls_port = _start(tmp, ca, server)
    site = TlsSite(running, ca, tls_port)
    r = site.http.put("/tenants/default/asset-types/motor", json=MOTOR_TYPE)
    assert r.status_code in (200, 201), r.text
    r = site.http.post(
        "/tenants/default/assets",
        json={"id": "m1", "asset_type": "motor", "attributes": {"power_kw": 7.5}},
    )
    assert r.status_code == 201, r.text
    yield site
    site.http.close()
    _stop(running)


def _refused(device: Device) -> bool:
    """True when the broker closes the connection (or the handshake fails) with no CONNACK."""
    try:
        device.client.connect(device.host, device.port, keepalive=30)
    except (OSError, ssl.SSLError):
        return True
    device.client.loop_start()
    try:
        wait_for(
            lambda: device.connected.is_set() or device.disconnects,
            timeout=10,
            what="a CONNACK or the connection closed",
        )
        return not device.connected.is_set()
    finally:
        device.close()


def _reading(rpm: int) -> tuple[int, bytes]:
    ts = int(time.time() * 1000) - 1000 + rpm
    return ts, json.dumps({"asset": "m1", "ts": ts, "values": {"rpm": rpm}}).encode()


def test_the_api_answers_over_https_to_a_client_that_trusts_the_ca(site: TlsSite) -> None:
    r = site.http.get("/ready")
    assert r.status_code == 200, r.text
    system = site.http.get("/system").json()
    assert system["http"] == f"https://127.0.0.1:{site.running.http_port}"
    assert system["mqtt"] == f"mqtts://127.0.0.1:{site.mqtt_tls_port}"
    listeners = {entry["name"]: entry for entry in system["listeners"]}
    assert listeners["http"] == {
        "name": "http",
        "host": "127.0.0.1",
        "port": site.running.http_port,
        "tls": True,
        "client_certificates": False,
    }
    assert (listeners["mqtt"]["port"], listeners["mqtt"]["tls"]) == (site.mqtt_tls_port, True)
    # Beside the HTTPS API, a plain listener on loopback for local models' answers.
    callbacks = listeners["http-callbacks"]
    assert (callbacks["host"], callbacks["tls"]) == ("127.0.0.1", False)
    r = httpx.get(f"http://127.0.0.1:{callbacks['port']}/api/v1/health")
    assert r.status_code == 200, r.text
    # Nothing plain is left where devices connect: the one MQTT listener is the TLS one.
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", site.running.mqtt_port)) != 0


def test_the_api_refuses_a_client_that_does_not_trust_the_certificate(site: TlsSite) -> None:
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{site.url}/api/v1/health")
    # Plain HTTP to the HTTPS port gets no answer of the API.
    with pytest.raises(httpx.HTTPError):
        r = httpx.get(f"http://127.0.0.1:{site.running.http_port}/api/v1/health", timeout=5)
        r.raise_for_status()


def test_the_cli_finds_the_https_platform_through_client_json(site: TlsSite) -> None:
    client = json.loads((site.running.data_dir / "client.json").read_text())
    assert client["url"].startswith("https://")
    assert Path(client["ca_file"]).is_file()
    done = site.running.cli("status")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"mqtt 127.0.0.1:{site.mqtt_tls_port} (TLS)" in done.stdout
    assert f"http 127.0.0.1:{site.running.http_port} (TLS)" in done.stdout
    # Told to trust another certificate, the CLI refuses the platform's, clearly.
    other = TestCA(site.ca.directory / "other", "Other CA")
    env = {**site.running.env, "FOGLINE_CA_FILE": str(other.cert_file)}
    refused = subprocess.run(
        [FOGLINE, "status"], env=env, capture_output=True, text=True, timeout=60
    )
    assert refused.returncode != 0
    assert "CERTIFICATE_VERIFY_FAILED" in refused.stderr, refused.stderr
    said = " ".join(refused.stderr.split())
    assert "its TLS certificate is not one this machine trusts" in said, said
    assert "FOGLINE_CA_FILE" in said and "start one with" not in said
    # Plain HTTP to the HTTPS port: told to use https://.
    env = {**site.running.env, "FOGLINE_URL": f"http://127.0.0.1:{site.running.http_port}"}
    plain = subprocess.run([FOGLINE, "status"], env=env, capture_output=True, text=True)
    said = " ".join(plain.stderr.split())
    assert plain.returncode != 0 and "use https://" in said, said


@pytest.mark.skipif(MOSQUITTO_PUB is None, reason="mosquitto_pub is not installed")
def test_mosquitto_pub_publishes_over_tls(site: TlsSite) -> None:
    creds = site.device()
    ts, payload = _reading(11)
    assert MOSQUITTO_PUB is not None
    done = subprocess.run(
        [
            MOSQUITTO_PUB,
            *("-h", "localhost", "-p", str(site.mqtt_tls_port)),
            *("--cafile", str(site.ca.cert_file)),
            *("-u", creds["username"], "-P", creds["password"], "-i", "mosquitto-tls"),
            *("-t", creds["topic"], "-q", "1", "-m", payload.decode()),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    wait_for(lambda: site.stored(11, ts), what="the reading mosquitto_pub sent")


def test_paho_publishes_over_tls_and_plain_text_is_refused(site: TlsSite) -> None:
    creds = site.device()
    device = Device("127.0.0.1", site.mqtt_tls_port, creds["username"], creds["password"], "p1")
    device.client.tls_set(ca_certs=str(site.ca.cert_file))
    reason = device.connect()
    try:
        assert not reason.is_failure, reason
        ts, payload = _reading(12)
        device.publish(creds["topic"], payload)
        wait_for(lambda: site.stored(12, ts), what="the reading paho sent over TLS")
    finally:
        device.close()
    # The same device without TLS: the TLS port does not take plain MQTT.
    plain = Device("127.0.0.1", site.mqtt_tls_port, creds["username"], creds["password"], "p2")
    assert _refused(plain)


def test_mutual_tls_needs_a_device_certificate(tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "pki")
    server = ca.issue("server", "fogline test server", server=True)
    device_ca = TestCA(tmp_path / "pki", "Device CA")
    good = device_ca.issue("device", "d1", server=False)
    stranger = ca.issue("stranger", "d1", server=False)  # signed, but not by the device CA
    # On every address, as at a site; devices are told the name the certificate carries.
    running, tls_port = _start(
        tmp_path,
        ca,
        server,
        FOGLINE_TLS_CLIENT_CA_FILE=str(device_ca.cert_file),
        FOGLINE_MQTT_HOST="0.0.0.0",
        FOGLINE_PUBLIC_HOST="localhost",
    )
    site = TlsSite(running, ca, tls_port)
    try:
        site.http.put("/tenants/default/asset-types/motor", json=MOTOR_TYPE).raise_for_status()
        site.http.post(
            "/tenants/default/assets",
            json={"id": "m1", "asset_type": "motor", "attributes": {"power_kw": 7.5}},
        ).raise_for_status()
        listeners = {e["name"]: e for e in site.http.get("/system").json()["listeners"]}
        assert listeners["mqtt"]["client_certificates"] is True
        creds = site.device()
        assert creds["mqtt"] == f"mqtts://localhost:{tls_port}"

        def connect(client_id: str, cert: Issued | None) -> Any:
            device = Device("localhost", tls_port, creds["username"], creds["password"], client_id)
            device.client.tls_set(
                ca_certs=str(ca.cert_file),
                certfile=str(cert.cert) if cert else None,
                keyfile=str(cert.key) if cert else None,
            )
            return device

        assert _refused(connect("no-certificate", None))
        assert _refused(connect("stranger", stranger))

        device = connect("accepted", good)
        reason = device.connect()
        try:
            assert not reason.is_failure, reason
            ts, payload = _reading(13)
            device.publish(creds["topic"], payload)
            wait_for(lambda: site.stored(13, ts), what="the reading of the device with a cert")
        finally:
            device.close()
    finally:
        site.http.close()
        _stop(running)
