"""Settings: defaults, then a YAML config file, then FOGLINE_* variables, then CLI flags."""

from __future__ import annotations

import os
import re
import ssl
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fogline.disk import ReservePolicy
from fogline.domain.errors import ConfigurationError, InvalidInput, Problem
from fogline.domain.retention import Retention, platform_default
from fogline.domain.timeseries import parse_duration_ms
from fogline.models.manifest import LimitCaps

ENV_PREFIX = "FOGLINE_"
CONFIG_FILE_NAME = "fogline.yaml"


def default_data_dir() -> Path:
    return Path(os.environ.get("FOGLINE_DATA_DIR", Path.home() / ".fogline"))


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    data_dir: Path = Field(default_factory=default_data_dir)
    # Fogline's own ports; never the standard 4222/1883 that a machine's NATS or Mosquitto hold,
    # and below Linux's ephemeral range (32768-60999), where an outgoing connection may hold one.
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8470, ge=0, le=65535)
    nats_port: int = Field(default=14222, ge=1, le=65535)
    mqtt_port: int = Field(default=18830, ge=1, le=65535)
    # Where devices reach MQTT (the API has http_host). Loopback by default, as for the demo;
    # a real site says 0.0.0.0 or one of its addresses.
    mqtt_host: str = "127.0.0.1"
    # The name devices and people use for this machine, in the MQTT address a device's
    # credentials give and the banner shows, where a listener is on every address (0.0.0.0);
    # unset, the machine's host name.
    public_host: str | None = None
    # TLS (docs/operations.md): with a certificate and its key, the API serves HTTPS on
    # http_port and MQTT listens with TLS on mqtt_tls_port instead of plain on mqtt_port
    # (nats-server has one MQTT listener). With tls_client_ca_file, a device must also show a
    # certificate signed by that CA (mutual TLS), and still logs in with its password.
    mqtt_tls_port: int = Field(default=18883, ge=1, le=65535)
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None
    nats_url: str | None = None
    database_url: str | None = None
    mqtt_url: str | None = None
    subject_root: str = "fogline"
    hot_retention: str = "7d"
    # The SQL history: raw readings are deleted once older than this ("0"/"off": kept forever,
    # which must be said), and, where aggregate_retention is a duration or "forever", rolled up
    # into hourly aggregates kept that long ("off": none). Tenants and asset types override.
    history_retention: str = "90d"
    aggregate_retention: str = "off"
    retention_interval: float = Field(default=3600.0, gt=0)  # seconds between retention runs
    retention_batch_rows: int = Field(default=5000, ge=100, le=100_000)  # per transaction
    hot_max_bytes: int = Field(default=5 * 1024**3, ge=1024**2)
    # Kept free on the data dir's filesystem: new data is refused below it ("auto": 5% of the
    # filesystem, at least 16 MiB and at most 2 GiB; or a size such as 1GiB, or a percentage).
    disk_reserve: str = "auto"
    # Fogline's own nats-server is killed and restarted when it does not answer for this long.
    broker_stall_timeout: float = Field(default=30.0, ge=1.0, le=3600.0)
    max_message_bytes: int = Field(default=256 * 1024, ge=1024, le=1024**2 - 4096)
    # API request bodies (JSON documents, manifests); telemetry has max_message_bytes.
    max_request_bytes: int = Field(default=1024**2, ge=64 * 1024, le=64 * 1024**2)
    secret_key: str | None = Field(default=None, repr=False)  # Fernet key; else a key file
    amqp_url: str | None = Field(default=None, repr=False)  # RabbitMQ, for AMQP models
    # Local models run sandboxed (bubblewrap, a uid of their own: model_uid_base + model id);
    # "off" runs them unsandboxed as the platform's user, and must be chosen explicitly.
    model_sandbox: str = Field(default="bwrap", pattern="^(bwrap|off)$")
    model_sandbox_bwrap: str = "bwrap"  # the bubblewrap program
    model_uid_base: int = Field(default=2_000_000_000, ge=1000, le=4_000_000_000)
    # The most any manifest may ask for; a manifest over one is refused.
    model_max_memory_mb: int = Field(default=4096, ge=64)
    model_max_cpus: int = Field(default=max(1, os.cpu_count() or 1), ge=1)
    model_max_processes: int = Field(default=256, ge=1)
    model_max_disk_mb: int = Field(default=2048, ge=16)
    model_max_open_files: int = Field(default=4096, ge=16)
    model_max_file_size_mb: int = Field(default=1024, ge=1)
    package_max_bytes: int = Field(default=64 * 1024**2, ge=1024)  # the upload, compressed
    package_max_expanded_bytes: int = Field(default=256 * 1024**2, ge=1024)  # unpacked
    package_max_files: int = Field(default=10_000, ge=1)
    model_health_interval: float = Field(default=2.0, gt=0)
    model_start_timeout: float = Field(default=30.0, gt=0)  # to answer health after a start
    model_max_health_failures: int = Field(default=3, ge=1)
    # A crash loop: this many restarts of one model within model_restart_window seconds send
    # it to draft. Restarts back off from 0.5 s, doubling, up to model_restart_backoff_cap.
    model_restart_limit: int = Field(default=5, ge=1)
    model_restart_window: float = Field(default=600.0, gt=0)
    model_restart_backoff_cap: float = Field(default=30.0, gt=0)
    # A degraded model that has been well (no crash, health and calls fine) this long is
    # active again.
    model_stable_after: float = Field(default=10.0, ge=0)
    # Readings a model's companion holds for it at most; beyond, they are dead-lettered.
    model_queue_limit: int = Field(default=100_000, ge=100)
    # A historian with messages waiting and no commit for this long (or frozen this long) is
    # restarted.
    historian_progress_timeout: float = Field(default=30.0, gt=0)
    log_level: str = Field(default="info", pattern="^(debug|info|warning|error)$")

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None and self.tls_key_file is not None

    @property
    def mqtt_listen_port(self) -> int:
        """The port of the one MQTT listener: mqtt_tls_port with TLS, else mqtt_port."""
        return self.mqtt_tls_port if self.tls else self.mqtt_port

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'fogline.db'}"

    @property
    def hot_retention_seconds(self) -> float:
        return parse_duration_ms(self.hot_retention, "hot_retention") / 1000

    @property
    def retention_defaults(self) -> Retention:
        return platform_default(self.history_retention, self.aggregate_retention)

    @property
    def model_limit_caps(self) -> LimitCaps:
        return LimitCaps(
            memory_mb=self.model_max_memory_mb,
            cpus=self.model_max_cpus,
            processes=self.model_max_processes,
            disk_mb=self.model_max_disk_mb,
            open_files=self.model_max_open_files,
            file_size_mb=self.model_max_file_size_mb,
        )

    @property
    def runtime_dir(self) -> Path:
        return self.data_dir / "runtimes"

    @property
    def package_dir(self) -> Path:
        return self.data_dir / "packages"

    @property
    def client_file(self) -> Path:
        return self.data_dir / "client.json"


