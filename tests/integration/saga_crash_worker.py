"""A saga that the engine test runs in a process of its own and SIGKILLs mid-step.

    python -m tests.integration.saga_crash_worker DATABASE_URL DIRECTORY

Every step writes what it does to DIRECTORY/journal, so the test sees what was done before
the kill and what is done again after. The step `hold` writes DIRECTORY/hold.started and then
waits for DIRECTORY/hold.release, which only the test creates, after the kill.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from fogline.domain.sagas import SagaKey
from fogline.retry import wait_until
from fogline.saga.engine import RetryPolicy, Saga, SagaEngine, Step
from fogline.store.database import Database

KEY = SagaKey("test", "crash-1")
TENANT = "acme"


class Journal:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / "journal"

    def write(self, line: str) -> None:
        with self.path.open("a") as f:
            f.write(line + "\n")

    def lines(self) -> list[str]:
        return self.path.read_text().split() if self.path.exists() else []


async def reserve(j: Journal) -> None:
    j.write("reserve")


async def unreserve(j: Journal) -> None:
    j.write("undo-reserve")


async def hold(j: Journal) -> None:
    j.write("hold")
    (j.directory / "hold.started").touch()

    async def released() -> bool:
        return (j.directory / "hold.release").exists()

    if not await wait_until(released, 120, 0.02):
        raise TimeoutError("nobody released the hold")


async def unhold(j: Journal) -> None:
    j.write("undo-hold")


async def finish(j: Journal) -> None:
    j.write("finish")


SAGA: Saga[Journal] = Saga(
    "crash-test",
    (Step("reserve", reserve, unreserve), Step("hold", hold, unhold), Step("finish", finish)),
)
POLICY = RetryPolicy(attempts=3, backoff_s=0.01)


async def main(url: str, directory: Path) -> None:
    db = Database.connect(url)
    try:
        await SagaEngine(db.sagas, POLICY).run(KEY, TENANT, SAGA, Journal(directory))
    finally:
        db.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2])))
