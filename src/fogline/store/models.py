"""Models, their template mappings, registry credentials and lifecycle events in SQL."""

from __future__ import annotations

import json
from typing import Any, Protocol

from sqlalchemy import Engine, Row, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from fogline.domain.errors import AlreadyExists, Conflict, NotFound
from fogline.domain.lifecycle import ModelEvent, ModelState, next_state
from fogline.domain.models import (
    Direction,
    Mapping,
    ModelEventRecord,
    ModelMappings,
    ModelRecord,
    RegistryCredentials,
    TemplateColumn,
)
from fogline.domain.timeseries import now_ms
from fogline.store import schema as s


class ModelStore(Protocol):
    def create_model(
        self,
        tenant: str,
        name: str,
        version: str,
        description: str | None,
        manifest: dict[str, Any],
        templates: list[TemplateColumn],
        registry: RegistryCredentials | None,
    ) -> ModelRecord: ...
    def get_model(self, tenant: str, name: str, version: str) -> ModelRecord: ...
    def list_models(self, tenant: str, include_removed: bool = False) -> list[ModelRecord]: ...
    def transition(
        self, tenant: str, name: str, version: str, event: ModelEvent, reason: str | None = None
    ) -> ModelRecord: ...
    def events(self, tenant: str, name: str, version: str) -> list[ModelEventRecord]: ...
    def registry_credentials(self, model_id: int) -> RegistryCredentials | None: ...
    def in_states(self, states: list[ModelState]) -> list[ModelRecord]: ...


class SqlModelStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create_model(
        self,
        tenant: str,
        name: str,
        version: str,
        description: str | None,
        manifest: dict[str, Any],
        templates: list[TemplateColumn],
        registry: RegistryCredentials | None,
    ) -> ModelRecord:
        now = now_ms()
        with self.engine.begin() as conn:
            registry_id = None
            if registry is not None:
                registry_id = conn.execute(
                    insert(s.model_registries)
                    .values(
                        tenant_id=tenant,
                        registry=registry.registry,
                        username=registry.username,
                        password_sealed=registry.password_sealed,
                    )
                    .returning(s.model_registries.c.id)
                ).scalar_one()
            try:
                model_id = conn.execute(
                    insert(s.models)
                    .values(
                        tenant_id=tenant,
                        name=name,
                        version=version,
                        description=description,
                        state=ModelState.DRAFT.value,
                        manifest_json=json.dumps(manifest, sort_keys=True),
                        registry_id=registry_id,
                        created_at=now,
                        updated_at=now,
                    )
                    .returning(s.models.c.id)
                ).scalar_one()
            except IntegrityError:
                raise AlreadyExists(
                    f"model {name} version {version} already exists; submit a new version"
                ) from None
            conn.execute(
                insert(s.template_mappings),
                [
                    {
                        "model_id": model_id,
                        "direction": t.direction,
                        "position": i,
                        "data_column_name": t.name,
                        "read_as_string": t.read_as_string,
                    }
                    for i, t in enumerate(templates)
                ],
            )
            self._record(conn, tenant, model_id, "submit", None, ModelState.DRAFT, None, now)
            return self._load(conn, tenant, name, version)

    def get_model(self, tenant: str, name: str, version: str) -> ModelRecord:
        with self.engine.connect() as conn:
            return self._load(conn, tenant, name, version)

    def list_models(self, tenant: str, include_removed: bool = False) -> list[ModelRecord]:
        query = select(s.models).where(s.models.c.tenant_id == tenant)
        if not include_removed:
            query = query.where(s.models.c.state != ModelState.REMOVED.value)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(s.models.c.name, s.models.c.id)).all()
            return [self._record_of(conn, r) for r in rows]

    def in_states(self, states: list[ModelState]) -> list[ModelRecord]:
        """Models of every tenant in the given states (what a starting platform must resume)."""
        query = select(s.models).where(s.models.c.state.in_([st.value for st in states]))
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(s.models.c.id)).all()
            return [self._record_of(conn, r) for r in rows]

    def transition(
        self, tenant: str, name: str, version: str, event: ModelEvent, reason: str | None = None
    ) -> ModelRecord:
        """Move the model by the transition table, atomically: the state is compared as it is
        updated, so two concurrent moves cannot both succeed."""
        now = now_ms()
        with self.engine.begin() as conn:
            current = self._load(conn, tenant, name, version)
            target = next_state(current.state, event)
            done = conn.execute(
                update(s.models)
                .where(s.models.c.id == current.id, s.models.c.state == current.state.value)
                .values(state=target.value, state_reason=reason, updated_at=now)
            )
            if done.rowcount != 1:
                raise Conflict(f"model {name} {version} changed state meanwhile; try again")
            self._record(conn, tenant, current.id, event.value, current.state, target, reason, now)
            return self._load(conn, tenant, name, version)

    def events(self, tenant: str, name: str, version: str) -> list[ModelEventRecord]:
        e = s.model_events
        with self.engine.connect() as conn:
            model = self._load(conn, tenant, name, version)
            rows = conn.execute(select(e).where(e.c.model_id == model.id).order_by(e.c.id))
            return [
                ModelEventRecord(int(r.id), r.event, r.from_state, r.to_state, r.reason, r.at)
                for r in rows
            ]

    def registry_credentials(self, model_id: int) -> RegistryCredentials | None:
        r = s.model_registries
        with self.engine.connect() as conn:
            row = conn.execute(
                select(r)
                .join(s.models, s.models.c.registry_id == r.c.id)
                .where(s.models.c.id == model_id)
            ).first()
        if row is None:
            return None
        return RegistryCredentials(row.registry, row.username, row.password_sealed)

    # -- helpers --------------------------------------------------------------------------

    def _record(
        self,
        conn: Connection,
        tenant: str,
        model_id: int,
        event: str,
        from_state: ModelState | None,
        to_state: ModelState,
        reason: str | None,
        at: int,
    ) -> None:
        conn.execute(
            insert(s.model_events).values(
                tenant_id=tenant,
                model_id=model_id,
                event=event,
                from_state=from_state.value if from_state else None,
                to_state=to_state.value,
                reason=reason,
                at=at,
            )
        )

    def _load(self, conn: Connection, tenant: str, name: str, version: str) -> ModelRecord:
        row = conn.execute(
            select(s.models).where(
                s.models.c.tenant_id == tenant,
                s.models.c.name == name,
                s.models.c.version == version,
            )
        ).first()
        if row is None:
            raise NotFound(f"model {name} version {version} does not exist")
        return self._record_of(conn, row)

    def _record_of(self, conn: Connection, row: Row[Any]) -> ModelRecord:
        t = s.template_mappings
        templates = tuple(
            TemplateColumn(Direction(r.direction), r.data_column_name, bool(r.read_as_string))
            for r in conn.execute(
                select(t).where(t.c.model_id == row.id).order_by(t.c.direction, t.c.position)
            )
        )
        has_password = False
        if row.registry_id is not None:
            sealed = conn.execute(
                select(s.model_registries.c.password_sealed).where(
                    s.model_registries.c.id == row.registry_id
                )
            ).scalar_one_or_none()
            has_password = sealed is not None
        return ModelRecord(
            id=int(row.id),
            tenant=row.tenant_id,
            name=row.name,
            version=row.version,
            description=row.description,
            state=ModelState(row.state),
            state_reason=row.state_reason,
            manifest=json.loads(row.manifest_json),
            templates=templates,
            has_registry_password=has_password,
            created_at=int(row.created_at),
            updated_at=int(row.updated_at),
        )


