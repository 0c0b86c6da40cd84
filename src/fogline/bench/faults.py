"""`fogline bench faults`: faults injected under QoS 1 load, and every acknowledged reading
looked for afterwards.

Each fault is a run of its own: a fresh platform (`fogline up` as a subprocess, its own data
dir and free ports; on a PostgreSQL or a small tmpfs the bench starts itself where the fault
needs one), a fleet registered through the API, QoS 1 MQTT devices publishing at `rate`
readings/s with every PUBACK recorded (fault_load), the fault, then the stored history
compared reading by reading with what was published and acknowledged (fault_ledger):

- broker-kill: SIGKILL the embedded nats-server; the platform must bring it back.
- historian-freeze: SIGSTOP the historian process for `fault_s`, then SIGCONT.
- database-outage: stop the bench's PostgreSQL (immediate mode: a crash) for `fault_s`.
- disk-full: the data dir on a `tmpfs_mb` tmpfs; a ballast leaves `headroom_mb` free and then
  creeps while the load grows the data, until the platform stops acknowledging (or the disk
  is full); `hold_s` later the ballast goes and ingest must resume without a restart.
- disk-full-sudden: the same, but the ballast fills the disk to the last page at once.
- restart-storm: SIGKILL the platform process `kills` times at random moments, every other
  one during start-up, starting it again each time.

Recovery time: from the end of the fault (the kill; SIGCONT; the database back; the ballast
removed; the last kill) to the first reading published after it found in the history.
lost (acknowledged, not stored) must be 0. Everything started is taken down at the end, on
failure and on Ctrl-C too.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fogline.bench.fault_env import (
    MiB,
    PlatformProcess,
    ScratchPostgres,
    Skipped,
    SmallDisk,
)
from fogline.bench.fault_ledger import Accounting, account
from fogline.bench.fault_load import AckedLoad
from fogline.bench.fleet_load import BenchFleet
from fogline.client.http import ApiError, FoglineClient
from fogline.domain.errors import FoglineError, InvalidInput, Problem, Unavailable
from fogline.retry import block_until

FAULTS = (
    "broker-kill",
    "historian-freeze",
    "database-outage",
    "disk-full",
    "disk-full-sudden",
    "restart-storm",
)
TENANT = "default"
BENCH_TYPE = "bench-faults"
HISTORY_PAGE = 100_000  # points per history request (the API's most)
ACK_STALL_S = 3.0  # no PUBACK for this long while publishing: the platform refuses
FILL_TIMEOUT_S = 180.0  # the disk fills (or the platform refuses) within this, or it is an error
DRAIN_TIMEOUT_S = 20.0  # for the devices' last PUBACKs once publishing stops
SETTLE_STILL_S = 15.0  # the stored count has not moved for this long: compare what is there
SETTLE_TIMEOUT_S = 90.0
STORM_AFTER_READY_S = (1.0, 4.0)  # a kill under load, after the platform is up
STORM_DURING_START_S = (0.2, 2.5)  # a kill during start-up (which takes ~3-5 s on 2 cores)

Progress = Callable[[str], None]


@dataclass(frozen=True)
class FaultBenchConfig:
    faults: tuple[str, ...] = FAULTS
    rate: float = 500.0  # readings/s offered by the whole fleet
    devices: int = 4
    batch: int = 5  # assets per device (readings per message)
    warmup_s: float = 5.0  # load before the fault
    fault_s: float = 20.0  # historian frozen, database down
    hold_s: float = 10.0  # disk refusing (or full) before the ballast goes
    after_s: float = 5.0  # load after the recovery
    recovery_timeout_s: float = 60.0
    kills: int = 5
    tmpfs_mb: int = 160
    headroom_mb: int = 24
    creep_mb_per_s: float = 2.0
    seed: int | None = None
    work_dir: Path | None = None
    keep: bool = False
    postgres_user: str = "postgres"

    def check(self) -> None:
        problems = [
            Problem("fault", f"unknown fault {f!r}: choose from {', '.join(FAULTS)}")
            for f in self.faults
            if f not in FAULTS
        ]
        if self.rate <= 0:
            problems.append(Problem("rate", "must be positive readings/s"))
        if self.devices < 1 or self.batch < 1:
            problems.append(Problem("devices", "devices and batch must be positive"))
        elif self.rate / self.batch / self.devices > 500:
            problems.append(Problem("rate", "more than 500 messages/s per device: add devices"))
        if min(self.warmup_s, self.fault_s, self.hold_s, self.after_s) < 0:
            problems.append(Problem("duration", "durations cannot be negative"))
        if self.recovery_timeout_s <= 0 or self.kills < 1:
            problems.append(Problem("recovery-timeout", "timeout and kills must be positive"))
        if self.tmpfs_mb < 32 or not 0 < self.headroom_mb < self.tmpfs_mb:
            problems.append(Problem("tmpfs-mb", "at least 32 MiB, with headroom below it"))
        if problems:
            raise InvalidInput.of(problems, "fault benchmark settings")


@dataclass
class FaultRun:
    """One fault, from its own platform to the comparison."""

    name: str
    config: FaultBenchConfig
    root: Path
    progress: Progress
    details: dict[str, Any] = field(default_factory=dict)
    platform: PlatformProcess | None = None
    load: AckedLoad | None = None
    fleet: BenchFleet | None = None
    pg: ScratchPostgres | None = None
    disk: SmallDisk | None = None
    _undo: list[Callable[[], None]] = field(default_factory=list)

    # -- the run ----------------------------------------------------------------------------

    def execute(self) -> dict[str, Any]:
        c = self.config
        data_dir, extra_env = self.prepare()
        self.platform = PlatformProcess(data_dir, self.root / "platform.log", extra_env)
        self.platform.start()
        api = self.platform.client()
        run_id = uuid.uuid4().hex[:6]
        self.fleet = BenchFleet(api, TENANT, run_id, BENCH_TYPE, c.devices, c.batch, 1)
        self.fleet.provision("Fault bench sensor", [])
        since_ms = int(time.time() * 1000)
        self.load = AckedLoad(
            self.fleet.mqtt_host,
            self.fleet.mqtt_port,
            self.fleet.topic_root,
            TENANT,
            self.fleet.devices,
            c.rate,
        )
        self.load.start()
        if not block_until(lambda: self.load is not None and self.load.acks > 0, 30, 0.1):
            raise Unavailable("no PUBACK within 30 s of starting the load, before any fault")
        time.sleep(c.warmup_s)  # load, not waiting: the fault lands on a busy platform
        self.progress(f"{self.name}: injecting")
        fault_end = self.inject(api)
        recovery_s = self.measure_recovery(fault_end)
        if self.name == "broker-kill":
            self._note_pid_after(api, "nats_pid")
        self.progress(
            f"{self.name}: "
            + (f"recovered in {recovery_s:.1f} s" if recovery_s is not None else "no recovery")
        )
        time.sleep(c.after_s)
        self.load.stop_publishing()
        block_until(lambda: self.load is not None and self.load.unacknowledged() == 0,
                    DRAIN_TIMEOUT_S, 0.2)  # fmt: skip
        self.details["reconnects"] = max(0, self.load.connects - len(self.load.devices))
        self.details["disconnects"] = self.load.disconnects
        counted = self.settle(api)
        history = self.history(api, since_ms)
        accounting = account(self.load.messages(), self.load.assets_of(), history, counted)
        return row(self.name, accounting, recovery_s, c.recovery_timeout_s, self.details)

    def teardown(self) -> None:
        """Devices, platform, then what the fault needed (database, mount), in reverse."""
        if self.load is not None:
            self.load.close()
        if self.platform is not None:
            self.platform.stop()
        for undo in reversed(self._undo):
            with contextlib.suppress(Exception):  # one failed undo must not skip the others
                undo()

    def platform_state(self) -> str:
        """Why an error may have happened: the platform process had gone."""
        process = self.platform.process if self.platform else None
        code = process.poll() if process else None
        return "" if code is None else f" (the platform process had exited, code {code})"

    # -- environments -----------------------------------------------------------------------

    def prepare(self) -> tuple[Path, dict[str, str]]:
        self.root.mkdir(parents=True, exist_ok=True)
        if self.name == "database-outage":
            pg = ScratchPostgres(self.config.postgres_user)
            self._undo.append(pg.destroy)
            pg.init()
            self.pg = pg
            return self.root / "data", {"FOGLINE_DATABASE_URL": pg.url}
        if self.name.startswith("disk-full"):
            disk = SmallDisk(self.root / "disk", self.config.tmpfs_mb)
            self._undo.append(disk.unmount)
            disk.mount()
            self.disk = disk
            return disk.path / "data", {}
        return self.root / "data", {}

    # -- faults -----------------------------------------------------------------------------

    def inject(self, api: FoglineClient) -> float:
        """Inject the fault; the wall-clock time it ended."""
        faults: dict[str, Callable[[FoglineClient], float]] = {
            "broker-kill": self.broker_kill,
            "historian-freeze": self.historian_freeze,
            "database-outage": self.database_outage,
            "disk-full": self.disk_full,
            "disk-full-sudden": self.disk_full,
            "restart-storm": self.restart_storm,
        }
        return faults[self.name](api)

    def _pid(self, api: FoglineClient, name: str) -> int:
        pid = api.get("/system").get(name)
        if not pid:
            raise Unavailable(f"the platform reports no {name} in /system")
        return int(pid)

    def broker_kill(self, api: FoglineClient) -> float:
        pid = self._pid(api, "nats_pid")
        os.kill(pid, signal.SIGKILL)
        ended = time.time()
        self.details["nats_pid"] = pid
        return ended

    def _note_pid_after(self, api: FoglineClient, name: str) -> None:
        try:
            self.details[f"{name}_after"] = api.get("/system").get(name)
        except FoglineError as exc:
            self.details[f"{name}_after"] = f"unknown (/system: {_describe(exc)})"

    def historian_freeze(self, api: FoglineClient) -> float:
        system = api.get("/system")
        pid = self._pid(api, "historian_pid")
        os.kill(pid, signal.SIGSTOP)
        self._undo.append(lambda: _cont(pid))  # never leave it stopped, even on Ctrl-C
        time.sleep(self.config.fault_s)
        _cont(pid)
        ended = time.time()
        after = {}
        with contextlib.suppress(FoglineError):
            after = api.get("/system")
        self.details.update(
            historian_pid=pid,
            historian_pid_after=after.get("historian_pid"),
            historian_restarts=after.get("historian_restarts", 0)
            - system.get("historian_restarts", 0),
        )
        return ended

    def database_outage(self, _api: FoglineClient) -> float:
        assert self.pg is not None
        self.pg.stop("immediate")
        time.sleep(self.config.fault_s)
        self.pg.start()
        return time.time()

    def disk_full(self, api: FoglineClient) -> float:
        disk, load, c = self.disk, self.load, self.config
        assert disk is not None and load is not None
        disk.place_ballast(c.headroom_mb * MiB)
        self.details["ballast_placed"] = disk.usage()
        started = time.monotonic()
        if self.name == "disk-full-sudden":
            disk.fill()
            full, refused = True, self._ack_stall(load, ACK_STALL_S * 3)
        else:
            full, refused = self._creep(disk, load, api)
        self.details.update(
            filled_s=round(time.monotonic() - started, 1),
            disk_full=full,
            refused=refused,
            at_refusal_or_full=disk.usage(),
        )
        acks = load.acks
        time.sleep(c.hold_s)
        self.details["pubacks_while_held"] = load.acks - acks  # messages, not readings
        disk.remove_ballast()
        return time.time()

    def _creep(self, disk: SmallDisk, load: AckedLoad, api: FoglineClient) -> tuple[bool, bool]:
        """Grow the ballast slowly under load until the platform says it refuses data (its
        disk check in /ready), or stops acknowledging, or the ballast hits ENOSPC (full);
        returns (full, refused)."""
        step_s = 0.5
        deadline = time.monotonic() + FILL_TIMEOUT_S
        last_acks, last_ack_at = load.acks, time.monotonic()
        full = False
        while time.monotonic() < deadline:
            if _refusing(api):
                return full, True
            if load.acks != last_acks:
                last_acks, last_ack_at = load.acks, time.monotonic()
            elif time.monotonic() - last_ack_at >= ACK_STALL_S:
                return full, True
            if not full:
                full = not disk.grow(int(self.config.creep_mb_per_s * MiB * step_s))
                if full:  # full now: still give the platform its chance to stop acking
                    return full, self._ack_stall(load, ACK_STALL_S * 3)
            time.sleep(step_s)
        raise Unavailable(f"the disk neither filled nor was refused in {FILL_TIMEOUT_S:.0f} s")

    @staticmethod
    def _ack_stall(load: AckedLoad, within_s: float) -> bool:
        """Whether PUBACKs stop for ACK_STALL_S within `within_s` (a full disk refused)."""
        last, last_at = load.acks, time.monotonic()
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            if load.acks != last:
                last, last_at = load.acks, time.monotonic()
            elif time.monotonic() - last_at >= ACK_STALL_S:
                return True
            time.sleep(0.2)
        return False

    def restart_storm(self, _api: FoglineClient) -> float:
        """Kills alternate between a running platform (1-4 s after it is ready, under load)
        and one still starting (0.2-2.5 s after the spawn); the last start must come up."""
        platform = self.platform
        assert platform is not None
        rng = random.Random(self.config.seed)
        during_startup = leftovers = failed_starts = 0
        last_kill = time.time()
        for k in range(self.config.kills):
            if k % 2 == 0:
                failed_starts += self._ready_or_respawn(platform)
                time.sleep(rng.uniform(*STORM_AFTER_READY_S))
            else:
                time.sleep(rng.uniform(*STORM_DURING_START_S))
            during_startup += not platform.started()
            leftovers += platform.crash()
            last_kill = time.time()
            platform.spawn()
        failed_starts += self._ready_or_respawn(platform)
        self.details.update(
            kills=self.config.kills,
            kills_during_startup=during_startup,
            children_left_after_kill=leftovers,
            failed_starts=failed_starts,
        )
        return last_kill

    @staticmethod
    def _ready_or_respawn(platform: PlatformProcess, attempts: int = 3) -> int:
        """Wait for the platform to be up, starting it again when a start fails; the failed
        starts (the last one raises)."""
        for failed in range(attempts):
            try:
                platform.wait_ready()
                return failed
            except Unavailable:
                if failed == attempts - 1:
                    raise
                platform.crash()
                platform.spawn()
        return attempts

    # -- measuring --------------------------------------------------------------------------

    def measure_recovery(self, fault_end: float) -> float | None:
        """Seconds from the end of the fault until a reading published after it is stored."""
        assert self.platform is not None and self.fleet is not None
        since = str(int(fault_end * 1000))
        probes = [d.assets[0] for d in self.fleet.devices]
        with self.platform.client(timeout_s=5.0) as api:

            def stored_after() -> float | None:
                for asset in probes:
                    try:
                        body = api.get(
                            f"/tenants/{TENANT}/assets/{asset}/telemetry/history",
                            keys="v1",
                            **{"from": since, "to": "now", "limit": "1"},
                        )
                    except FoglineError:
                        return None  # the API itself is still down: not recovered
                    if (body["series"].get("v1") or {}).get("points"):
                        return time.time()
                return None

            seen = block_until(stored_after, self.config.recovery_timeout_s, interval_s=0.2)
        return round(seen - fault_end, 2) if seen else None

    def counted_messages(self, api: FoglineClient) -> int | None:
        assert self.fleet is not None
        try:
            stats = api.get(f"/tenants/{TENANT}/ingest/stats")
        except FoglineError:
            return None
        ours = self.fleet.prefix
        return sum(int(d["messages"]) for d in stats["devices"] if d["device"].startswith(ours))

    def settle(self, api: FoglineClient) -> int | None:
        """Wait for the historian to store what was acknowledged (the ingest counters reach
        the acknowledged messages), or to stop moving; the counted messages at the end."""
        assert self.load is not None
        acknowledged = sum(m.acknowledged for m in self.load.messages())
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        last, moved_at = self.counted_messages(api), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.5)
            counted = self.counted_messages(api)
            if counted != last:
                last, moved_at = counted, time.monotonic()
            elif last is not None and last >= acknowledged:
                return last
            elif time.monotonic() - moved_at >= SETTLE_STILL_S:
                break
        return last

    def history(self, api: FoglineClient, since_ms: int) -> dict[str, list[int]]:
        """Every stored timestamp of every asset of the fleet since the run began."""
        assert self.fleet is not None
        until = str(int(time.time() * 1000) + 1)
        return {asset: self._times(api, asset, since_ms, until) for asset in self.fleet.assets}

    @staticmethod
    def _times(api: FoglineClient, asset: str, since_ms: int, until: str) -> list[int]:
        times: list[int] = []
        start = since_ms
        while True:
            body = api.get(
                f"/tenants/{TENANT}/assets/{asset}/telemetry/history",
                keys="v1",
                **{"from": str(start), "to": until, "limit": str(HISTORY_PAGE)},
            )
            series = body["series"].get("v1") or {"points": [], "truncated": False}
            times.extend(int(p[0]) for p in series["points"])
            if not series["truncated"] or not series["points"]:
                return times
            start = series["points"][-1][0] + 1


def _refusing(api: FoglineClient) -> bool:
    """Whether the platform says it refuses data for lack of disk (a 503 from /ready is the
    answer too: its problem carries the checks)."""
    try:
        ready = api.get("/ready")
    except ApiError as exc:
        ready = exc.body if isinstance(exc.body, dict) else {}
    except Unavailable:
        return False
    disk = (ready.get("checks") or {}).get("disk") or {}
    return bool(disk.get("refusing"))


def _cont(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGCONT)


def _describe(exc: Exception) -> str:
    if isinstance(exc, ApiError):
        return f"HTTP {exc.status}: {exc.message}"
    if isinstance(exc, FoglineError):
        return exc.message
    return f"{type(exc).__name__}: {exc}"


def row(
    name: str,
    a: Accounting,
    recovery_s: float | None,
    recovery_timeout_s: float,
    details: dict[str, Any],
) -> dict[str, Any]:
    failures = []
    if a.lost:
        failures.append(
            f"lost {a.lost:,} acknowledged readings (e.g. {', '.join(a.lost_examples)})"
        )
    if a.foreign:
        failures.append(f"{a.foreign:,} stored readings were never published")
    if recovery_s is None:
        failures.append(f"no reading published after the fault stored within "
                        f"{recovery_timeout_s:.0f} s")  # fmt: skip
    return {
        "fault": name,
        "status": "failed" if failures else "ok",
        "failures": failures,
        "published": a.published,
        "acknowledged": a.acknowledged,
        "stored": a.stored,
        "lost": a.lost,
        "duplicated": a.duplicated,
        "unacknowledged": a.unacknowledged,
        "unacknowledged_stored": a.unacknowledged_stored,
        "foreign": a.foreign,
        "stored_messages": a.stored_messages,
        "counted_messages": a.counted_messages,
        "counted_twice": a.counted_twice,
        "recovery_s": recovery_s,
        "details": details,
    }


def not_run(name: str, status: str, reason: str) -> dict[str, Any]:
    return {"fault": name, "status": status, "failures": [] if status == "skipped" else [reason],
            "reason": reason, "details": {}}  # fmt: skip


def run_fault_bench(config: FaultBenchConfig, progress: Progress) -> dict[str, Any]:
    config.check()
    root = config.work_dir or Path(tempfile.mkdtemp(prefix="fogline-faults-"))
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in config.faults:
        progress(f"{name}: starting a platform of its own")
        run = FaultRun(name, config, root / name, progress)
        try:
            rows.append(run.execute())
        except Skipped as exc:
            rows.append(not_run(name, "skipped", str(exc)))
        except Exception as exc:
            rows.append(not_run(name, "error", _describe(exc) + run.platform_state()))
        finally:
            run.teardown()
        progress(f"{name}: {rows[-1]['status']}")
    failed = [r for r in rows if r["failures"]]
    keep = config.keep or bool(failed)
    if not keep and config.work_dir is None:
        shutil.rmtree(root, ignore_errors=True)
    report: dict[str, Any] = {
        "rate": config.rate,
        "devices": config.devices,
        "batch": config.batch,
        "seed": config.seed,
        "faults": rows,
        "ok": not failed,
        "work_dir": str(root) if keep else None,
    }
    report["lines"] = lines(config, rows, report["work_dir"])
    return report


def lines(config: FaultBenchConfig, rows: list[dict[str, Any]], work_dir: str | None) -> list[str]:
    out = [
        f"load: {config.devices} devices (MQTT, QoS 1) x {config.batch} assets, "
        f"{config.rate:,.0f} readings/s; lost = acknowledged but not stored (must be 0)"
    ]
    for r in rows:
        if r.get("reason"):
            out.append(f"{r['fault']}: {r['status']}: {r['reason']}")
            continue
        facts = ", ".join(f"{k} {v}" for k, v in r["details"].items())
        out.append(
            f"{r['fault']}: unacknowledged {r['unacknowledged']:,} "
            f"({r['unacknowledged_stored']:,} of them stored), counted twice "
            f"{r['counted_twice']}; {facts}"
        )
    if work_dir:
        out.append(f"logs kept in {work_dir}")
    return out