def _from_env() -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in Settings.model_fields:
        raw = os.environ.get(ENV_PREFIX + name.upper())
        if raw is not None and raw != "":
            values[name] = raw
    return values


def _from_file(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigurationError(f"cannot read the config file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"the config file {path} is not valid YAML: {exc}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigurationError(f"the config file {path} must be a mapping of settings")
    return {str(k).replace("-", "_"): v for k, v in loaded.items()}


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Merge the sources. A config file named explicitly must exist; the data dir's own
    `fogline.yaml` is read when present."""
    env = _from_env()
    given = {k: v for k, v in overrides.items() if v is not None}
    data_dir = Path(given.get("data_dir") or env.get("data_dir") or default_data_dir())
    if config_file is None and os.environ.get("FOGLINE_CONFIG"):
        config_file = Path(os.environ["FOGLINE_CONFIG"])
    if config_file is None and (data_dir / CONFIG_FILE_NAME).is_file():
        config_file = data_dir / CONFIG_FILE_NAME
    from_file = _from_file(config_file) if config_file is not None else {}
    merged = {**from_file, **env, **given}
    where = f" (config file {config_file})" if config_file else ""
    try:
        settings = Settings(**merged)
    except ValidationError as exc:
        # Every problem at once: the rules of the settings pydantic could read are checked too.
        problems = [Problem(".".join(str(p) for p in e["loc"]), e["msg"]) for e in exc.errors()]
        reported = {p.field for p in problems}
        unread = Settings.model_construct(**merged)
        problems += [p for p in _rule_problems(unread) if p.field not in reported]
        raise ConfigurationError(f"invalid settings{where}", problems) from None
    problems = _rule_problems(settings)
    if problems:
        raise ConfigurationError(f"invalid settings{where}", problems)
    return settings


def _rule_problems(settings: Settings) -> list[Problem]:
    """What the settings' own rules say (durations, sizes), each checked on its own so that
    one answer names them all; a value pydantic could not read is pydantic's to report."""
    checks = (
        lambda: settings.hot_retention_seconds,
        lambda: ReservePolicy(settings.disk_reserve).check(),
        lambda: settings.retention_defaults,
    )
    problems: list[Problem] = []
    for check in checks:
        try:
            check()
        except InvalidInput as exc:
            problems += exc.problems
        except (TypeError, ValueError, AttributeError):
            continue  # a value of the wrong type: pydantic said so already
    return problems + _tls_problems(settings) + _port_problems(settings)


def _path(value: object) -> Path | None:
    """A path setting as given (a string before pydantic has read it, when it could not)."""
    if isinstance(value, Path):
        return value
    return Path(value) if isinstance(value, str) and value else None


def _readable(path: Path, field: str) -> Problem | None:
    try:
        with path.open("rb") as f:
            f.read(1)
    except OSError as exc:
        return Problem(field, f"cannot read {path}: {exc.strerror or exc}")
    return None


def _certificate_problem(cert: Path) -> Problem | None:
    try:
        ssl.create_default_context().load_verify_locations(cafile=cert)
    except ssl.SSLError:
        return Problem("tls_cert_file", f"{cert} is not a PEM certificate")
    return None


def _key_problem(key: Path) -> Problem | None:
    """A PEM private key, not encrypted: nats-server cannot read an encrypted one, and the
    platform does not prompt for a passphrase."""
    try:
        text = key.read_text("ascii", errors="replace")
    except OSError as exc:
        return Problem("tls_key_file", f"cannot read {key}: {exc.strerror or exc}")
    if "-----BEGIN ENCRYPTED PRIVATE KEY-----" in text or "Proc-Type: 4,ENCRYPTED" in text:
        return Problem(
            "tls_key_file",
            f"{key} is an encrypted key: give the key unencrypted (PEM, not encrypted; "
            "e.g. `openssl pkey -in KEY -out KEY.plain`), nats-server cannot read an encrypted one",
        )
    if not re.search(r"-----BEGIN [A-Z ]*PRIVATE KEY-----", text):
        return Problem("tls_key_file", f"{key} is not a PEM private key (PEM, not encrypted)")
    return None


def _tls_problems(settings: Settings) -> list[Problem]:
    """A certificate needs its key (and the reverse), each file readable, the key the
    certificate's own, and a client CA a server certificate to go with."""
    cert = _path(getattr(settings, "tls_cert_file", None))
    key = _path(getattr(settings, "tls_key_file", None))
    client_ca = _path(getattr(settings, "tls_client_ca_file", None))
    problems: list[Problem] = []
    if cert is not None and key is None:
        problems.append(Problem("tls_key_file", "tls_cert_file is set: its key is needed too"))
    if key is not None and cert is None:
        problems.append(Problem("tls_cert_file", "tls_key_file is set: its certificate too"))
    if client_ca is not None and cert is None:
        problems.append(
            Problem("tls_client_ca_file", "client certificates need TLS: set tls_cert_file")
        )
    cert_problem = _readable(cert, "tls_cert_file") if cert is not None else None
    key_problem = _readable(key, "tls_key_file") if key is not None else None
    ca_problem = _readable(client_ca, "tls_client_ca_file") if client_ca is not None else None
    problems += [p for p in (cert_problem, key_problem, ca_problem) if p is not None]
    # Each file on its own first (so that one's problem does not hide or take the other's
    # name), then the two together.
    if cert is not None and cert_problem is None:
        cert_problem = _certificate_problem(cert)
    if key is not None and key_problem is None:
        key_problem = _key_problem(key)
    problems += [p for p in (cert_problem, key_problem) if p is not None]
    if cert is not None and key is not None and cert_problem is None and key_problem is None:
        try:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(cert, key, password=lambda: b"")
        except ssl.SSLError as exc:
            reason = "the key does not match the certificate"
            if "KEY_VALUES_MISMATCH" not in str(exc):
                reason = f"cannot be used together ({exc.reason or exc})"
            problems.append(Problem("tls_key_file", f"{cert} with {key}: {reason}"))
    if client_ca is not None and ca_problem is None:
        try:
            ssl.create_default_context().load_verify_locations(cafile=client_ca)
        except ssl.SSLError:
            problems.append(
                Problem("tls_client_ca_file", f"{client_ca} is not a PEM CA certificate")
            )
    return problems


def _port_problems(settings: Settings) -> list[Problem]:
    """Two listeners of the platform's own on one port: said before anything binds."""
    names = ["http_port"]
    if getattr(settings, "nats_url", None) is None:  # else no broker of our own
        tls = getattr(settings, "tls_cert_file", None) is not None
        names += ["nats_port", "mqtt_tls_port" if tls else "mqtt_port"]
    seen: dict[int, str] = {}
    problems: list[Problem] = []
    for name in names:
        try:
            port = int(getattr(settings, name, None))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue  # pydantic said so
        if port == 0:
            continue  # the HTTP port chosen by the system
        if port in seen:
            problems.append(Problem(name, f"{port} is also {seen[port]}"))
        seen.setdefault(port, name)
    return problems
