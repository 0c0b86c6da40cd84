"""A platform with TLS still gets the answers of its local asynchronous models: they call back
on the API's plain loopback listener, having no certificate to trust."""

from __future__ import annotations

import socket
import ssl
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from fogline.app.platform import Platform
from fogline.bus.errors import PortInUse
from tests import model_kit as k
from tests.certs import TestCA
from tests.conftest import Api, free_port
from tests.integration.test_model_deployment import outputs_of


async def test_an_async_model_answers_a_platform_with_tls(
    platform_settings: Any, tmp_path: Path
) -> None:
    ca = TestCA(tmp_path / "pki")
    server = ca.issue("server", "fogline test server", server=True)
    p = Platform(platform_settings(tls_cert_file=server.cert, tls_key_file=server.key))
    await p.start()
    api = Api(p.http_url, p.bootstrap.admin_key)
    await api.http.aclose()
    api.http = httpx.AsyncClient(
        base_url=p.http_url + "/api/v1",
        headers={"Authorization": f"Bearer {api.key}"},
        verify=ssl.create_default_context(cafile=str(ca.cert_file)),
        timeout=30,
    )
    try:
        assert p.http_url.startswith("https://")
        await k.sensors(api, "s1")
        text = k.manifest("tls-mean", [{"dataColumnName": "mean"}], None, **{"async": True})
        name = await k.submit(api, text, {"model.py": k.WINDOW_MEAN})
        await k.map_type(api, name)
        r = await api.http.post(f"/tenants/default/models/{name}/1.0.0/deploy")
        assert r.status_code == 202, r.text
        await k.wait_state(api, name, "active")
        await k.send(api, "s1", int(time.time() * 1000), 21.0)
        points = await outputs_of(api, "s1", "mean")  # answered on the callback listener
        assert points[0][1] == pytest.approx(21.0)
    finally:
        await api.close()
        await p.stop()


async def test_a_taken_mqtt_tls_port_fails_the_start_before_anything_is_made(
    platform_settings: Any, tmp_path: Path
) -> None:
    ca = TestCA(tmp_path / "pki")
    server = ca.issue("server", "fogline test server", server=True)
    settings = platform_settings(
        tls_cert_file=server.cert, tls_key_file=server.key, mqtt_tls_port=free_port()
    )
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", settings.mqtt_tls_port))
        holder.listen(1)
        with pytest.raises(PortInUse) as caught:
            await Platform(settings).start()
    assert str(caught.value) == (
        f"MQTT port 127.0.0.1:{settings.mqtt_tls_port} is already in use; "
        "stop what holds it or choose another port with FOGLINE_MQTT_TLS_PORT"
    )
    assert not (settings.data_dir / "fogline.db").exists()
