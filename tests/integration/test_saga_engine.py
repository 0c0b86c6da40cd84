"""The saga engine on its own, against SQLite and the machine's PostgreSQL: steps in order, each
persisted; retries with backoff; compensation in reverse; bad input not retried; and a saga
SIGKILLed mid-step in another process, resumed here without redoing what was done."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fogline.domain.errors import InvalidInput, Problem, Unavailable
from fogline.domain.sagas import SagaKey, SagaName, SagaStatus, StepStatus
from fogline.saga.engine import Resume, RetryPolicy, Saga, SagaEngine, Step
from fogline.store.database import Database
from tests.conftest import async_wait_for, wait_for
from tests.integration import saga_crash_worker as worker
from tests.integration.saga_crash_worker import Journal

ROOT = Path(__file__).resolve().parents[2]
KEY = SagaKey("test", "t-1")
St = StepStatus


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fogline.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database.open(db_url)
    database.tenants.create_tenant("acme", "ACME")
    yield database
    database.close()


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    return Journal(tmp_path)


def fast(attempts: int = 3, backoff_s: float = 0.01) -> RetryPolicy:
    return RetryPolicy(attempts=attempts, backoff_s=backoff_s)


def writes(line: str) -> Step[Journal]:
    """A step that writes its name, and undoes by writing undo-<name>."""

    async def run(j: Journal) -> None:
        j.write(line)

    async def undo(j: Journal) -> None:
        j.write(f"undo-{line}")

    return Step(line, run, undo)


def fails(line: str, error: Exception) -> Step[Journal]:
    async def run(j: Journal) -> None:
        j.write(line)
        raise error

    return Step(line, run)


def steps_of(db: Database, key: SagaKey = KEY) -> list[tuple[str, StepStatus, int]]:
    return [(s.step, s.status, s.attempt) for s in db.sagas.steps(key)]


async def test_steps_run_in_order_and_each_is_persisted(db: Database, journal: Journal) -> None:
    saga = Saga("three", (writes("a"), writes("b"), Step("c", writes("c").run)))
    assert await SagaEngine(db.sagas, fast()).run(KEY, "acme", saga, journal) is None
    assert journal.lines() == ["a", "b", "c"]
    assert steps_of(db) == [
        ("a", St.STARTED, 1),
        ("a", St.DONE, 1),
        ("b", St.STARTED, 1),
        ("b", St.DONE, 1),
        ("c", St.STARTED, 1),
        ("c", St.DONE, 1),
    ]
    record = db.sagas.get(KEY)
    assert record is not None
    assert (record.name, record.status, record.step, record.run) == ("three", "done", "c", 1)
    assert db.sagas.unfinished("test") == []


async def test_a_failing_step_is_retried_with_backoff_then_the_done_ones_are_undone_in_reverse(
    db: Database, journal: Journal
) -> None:
    saga = Saga(
        "doomed",
        (
            writes("a"),
            writes("b"),
            Step("c", writes("c").run),  # nothing to undo
            fails("d", Unavailable("the runtime is away")),
            writes("never"),
        ),
    )
    failure = await SagaEngine(db.sagas, fast(backoff_s=0.05)).run(KEY, "acme", saga, journal)
    assert failure is not None and failure.step == "d"
    assert failure.reason == "d failed after 3 attempts: the runtime is away"
    assert journal.lines() == ["a", "b", "c", "d", "d", "d", "undo-b", "undo-a"]
    assert steps_of(db)[6:] == [
        ("d", St.STARTED, 1),
        ("d", St.FAILED, 1),
        ("d", St.STARTED, 2),
        ("d", St.FAILED, 2),
        ("d", St.STARTED, 3),
        ("d", St.FAILED, 3),
        ("b", St.COMPENSATED, 1),
        ("a", St.COMPENSATED, 1),
    ]
    record = db.sagas.get(KEY)
    assert record is not None
    assert (record.status, record.detail) == (SagaStatus.FAILED, failure.reason)
    # The waits between attempts, as the store saw them: 50 ms, then doubled (whole ms).
    at = [s.at for s in db.sagas.steps(KEY) if s.step == "d"]
    assert at[2] - at[1] >= 49 and at[4] - at[3] >= 99


async def test_bad_input_is_not_retried(db: Database, journal: Journal) -> None:
    bad = InvalidInput.of([Problem("mappings", "nothing is mapped")], "deployment")
    saga = Saga("refused", (writes("a"), fails("check", bad)))
    failure = await SagaEngine(db.sagas, fast()).run(KEY, "acme", saga, journal)
    assert failure is not None
    assert journal.lines() == ["a", "check", "undo-a"]
    assert steps_of(db)[2:] == [
        ("check", St.STARTED, 1),
        ("check", St.FAILED, 1),
        ("a", St.COMPENSATED, 1),
    ]
    detail = db.sagas.steps(KEY)[3].detail
    assert detail is not None and "mappings: nothing is mapped" in detail  # the whole story


async def test_an_unexpected_error_is_not_retried_and_leaves_the_saga_to_resume(
    db: Database, journal: Journal
) -> None:
    saga = Saga("buggy", (writes("a"), fails("b", KeyError("bug"))))
    with pytest.raises(KeyError):
        await SagaEngine(db.sagas, fast()).run(KEY, "acme", saga, journal)
    assert journal.lines() == ["a", "b"]
    assert [r.key for r in db.sagas.unfinished("test")] == [KEY]


async def interrupted(db: Database, journal: Journal, saga: Saga[Journal]) -> None:
    """Run `saga` until its `hold` step has started, then cancel it, as a shutdown does."""
    task = asyncio.create_task(SagaEngine(db.sagas, fast()).run(KEY, "acme", saga, journal))
    await async_wait_for(lambda: "hold" in journal.lines(), 10, "the hold step")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_an_interrupted_saga_can_be_compensated(db: Database, journal: Journal) -> None:
    await interrupted(db, journal, worker.SAGA)
    record = db.sagas.get(KEY)
    assert record is not None and record.status is SagaStatus.RUNNING
    failure = await SagaEngine(db.sagas, fast()).resume(
        KEY, "acme", worker.SAGA, journal, Resume.COMPENSATE, "given up after a restart"
    )
    assert failure is not None and failure.step == "hold"
    assert journal.lines() == ["reserve", "hold", "undo-reserve"]  # hold never finished
    record = db.sagas.get(KEY)
    assert record is not None
    assert (record.status, record.detail) == (SagaStatus.FAILED, "given up after a restart")


async def test_an_interrupted_saga_can_start_over(db: Database, journal: Journal) -> None:
    await interrupted(db, journal, worker.SAGA)
    (journal.directory / "hold.release").touch()
    engine = SagaEngine(db.sagas, fast())
    assert await engine.resume(KEY, "acme", worker.SAGA, journal, Resume.FROM_START) is None
    assert journal.lines() == ["reserve", "hold", "reserve", "hold", "finish"]
    record = db.sagas.get(KEY)
    assert record is not None and (record.run, record.status) == (2, SagaStatus.DONE)
    resumed = [s for s in db.sagas.steps(KEY) if s.saga == SagaName.RECOVER]
    assert [(s.step, s.detail) for s in resumed] == [("resume", "crash-test interrupted at hold")]


def test_a_saga_killed_mid_step_resumes_where_it_stopped(
    db: Database, db_url: str, journal: Journal
) -> None:
    command = [sys.executable, "-m", worker.__name__, db_url, str(journal.directory)]
    child = subprocess.Popen(
        command,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        wait_for(lambda: (journal.directory / "hold.started").exists(), 60, "the hold step")
        child.send_signal(signal.SIGKILL)
        assert child.wait(10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
    assert journal.lines() == ["reserve", "hold"]

    async def resume() -> None:
        engine = SagaEngine(db.sagas, worker.POLICY)
        [record] = await engine.unfinished("test")
        assert (record.key, record.name, record.step) == (worker.KEY, "crash-test", "hold")
        (journal.directory / "hold.release").touch()
        failure = await engine.resume(
            record.key, record.tenant, worker.SAGA, journal, Resume.FROM_STEP
        )
        assert failure is None

    asyncio.run(resume())
    assert journal.lines() == ["reserve", "hold", "hold", "finish"]  # reserve not done again
    assert steps_of(db, worker.KEY) == [
        ("reserve", St.STARTED, 1),
        ("reserve", St.DONE, 1),
        ("hold", St.STARTED, 1),
        ("resume", St.STARTED, 1),  # kept beside the saga: what the restart did
        ("hold", St.FAILED, 1),  # the attempt the kill interrupted
        ("hold", St.STARTED, 2),
        ("hold", St.DONE, 2),
        ("finish", St.STARTED, 1),
        ("finish", St.DONE, 1),
    ]
    assert db.sagas.steps(worker.KEY)[4].detail == "interrupted by a restart"
    record = db.sagas.get(worker.KEY)
    assert record is not None and (record.run, record.status) == (1, SagaStatus.DONE)
    assert db.sagas.unfinished("test") == []


async def test_a_saga_interrupted_while_undoing_goes_on_undoing(
    db: Database, journal: Journal
) -> None:
    release = journal.directory / "hold.release"

    async def slow_undo(j: Journal) -> None:
        j.write("undo-a")
        await worker.hold(j)  # blocks until released

    saga = Saga(
        "undone",
        (Step("a", writes("a").run, slow_undo), fails("b", Unavailable("no"))),
    )
    engine = SagaEngine(db.sagas, fast(attempts=1))
    task = asyncio.create_task(engine.run(KEY, "acme", saga, journal))
    await async_wait_for(lambda: "hold" in journal.lines(), 10, "the compensation to block")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    record = db.sagas.get(KEY)
    assert record is not None
    assert (record.status, record.detail) == (
        SagaStatus.COMPENSATING,
        "b failed after 1 attempts: no",
    )
    release.touch()
    failure = await engine.resume(KEY, "acme", saga, journal, Resume.FROM_STEP)
    assert failure is not None and failure.reason == "b failed after 1 attempts: no"
    assert journal.lines() == ["a", "b", "undo-a", "hold", "undo-a", "hold"]  # b never again
    assert steps_of(db)[-1] == ("a", St.COMPENSATED, 1)
    record = db.sagas.get(KEY)
    assert record is not None and record.status is SagaStatus.FAILED
