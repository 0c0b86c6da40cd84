"""What the runtime started for each deployed model (so a restart can find and stop it), the
score requests an asynchronous model never answered in time, and each model's dead letters.
The deployment's saga and its steps are in `sagas.py`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Protocol

from sqlalchemy import Engine, func, insert, select, update

from fogline.domain.models import LossReason, ModelDeadLetter, StaleRequest, StoredModelDeadLetter
from fogline.domain.timeseries import now_ms
from fogline.store import schema as s


class DeploymentStore(Protocol):
    def set_runtime(self, model_id: int, tenant: str, runtime: dict[str, Any] | None) -> None: ...
    def runtime(self, model_id: int) -> dict[str, Any] | None: ...
    def record_stale(self, model_id: int, request: StaleRequest) -> None: ...
    def stale(self, model_id: int, limit: int = 100) -> list[StaleRequest]: ...
    def record_dead_letters(self, letters: Sequence[ModelDeadLetter]) -> None: ...
    def dead_letters(
        self, model_id: int, limit: int = 100, before_id: int | None = None
    ) -> list[StoredModelDeadLetter]: ...
    def dead_letter_counts(self, model_id: int) -> dict[str, dict[str, int]]: ...


class SqlDeploymentStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def set_runtime(self, model_id: int, tenant: str, runtime: dict[str, Any] | None) -> None:
        d = s.model_deployments
        values = {
            "runtime_json": None if runtime is None else json.dumps(runtime),
            "updated_at": now_ms(),
        }
        with self.engine.begin() as conn:
            exists = conn.execute(select(d.c.model_id).where(d.c.model_id == model_id)).first()
            if exists:
                conn.execute(update(d).where(d.c.model_id == model_id).values(**values))
            else:
                conn.execute(insert(d).values(model_id=model_id, tenant_id=tenant, **values))

    def runtime(self, model_id: int) -> dict[str, Any] | None:
        d = s.model_deployments
        with self.engine.connect() as conn:
            text = conn.execute(select(d.c.runtime_json).where(d.c.model_id == model_id)).scalar()
        return None if text is None else dict(json.loads(text))

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

    def record_dead_letters(self, letters: Sequence[ModelDeadLetter]) -> None:
        if not letters:
            return
        with self.engine.begin() as conn:
            conn.execute(insert(s.model_dead_letters), [_dead_letter_row(d) for d in letters])

    def dead_letters(
        self, model_id: int, limit: int = 100, before_id: int | None = None
    ) -> list[StoredModelDeadLetter]:
        """Newest first; `before_id` pages on."""
        d = s.model_dead_letters
        query = select(d).where(d.c.model_id == model_id)
        if before_id is not None:
            query = query.where(d.c.id < before_id)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(d.c.id.desc()).limit(limit)).all()
        return [StoredModelDeadLetter(int(r.id), _dead_letter(r)) for r in rows]

    def dead_letter_counts(self, model_id: int) -> dict[str, dict[str, int]]:
        """Per reason: how many records, and how many readings they stand for."""
        d = s.model_dead_letters
        query = (
            select(d.c.reason_code, func.count(), func.coalesce(func.sum(d.c.readings), 0))
            .where(d.c.model_id == model_id)
            .group_by(d.c.reason_code)
        )
        with self.engine.connect() as conn:
            return {
                str(code): {"records": int(n), "readings": int(readings)}
                for code, n, readings in conn.execute(query)
            }


def _dead_letter_row(d: ModelDeadLetter) -> dict[str, Any]:
    return {
        "model_id": d.model_id,
        "tenant_id": d.tenant,
        "at": d.at,
        "reason_code": d.reason_code.value,
        "detail_code": d.detail_code,
        "reason": d.reason,
        "readings": d.readings,
        "request_id": d.request_id,
        "asset_id": d.asset,
        "ts": d.ts,
        "output_column": d.column,
        "payload": d.payload,
    }


def _dead_letter(r: Any) -> ModelDeadLetter:
    return ModelDeadLetter(
        tenant=r.tenant_id,
        model_id=int(r.model_id),
        at=int(r.at),
        reason_code=LossReason(r.reason_code),
        reason=r.reason,
        readings=int(r.readings),
        detail_code=r.detail_code,
        request_id=r.request_id,
        asset=r.asset_id,
        ts=None if r.ts is None else int(r.ts),
        column=r.output_column,
        payload=r.payload,
    )
