"""Where a model's deployment saga stands, every step it took, and stale async requests."""

from __future__ import annotations

import json
from typing import Any, Protocol

from sqlalchemy import Engine, insert, select, update

from fogline.domain.models import DeploymentRecord, SagaStepRecord, StaleRequest
from fogline.domain.timeseries import now_ms
from fogline.store import schema as s


class DeploymentStore(Protocol):
    def begin(self, model_id: int, tenant: str, saga: str) -> None: ...
    def step(
        self, model_id: int, saga: str, step: str, status: str, attempt: int, detail: str | None
    ) -> None: ...
    def set_runtime(self, model_id: int, runtime: dict[str, Any] | None) -> None: ...
    def finish(self, model_id: int, status: str, detail: str | None = None) -> None: ...
    def get(self, model_id: int) -> DeploymentRecord | None: ...
    def steps(self, model_id: int, limit: int = 200) -> list[SagaStepRecord]: ...
    def record_stale(self, model_id: int, request: StaleRequest) -> None: ...
    def stale(self, model_id: int, limit: int = 100) -> list[StaleRequest]: ...


class SqlDeploymentStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def begin(self, model_id: int, tenant: str, saga: str) -> None:
        """Start a saga; the runtime of the previous one (if any) is kept until replaced."""
        d = s.model_deployments
        now = now_ms()
        with self.engine.begin() as conn:
            exists = conn.execute(select(d.c.model_id).where(d.c.model_id == model_id)).first()
            values = {"saga": saga, "status": "running", "step": None, "detail": None}
            if exists:
                conn.execute(
                    update(d).where(d.c.model_id == model_id).values(**values, updated_at=now)
                )
            else:
                conn.execute(
                    insert(d).values(model_id=model_id, tenant_id=tenant, updated_at=now, **values)
                )

    def step(
        self, model_id: int, saga: str, step: str, status: str, attempt: int, detail: str | None
    ) -> None:
        now = now_ms()
        d = s.model_deployments
        with self.engine.begin() as conn:
            conn.execute(
                insert(s.saga_steps).values(
                    model_id=model_id,
                    saga=saga,
                    step=step,
                    status=status,
                    attempt=attempt,
                    detail=detail,
                    at=now,
                )
            )
            conn.execute(
                update(d)
                .where(d.c.model_id == model_id)
                .values(
                    step=step,
                    status="compensating" if status == "compensated" else d.c.status,
                    updated_at=now,
                )
            )

    def set_runtime(self, model_id: int, runtime: dict[str, Any] | None) -> None:
        d = s.model_deployments
        with self.engine.begin() as conn:
            conn.execute(
                update(d)
                .where(d.c.model_id == model_id)
                .values(
                    runtime_json=None if runtime is None else json.dumps(runtime),
                    updated_at=now_ms(),
                )
            )

    def finish(self, model_id: int, status: str, detail: str | None = None) -> None:
        d = s.model_deployments
        with self.engine.begin() as conn:
            conn.execute(
                update(d)
                .where(d.c.model_id == model_id)
                .values(status=status, detail=detail, updated_at=now_ms())
            )

    def get(self, model_id: int) -> DeploymentRecord | None:
        d = s.model_deployments
        with self.engine.connect() as conn:
            row = conn.execute(select(d).where(d.c.model_id == model_id)).first()
        return None if row is None else _record(row)

    def steps(self, model_id: int, limit: int = 200) -> list[SagaStepRecord]:
        t = s.saga_steps
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t).where(t.c.model_id == model_id).order_by(t.c.id.desc()).limit(limit)
            ).all()
        return [
            SagaStepRecord(r.saga, r.step, r.status, int(r.attempt), r.detail, int(r.at))
            for r in reversed(rows)
        ]

    def record_stale(self, model_id: int, request: StaleRequest) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                insert(s.stale_requests).values(
                    model_id=model_id,
                    request_id=request.request_id,
                    readings=request.readings,
                    sent_at=request.sent_at,
                    timed_out_at=request.timed_out_at,
                )
            )

    def stale(self, model_id: int, limit: int = 100) -> list[StaleRequest]:
        t = s.stale_requests
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t).where(t.c.model_id == model_id).order_by(t.c.id.desc()).limit(limit)
            ).all()
        return [
            StaleRequest(r.request_id, int(r.readings), int(r.sent_at), int(r.timed_out_at))
            for r in rows
        ]


def _record(row: Any) -> DeploymentRecord:
    return DeploymentRecord(
        model_id=int(row.model_id),
        tenant=row.tenant_id,
        saga=row.saga,
        status=row.status,
        step=row.step,
        runtime=None if row.runtime_json is None else json.loads(row.runtime_json),
        detail=row.detail,
        updated_at=int(row.updated_at),
    )
