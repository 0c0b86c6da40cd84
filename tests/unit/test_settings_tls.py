"""TLS settings: what is wrong with a certificate, its key or the client CA is said in one
answer, before anything is made."""

from __future__ import annotations

from pathlib import Path

import pytest

from fogline.app.settings import load_settings
from fogline.bus.server import EmbeddedNats, EmbeddedNatsSettings, MqttTls
from fogline.bus.subjects import Subjects
from fogline.client.http import resolve_connection
from fogline.domain.errors import ConfigurationError
from tests.certs import TestCA


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[TestCA, Path, Path, Path]:
    ca = TestCA(tmp_path_factory.mktemp("pki"))
    one = ca.issue("one", "one", server=True)
    two = ca.issue("two", "two", server=True)
    return ca, one.cert, one.key, two.key


def problems_of(**settings: object) -> dict[str, str]:
    with pytest.raises(ConfigurationError) as caught:
        load_settings(**settings)
    return {p.field: p.reason for p in caught.value.problems}


def test_good_tls_settings_move_mqtt_to_its_tls_port(
    tmp_path: Path, pki: tuple[TestCA, Path, Path, Path]
) -> None:
    ca, cert, key, _ = pki
    s = load_settings(
        data_dir=tmp_path / "data",
        tls_cert_file=cert,
        tls_key_file=key,
        tls_client_ca_file=ca.cert_file,
        mqtt_host="0.0.0.0",
    )
    assert s.tls and s.mqtt_listen_port == s.mqtt_tls_port == 18883
    assert not (tmp_path / "data").exists()
    plain = load_settings(data_dir=tmp_path / "data")
    assert not plain.tls and plain.mqtt_listen_port == plain.mqtt_port == 18830
    assert (plain.mqtt_host, plain.http_host) == ("127.0.0.1", "127.0.0.1")


def test_a_certificate_without_its_key_and_the_reverse(
    tmp_path: Path, pki: tuple[TestCA, Path, Path, Path]
) -> None:
    ca, cert, key, _ = pki
    assert "its key is needed" in problems_of(data_dir=tmp_path, tls_cert_file=cert)["tls_key_file"]
    assert "its certificate" in problems_of(data_dir=tmp_path, tls_key_file=key)["tls_cert_file"]
    found = problems_of(data_dir=tmp_path, tls_client_ca_file=ca.cert_file)
    assert "client certificates need TLS" in found["tls_client_ca_file"]


def test_every_tls_problem_in_one_answer_with_the_others(
    tmp_path: Path, pki: tuple[TestCA, Path, Path, Path]
) -> None:
    _, cert, _, other_key = pki
    missing = tmp_path / "nowhere.pem"
    found = problems_of(
        data_dir=tmp_path,
        tls_cert_file=cert,
        tls_key_file=missing,
        tls_client_ca_file=missing,
        hot_retention="x",
        http_port=99999,
    )
    assert set(found) == {"tls_key_file", "tls_client_ca_file", "hot_retention", "http_port"}
    assert found["tls_key_file"] == f"cannot read {missing}: No such file or directory"
    # A key that is not the certificate's own.
    found = problems_of(data_dir=tmp_path, tls_cert_file=cert, tls_key_file=other_key)
    assert found == {
        "tls_key_file": f"{cert} with {other_key}: the key does not match the certificate"
    }


def test_files_that_are_not_pem_and_ports_said_twice(
    tmp_path: Path, pki: tuple[TestCA, Path, Path, Path]
) -> None:
    _, _, key, _ = pki
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    found = problems_of(
        data_dir=tmp_path,
        tls_cert_file=junk,
        tls_key_file=key,
        tls_client_ca_file=junk,
        mqtt_tls_port=8470,
    )
    assert set(found) == {"tls_cert_file", "tls_client_ca_file", "mqtt_tls_port"}
    assert found["tls_cert_file"] == f"{junk} is not a PEM certificate"
    assert found["tls_client_ca_file"] == f"{junk} is not a PEM CA certificate"
    assert found["mqtt_tls_port"] == "8470 is also http_port"
    # Without TLS the TLS port is not used, so it may be anything.
    load_settings(data_dir=tmp_path, mqtt_tls_port=8470)


