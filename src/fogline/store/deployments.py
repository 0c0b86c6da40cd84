"""What the runtime started for each deployed model (so a restart can find and stop it), and
the score requests an asynchronous model never answered in time. The deployment's saga and
its steps are in `sagas.py`."""

from __future__ import annotations

import json
from typing import Any, Protocol

from sqlalchemy import Engine, insert, select, update

from fogline.domain.models import StaleRequest
from fogline.domain.timeseries import now_ms
from fogline.store import schema as s


class DeploymentStore(Protocol):
    def set_runtime(self, model_id: int, tenant: str, runtime: dict[str, Any] | None) -> None: ...
    def runtime(self, model_id: int) -> dict[str, Any] | None: ...
    def record_stale(self, model_id: int, request: StaleRequest) -> None: ...
    def stale(self, model_id: int, limit: int = 100) -> list[StaleRequest]: ...


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
