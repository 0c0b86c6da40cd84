"""Sagas of every owner in SQL: where each owner's latest saga stands (`sagas`), and every step
it took, with the records kept beside it (`saga_steps`). The saga engine (`fogline.saga`)
decides what is written; this only writes and reads it."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, and_, insert, select, update

from fogline.domain.sagas import (
    UNFINISHED,
    SagaKey,
    SagaRecord,
    SagaStatus,
    SagaStepRecord,
    StepStatus,
)
from fogline.domain.timeseries import now_ms
from fogline.store import schema as s


def _of(key: SagaKey) -> Any:
    return and_(s.sagas.c.owner == key.owner, s.sagas.c.owner_id == key.id)


class SqlSagaStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def begin(self, key: SagaKey, tenant: str, saga: str) -> int:
        """A new saga of this owner replaces its last one; returns its run number."""
        t = s.sagas
        now = now_ms()
        values = {
            "name": str(saga),
            "status": str(SagaStatus.RUNNING),
            "step": None,
            "detail": None,
            "updated_at": now,
        }
        with self.engine.begin() as conn:
            last = conn.execute(select(t.c.run).where(_of(key)).with_for_update()).scalar()
            if last is None:
                conn.execute(
                    insert(t).values(
                        owner=key.owner, owner_id=key.id, tenant_id=tenant, run=1, **values
                    )
                )
                return 1
            run = int(last) + 1
            conn.execute(update(t).where(_of(key)).values(run=run, **values))
            return run

    def record(
        self,
        key: SagaKey,
        tenant: str,
        run: int | None,
        saga: str,
        step: str,
        status: StepStatus,
        attempt: int,
        detail: str | None,
    ) -> None:
        """One step record; with a run, also the saga's current step. Without a run it is kept
        beside the sagas, in the same history."""
        now = now_ms()
        with self.engine.begin() as conn:
            conn.execute(
                insert(s.saga_steps).values(
                    owner=key.owner,
                    owner_id=key.id,
                    tenant_id=tenant,
                    run=run,
                    saga=str(saga),
                    step=step,
                    status=str(status),
                    attempt=attempt,
                    detail=detail,
                    at=now,
                )
            )
            if run is not None:
                conn.execute(
                    update(s.sagas)
                    .where(_of(key), s.sagas.c.run == run)
                    .values(step=step, updated_at=now)
                )

    def set_status(self, key: SagaKey, status: SagaStatus, detail: str | None = None) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(s.sagas)
                .where(_of(key))
                .values(status=str(status), detail=detail, updated_at=now_ms())
            )

    def get(self, key: SagaKey) -> SagaRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(s.sagas).where(_of(key))).first()
        return None if row is None else _saga(row)

    def unfinished(self, owner: str) -> list[SagaRecord]:
        t = s.sagas
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t)
                .where(t.c.owner == owner, t.c.status.in_([str(u) for u in UNFINISHED]))
                .order_by(t.c.updated_at)
            ).all()
        return [_saga(r) for r in rows]

    def steps(self, key: SagaKey, limit: int = 200, run: int | None = None) -> list[SagaStepRecord]:
        """The latest `limit` records of this owner, oldest first; only one run's if given."""
        t = s.saga_steps
        query = select(t).where(t.c.owner == key.owner, t.c.owner_id == key.id)
        if run is not None:
            query = query.where(t.c.run == run)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(t.c.id.desc()).limit(limit)).all()
        return [
            SagaStepRecord(
                r.saga, r.step, StepStatus(r.status), int(r.attempt), r.detail, int(r.at)
            )
            for r in reversed(rows)
        ]


def _saga(row: Any) -> SagaRecord:
    return SagaRecord(
        key=SagaKey(row.owner, row.owner_id),
        tenant=row.tenant_id,
        name=row.name,
        run=int(row.run),
        status=SagaStatus(row.status),
        step=row.step,
        detail=row.detail,
        updated_at=int(row.updated_at),
    )