def test_nats_server_gets_the_tls_block(
    tmp_path: Path, pki: tuple[TestCA, Path, Path, Path]
) -> None:
    ca, cert, key, _ = pki
    settings = EmbeddedNatsSettings(
        directory=tmp_path,
        mqtt_host="0.0.0.0",
        mqtt_port=18883,
        mqtt_tls=MqttTls(cert, key, ca.cert_file),
    )
    config = EmbeddedNats(settings, Subjects("fogline")).render_config([])
    assert config["host"] == "127.0.0.1"  # the platform's own NATS port stays on loopback
    assert config["mqtt"] == {
        "host": "0.0.0.0",
        "port": 18883,
        "tls": {
            "cert_file": str(cert),
            "key_file": str(key),
            "timeout": 5.0,
            "ca_file": str(ca.cert_file),
            "verify": True,
        },
    }


def test_the_cli_trusts_what_client_json_names_for_its_own_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FOGLINE_URL", raising=False)
    monkeypatch.delenv("FOGLINE_CA_FILE", raising=False)
    (tmp_path / "client.json").write_text(
        '{"url": "https://localhost:8470", "api_key": "k", "ca_file": "/pki/cert.pem"}'
    )
    assert resolve_connection(None, None, tmp_path).ca_file == "/pki/cert.pem"
    # Another platform's URL: not the certificate of the local one.
    assert resolve_connection("https://elsewhere:8470", None, tmp_path).ca_file is None
    monkeypatch.setenv("FOGLINE_CA_FILE", "/site/ca.pem")
    assert resolve_connection("https://elsewhere:8470", None, tmp_path).ca_file == "/site/ca.pem"


def test_an_encrypted_key_is_refused_not_prompted_for(
    tmp_path: Path, pki: tuple[TestCA, Path, Path, Path]
) -> None:
    from cryptography.hazmat.primitives import serialization

    _, cert, key, _ = pki
    loaded = serialization.load_pem_private_key(key.read_bytes(), None)
    encrypted = tmp_path / "encrypted-key.pem"
    encrypted.write_bytes(
        loaded.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    found = problems_of(data_dir=tmp_path, tls_cert_file=cert, tls_key_file=encrypted)
    assert found == {
        "tls_key_file": f"{encrypted} is an encrypted key: give the key unencrypted (PEM, not "
        "encrypted; e.g. `openssl pkey -in KEY -out KEY.plain`), nats-server cannot read an "
        "encrypted one"
    }


def test_a_file_that_is_no_certificate_is_named_as_the_certificate(
    tmp_path: Path, pki: tuple[TestCA, Path, Path, Path]
) -> None:
    """The outside review: /etc/passwd as the certificate with a good key is the certificate's
    problem; with the key unset or missing, the certificate's own problem is said too."""
    _, _, key, _ = pki
    passwd = tmp_path / "passwd"
    passwd.write_text("root:x:0:0:root:/root:/bin/bash\n")
    found = problems_of(data_dir=tmp_path, tls_cert_file=passwd, tls_key_file=key)
    assert found == {"tls_cert_file": f"{passwd} is not a PEM certificate"}
    found = problems_of(data_dir=tmp_path, tls_cert_file=passwd)
    assert found == {
        "tls_cert_file": f"{passwd} is not a PEM certificate",
        "tls_key_file": "tls_cert_file is set: its key is needed too",
    }
    missing = tmp_path / "missing-key.pem"
    found = problems_of(data_dir=tmp_path, tls_cert_file=passwd, tls_key_file=missing)
    assert found["tls_cert_file"] == f"{passwd} is not a PEM certificate"
    assert found["tls_key_file"].startswith(f"cannot read {missing}")
    found = problems_of(data_dir=tmp_path, tls_cert_file=key, tls_key_file=passwd)
    assert found == {
        "tls_cert_file": f"{key} is not a PEM certificate",
        "tls_key_file": f"{passwd} is not a PEM private key (PEM, not encrypted)",
    }
