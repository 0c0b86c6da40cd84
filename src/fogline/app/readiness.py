"""Readiness: each part of the platform checked on its own, all at once, each within a bound.

`/api/v1/ready` and `fogline status` show one entry per check (broker, database, historian,
models, and whatever the composition root adds: disk). A check is a small object with a name,
whether its problems make the platform not ready (`critical`), and an async `check()`; the
report runs every check concurrently and gives each `timeout_s`, so a database or broker that
does not answer costs the report that long at most, and is said so. To add a part, write a
check and add it to the list `standard_checks` returns (or `Readiness.add` it).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from fogline.bus.connection import Bus
from fogline.bus.server import EmbeddedNats
from fogline.disk import DiskGuard
from fogline.ingest.worker import HistorianSupervisor
from fogline.models.deployment import DeploymentManager
from fogline.store.database import Database

CHECK_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class CheckResult:
    """One part's state: fine or not, what is wrong in a sentence, and its details."""

    ok: bool
    problem: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "problem": self.problem, **self.details}


class ReadinessCheck(Protocol):
    name: str
    # Whether a problem makes the platform not ready (taken out of a load balancer): the parts
    # ingest needs are; a tenant's model that fails is shown, and the platform stays ready.
    critical: bool

    async def check(self) -> CheckResult: ...


class Readiness:
    def __init__(self, checks: list[ReadinessCheck], timeout_s: float = CHECK_TIMEOUT_S) -> None:
        self.checks = list(checks)
        self.timeout_s = timeout_s

    def add(self, check: ReadinessCheck) -> None:
        self.checks.append(check)

    async def _run(self, check: ReadinessCheck) -> CheckResult:
        try:
            return await asyncio.wait_for(check.check(), self.timeout_s)
        except TimeoutError:
            return CheckResult(False, f"the {check.name} check did not answer in {self.timeout_s}s")
        except Exception as exc:  # a check that fails says so; it never fails the report
            return CheckResult(False, f"the {check.name} check failed: {type(exc).__name__}")

    async def report(self) -> dict[str, Any]:
        """{"ready", "problems" (what makes it not ready), "warnings" (what does not), "checks"
        (each part by name)}."""
        results = await asyncio.gather(*(self._run(c) for c in self.checks))
        problems: list[str] = []
        warnings: list[str] = []
        for check, result in zip(self.checks, results, strict=True):
            if result.problem is not None or not result.ok:
                text = result.problem or f"{check.name} is not ok"
                (problems if check.critical else warnings).append(text)
        return {
            "ready": not problems,
            "problems": problems,
            "warnings": warnings,
            "checks": {c.name: r.as_json() for c, r in zip(self.checks, results, strict=True)},
        }


def process_alive(pid: int) -> bool:
    """Alive, and not a zombie waiting to be reaped."""
    try:
        os.kill(pid, 0)
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


class BrokerCheck:
    """The platform's connection to NATS and, when Fogline runs its own, the nats-server
    process (`nats()` is asked each time: the server may be restarted under a new pid)."""

    name = "broker"
    critical = True

    def __init__(self, bus: Bus, nats: Callable[[], EmbeddedNats | None]) -> None:
        self.bus = bus
        self.nats = nats

    async def check(self) -> CheckResult:
        server = self.nats()
        details: dict[str, Any] = {"connected": self.bus.connected, "embedded": server is not None}
        problem = None if self.bus.connected else "not connected to NATS"
        if server is not None:
            pid = server.pid
            alive = pid is not None and process_alive(pid)
            supervised = server.health()
            details.update(supervised, pid=pid, running=alive)
            del details["ok"], details["problem"]
            if not alive or supervised["problem"]:
                problem = supervised["problem"] or "the embedded nats-server is not running"
        return CheckResult(problem is None, problem, details)


class DiskCheck:
    """The data dir's disk: the room above the reserve, how long it lasts at the current
    rate, and whether new data is refused for lack of it (or because the store cannot write)."""

    name = "disk"
    critical = True

    def __init__(self, guard: DiskGuard) -> None:
        self.guard = guard

    async def check(self) -> CheckResult:
        health = dict(self.guard.health())
        ok, problem = health.pop("ok"), health.pop("problem")
        return CheckResult(ok, problem, health)


class DatabaseCheck:
    """Whether the database answers `SELECT 1`. One ping at a time: a database that hangs
    would otherwise pile a blocked thread up per request."""

    name = "database"
    critical = True

    def __init__(self, db: Database) -> None:
        self.db = db
        self._ping: asyncio.Future[None] | None = None

    async def check(self) -> CheckResult:
        if self._ping is None or self._ping.done():
            self._ping = asyncio.ensure_future(asyncio.to_thread(self.db.ping))
        details = {"dialect": self.db.dialect}
        try:
            await asyncio.shield(self._ping)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            reason = getattr(exc, "message", None) or type(exc).__name__
            return CheckResult(False, f"the database does not answer ({reason})", details)
        return CheckResult(True, None, details)

    async def answers(self) -> bool:
        """For the historian's watchdog: whether the database answers within the bound."""
        try:
            return (await asyncio.wait_for(self.check(), CHECK_TIMEOUT_S)).ok
        except TimeoutError:
            return False


class HistorianCheck:
    name = "historian"
    critical = True

    def __init__(self, supervisor: HistorianSupervisor) -> None:
        self.supervisor = supervisor

    async def check(self) -> CheckResult:
        health = self.supervisor.health()
        problem = health.pop("problem")
        health.pop("ready", None)
        return CheckResult(problem is None, problem, health)


class ModelsCheck:
    """Each deployed model's state, health and restarts, as the models context knows them
    (in memory: no database needed). A failing model is a warning, not unreadiness."""

    name = "models"
    critical = False

    def __init__(self, deployments: DeploymentManager) -> None:
        self.deployments = deployments

    async def check(self) -> CheckResult:
        models = self.deployments.health_summary()
        failing = [m for m in models if m["problem"]]
        problem = None
        if failing:
            problem = "; ".join(f"model {m['id']}: {m['problem']}" for m in failing[:5])
        return CheckResult(not failing, problem, {"deployed": len(models), "items": models})


def standard_checks(
    bus: Bus,
    nats: Callable[[], EmbeddedNats | None],
    db: DatabaseCheck,
    historian: HistorianSupervisor,
    deployments: DeploymentManager,
) -> list[ReadinessCheck]:
    """The platform's parts, in the order `/ready` shows them. The disk check goes here."""
    return [BrokerCheck(bus, nats), db, HistorianCheck(historian), ModelsCheck(deployments)]