class ModelMappingStore(Protocol):
    def replace(self, model_id: int, mappings: ModelMappings) -> None: ...
    def get(self, model_id: int) -> ModelMappings: ...


class SqlModelMappings:
    """The concrete (asset) and type mappings of a model, replaced as a whole."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def replace(self, model_id: int, mappings: ModelMappings) -> None:
        t = s.template_mappings
        with self.engine.begin() as conn:
            templates = {
                (r.direction, r.data_column_name): int(r.id)
                for r in conn.execute(select(t).where(t.c.model_id == model_id))
            }
            for table in (s.model_mappings, s.asset_type_mappings):
                conn.execute(table.delete().where(table.c.model_id == model_id))
            for table, target, items in (
                (s.model_mappings, "asset_id", mappings.assets),
                (s.asset_type_mappings, "asset_type_id", mappings.asset_types),
            ):
                if items:
                    conn.execute(
                        insert(table),
                        [
                            {
                                "model_id": model_id,
                                "template_mapping_id": templates[(m.direction, m.column)],
                                target: m.target,
                                "telemetry": m.telemetry,
                            }
                            for m in items
                        ],
                    )

    def get(self, model_id: int) -> ModelMappings:
        t = s.template_mappings
        result: dict[str, list[Mapping]] = {"assets": [], "asset_types": []}
        with self.engine.connect() as conn:
            for key, table, target in (
                ("assets", s.model_mappings, s.model_mappings.c.asset_id),
                ("asset_types", s.asset_type_mappings, s.asset_type_mappings.c.asset_type_id),
            ):
                rows = conn.execute(
                    select(t.c.direction, t.c.data_column_name, target, table.c.telemetry)
                    .join(t, t.c.id == table.c.template_mapping_id)
                    .where(table.c.model_id == model_id)
                    .order_by(target, t.c.direction, t.c.position)
                )
                result[key] = [Mapping(Direction(r[0]), r[1], r[2], r[3]) for r in rows]
        return ModelMappings(tuple(result["assets"]), tuple(result["asset_types"]))
