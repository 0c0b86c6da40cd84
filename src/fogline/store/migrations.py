"""Schema migrations.

A fresh database is built from `schema.metadata` in one go and stamped with the newest version
(alembic's "create_all, then stamp" recipe). An older database is brought forward step by step
with alembic operations: each step below takes version N to N + 1 and runs in the same
transaction as the version update, so a crash mid-migration leaves the old version intact on
PostgreSQL (SQLite's DDL is transactional too).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Engine,
    Float,
    ForeignKeyConstraint,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    inspect,
    select,
    text,
)

from fogline.domain.errors import ConfigurationError
from fogline.store import schema


@dataclass(frozen=True)
class Migration:
    to_version: int
    description: str
    apply: Callable[[Operations], None]


def _v2_model_management(op: Operations) -> None:
    """Model management tables, written out as they were at version 2 (a step never changes
    once shipped; `schema.py` is the current shape, and a test checks the two agree)."""
    auto = BigInteger().with_variant(Integer(), "sqlite")
    op.create_table(
        "model_registries",
        Column("id", auto, primary_key=True, autoincrement=True),
        Column("tenant_id", String(64), nullable=False),
        Column("registry", String(255), nullable=False),
        Column("username", String(255), nullable=True),
        Column("password_sealed", Text, nullable=True),
        ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
    )
    op.create_table(
        "models",
        Column("id", auto, primary_key=True, autoincrement=True),
        Column("tenant_id", String(64), nullable=False),
        Column("name", String(64), nullable=False),
        Column("version", String(64), nullable=False),
        Column("description", Text, nullable=True),
        Column("state", String(16), nullable=False),
        Column("state_reason", Text, nullable=True),
        Column("manifest_json", Text, nullable=False),
        Column("registry_id", BigInteger, nullable=True),
        Column("created_at", BigInteger, nullable=False),
        Column("updated_at", BigInteger, nullable=False),
        UniqueConstraint("tenant_id", "name", "version", name="uq_models_version"),
        ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
    )
    op.create_table(
        "template_mappings",
        Column("id", auto, primary_key=True, autoincrement=True),
        Column("model_id", BigInteger, nullable=False),
        Column("direction", String(8), nullable=False),
        Column("position", Integer, nullable=False),
        Column("data_column_name", String(64), nullable=False),
        Column("read_as_string", Boolean, nullable=False),
        UniqueConstraint("model_id", "direction", "data_column_name", name="uq_template_column"),
        ForeignKeyConstraint(["model_id"], ["models.id"], ondelete="CASCADE"),
    )
    for name, target in (("model_mappings", "asset_id"), ("asset_type_mappings", "asset_type_id")):
        op.create_table(
            name,
            Column("id", auto, primary_key=True, autoincrement=True),
            Column("model_id", BigInteger, nullable=False),
            Column("template_mapping_id", BigInteger, nullable=False),
            Column(target, String(64), nullable=False),
            Column("telemetry", String(64), nullable=False),
            ForeignKeyConstraint(["model_id"], ["models.id"], ondelete="CASCADE"),
            ForeignKeyConstraint(
                ["template_mapping_id"], ["template_mappings.id"], ondelete="CASCADE"
            ),
        )
    op.create_table(
        "model_events",
        Column("id", auto, primary_key=True, autoincrement=True),
        Column("tenant_id", String(64), nullable=False),
        Column("model_id", BigInteger, nullable=False),
        Column("event", String(32), nullable=False),
        Column("from_state", String(16), nullable=True),
        Column("to_state", String(16), nullable=False),
        Column("reason", Text, nullable=True),
        Column("at", BigInteger, nullable=False),
    )


def _v3_deployments(op: Operations) -> None:
    auto = BigInteger().with_variant(Integer(), "sqlite")
    op.create_table(
        "model_deployments",
        Column("model_id", BigInteger, primary_key=True),
        Column("tenant_id", String(64), nullable=False),
        Column("saga", String(16), nullable=False),
        Column("status", String(16), nullable=False),
        Column("step", String(32), nullable=True),
        Column("runtime_json", Text, nullable=True),
        Column("detail", Text, nullable=True),
        Column("updated_at", BigInteger, nullable=False),
        ForeignKeyConstraint(["model_id"], ["models.id"], ondelete="CASCADE"),
    )
    op.create_table(
        "saga_steps",
        Column("id", auto, primary_key=True, autoincrement=True),
        Column("model_id", BigInteger, nullable=False),
        Column("saga", String(16), nullable=False),
        Column("step", String(32), nullable=False),
        Column("status", String(16), nullable=False),
        Column("attempt", Integer, nullable=False),
        Column("detail", Text, nullable=True),
        Column("at", BigInteger, nullable=False),
        ForeignKeyConstraint(["model_id"], ["models.id"], ondelete="CASCADE"),
    )
    op.create_index("ix_saga_steps_model_id", "saga_steps", ["model_id"])
    op.create_table(
        "stale_requests",
        Column("id", auto, primary_key=True, autoincrement=True),
        Column("model_id", BigInteger, nullable=False),
        Column("request_id", String(64), nullable=False),
        Column("readings", Integer, nullable=False),
        Column("sent_at", BigInteger, nullable=False),
        Column("timed_out_at", BigInteger, nullable=False),
        ForeignKeyConstraint(["model_id"], ["models.id"], ondelete="CASCADE"),
    )
    op.create_index("ix_stale_requests_model_id", "stale_requests", ["model_id"])


def _v4_sagas(op: Operations) -> None:
    """Sagas of any owner, not only of models: the saga row moves out of `model_deployments`
    (which keeps the runtime) into `sagas`, keyed by owner kind and id, and `saga_steps` is
    keyed the same way. Every row is kept: a model's saga becomes the saga of owner 'model'
    with run 0 (runs were not counted before), its steps stay as history (run null)."""
    op.create_table(
        "sagas",
        Column("owner", String(16), nullable=False),
        Column("owner_id", String(64), nullable=False),
        Column("tenant_id", String(64), nullable=False),
        Column("name", String(32), nullable=False),
        Column("run", Integer, nullable=False),
        Column("status", String(16), nullable=False),
        Column("step", String(32), nullable=True),
        Column("detail", Text, nullable=True),
        Column("updated_at", BigInteger, nullable=False),
        PrimaryKeyConstraint("owner", "owner_id"),
        ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
    )
    op.execute(
        "INSERT INTO sagas (owner, owner_id, tenant_id, name, run, status, step, detail, "
        "updated_at) SELECT 'model', CAST(model_id AS VARCHAR(64)), tenant_id, saga, 0, status, "
        "step, detail, updated_at FROM model_deployments"
    )
    with op.batch_alter_table("saga_steps") as batch:
        batch.add_column(Column("owner", String(16), nullable=True))
        batch.add_column(Column("owner_id", String(64), nullable=True))
        batch.add_column(Column("tenant_id", String(64), nullable=True))
        batch.add_column(Column("run", Integer, nullable=True))
    op.execute(
        "UPDATE saga_steps SET owner = 'model', owner_id = CAST(model_id AS VARCHAR(64)), "
        "tenant_id = (SELECT m.tenant_id FROM models m WHERE m.id = saga_steps.model_id)"
    )
    with op.batch_alter_table("saga_steps") as batch:
        batch.drop_index("ix_saga_steps_model_id")
        batch.drop_column("model_id")  # its foreign key to `models` goes with it
        for name in ("owner", "owner_id", "tenant_id"):
            batch.alter_column(name, existing_type=String(64), nullable=False)
        batch.alter_column("saga", existing_type=String(16), type_=String(32))
        batch.create_index("ix_saga_steps_owner", ["owner", "owner_id"])
        batch.create_foreign_key(
            "saga_steps_tenant_id_fkey", "tenants", ["tenant_id"], ["id"], ondelete="CASCADE"
        )
    with op.batch_alter_table("model_deployments") as batch:
        for name in ("saga", "status", "step", "detail"):
            batch.drop_column(name)


def _v5_retention(op: Operations) -> None:
    op.create_table(
        "tenant_retention",
        Column("tenant_id", String(64), primary_key=True),
        Column("history", String(32), nullable=True),
        Column("aggregates", String(32), nullable=True),
        Column("updated_at", BigInteger, nullable=False),
        ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
    )
    op.create_table(
        "asset_type_retention",
        Column("tenant_id", String(64), nullable=False),
        Column("asset_type_id", String(64), nullable=False),
        Column("history", String(32), nullable=True),
        Column("aggregates", String(32), nullable=True),
        Column("updated_at", BigInteger, nullable=False),
        PrimaryKeyConstraint("tenant_id", "asset_type_id"),
        ForeignKeyConstraint(
            ["tenant_id", "asset_type_id"],
            ["asset_types.tenant_id", "asset_types.id"],
            ondelete="CASCADE",
        ),
    )
    op.create_table(
        "telemetry_aggregates",
        Column("series_id", BigInteger, nullable=False),
        Column("bucket_ts", BigInteger, nullable=False),
        Column("name", String(64), nullable=False),
        Column("value_count", BigInteger, nullable=False),
        Column("numeric_count", BigInteger, nullable=False),
        Column("value_sum", Float(53), nullable=False),
        Column("value_min", Float(53), nullable=True),
        Column("value_max", Float(53), nullable=True),
        PrimaryKeyConstraint("series_id", "bucket_ts", "name"),
        sqlite_with_rowid=False,
    )


def _v6_model_dead_letters(op: Operations) -> None:
    op.create_table(
        "model_dead_letters",
        Column("id", schema.AutoId, primary_key=True, autoincrement=True),
        Column("model_id", BigInteger, nullable=False),
        Column("tenant_id", String(64), nullable=False),
        Column("at", BigInteger, nullable=False),
        Column("reason_code", String(32), nullable=False),
        Column("detail_code", String(32), nullable=True),
        Column("reason", Text, nullable=False),
        Column("readings", Integer, nullable=False),
        Column("request_id", String(64), nullable=True),
        Column("asset_id", String(64), nullable=True),
        Column("ts", BigInteger, nullable=True),
        Column("output_column", String(64), nullable=True),
        Column("payload", Text, nullable=True),
        ForeignKeyConstraint(["model_id"], ["models.id"], ondelete="CASCADE"),
    )
    op.create_index("ix_model_dead_letters_model", "model_dead_letters", ["model_id", "id"])


def _v7_output_sources(op: Operations) -> None:
    """Who writes each telemetry: `latest_values.source`. The history does not say who wrote
    what; a telemetry that a model's output is mapped to now is taken as the model's, every
    other as a device's. Dead letters name a model version's outputs, longer than a device id."""
    op.add_column(
        "latest_values", Column("source", String(8), nullable=False, server_default="device")
    )
    op.execute(
        "UPDATE latest_values SET source = 'model' WHERE EXISTS ("
        " SELECT 1 FROM telemetry_series s"
        " JOIN model_mappings mm ON mm.asset_id = s.asset_id"
        " JOIN models m ON m.id = mm.model_id AND m.tenant_id = s.tenant_id"
        " JOIN template_mappings t ON t.id = mm.template_mapping_id AND t.direction = 'output'"
        " WHERE s.id = latest_values.series_id AND mm.telemetry = latest_values.name"
        ") OR EXISTS ("
        " SELECT 1 FROM telemetry_series s"
        " JOIN assets a ON a.tenant_id = s.tenant_id AND a.id = s.asset_id"
        " JOIN asset_type_mappings am ON am.asset_type_id = a.asset_type_id"
        " JOIN models m ON m.id = am.model_id AND m.tenant_id = s.tenant_id"
        " JOIN template_mappings t ON t.id = am.template_mapping_id AND t.direction = 'output'"
        " WHERE s.id = latest_values.series_id AND am.telemetry = latest_values.name)"
    )
    if op.get_context().dialect.name != "sqlite":  # SQLite does not hold VARCHAR to a width
        op.alter_column("dead_letters", "device_id", existing_type=String(64), type_=String(200))
    op.create_index("ix_dead_letters_source", "dead_letters", ["tenant_id", "device_id", "id"])


def _v8_security_events(op: Operations) -> None:
    op.create_table(
        "security_events",
        Column("username", String(200), nullable=False),
        Column("kind", String(32), nullable=False),
        Column("tenant_id", String(64), nullable=False),
        Column("device_id", String(64), nullable=True),
        Column("count", BigInteger, nullable=False),
        Column("first_seen_ms", BigInteger, nullable=False),
        Column("last_seen_ms", BigInteger, nullable=False),
        Column("last_subject", String(200), nullable=True),
        Column("last_address", String(64), nullable=True),
        PrimaryKeyConstraint("username", "kind"),
    )
    op.create_index("ix_security_events_device", "security_events", ["tenant_id", "device_id"])


# Version 1 is the first released schema. Append steps here; never edit one that shipped.
MIGRATIONS: list[Migration] = [
    Migration(2, "model management: registries, models, mappings, events", _v2_model_management),
    Migration(3, "deployments: saga state, saga steps, stale requests", _v3_deployments),
    Migration(4, "sagas of any owner: sagas table, saga steps keyed by owner", _v4_sagas),
    Migration(5, "retention: policies per tenant and asset type, hourly aggregates", _v5_retention),
    Migration(6, "model dead letters: readings and outputs a model lost", _v6_model_dead_letters),
    Migration(
        7,
        "who writes each telemetry (device or model); longer dead-letter sources",
        _v7_output_sources,
    ),
    Migration(8, "security events: refused logins and permissions per user", _v8_security_events),
]

SCHEMA_VERSION = 1 + len(MIGRATIONS)

_version_metadata = MetaData()
schema_version = Table(
    "fogline_schema_version", _version_metadata, Column("version", Integer, nullable=False)
)


class SchemaTooNew(ConfigurationError):
    """The database was written by a newer Fogline than this one."""


def migrate(engine: Engine) -> int:
    """Bring the database to SCHEMA_VERSION; returns the version it was at before (0: fresh)."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Two platforms starting against one database must not migrate it twice.
            conn.execute(text("SELECT pg_advisory_xact_lock(74217001)"))
        _version_metadata.create_all(conn)
        current = conn.execute(select(schema_version.c.version)).scalar_one_or_none()
        if current is None:
            _create_fresh(conn)
            conn.execute(schema_version.insert().values(version=SCHEMA_VERSION))
            return 0
        if current > SCHEMA_VERSION:
            raise SchemaTooNew(
                f"the database is at schema version {current}, newer than this Fogline "
                f"understands ({SCHEMA_VERSION}); upgrade Fogline"
            )
        operations = Operations(MigrationContext.configure(conn))
        for step in MIGRATIONS[current - 1 :]:
            step.apply(operations)
            conn.execute(schema_version.update().values(version=step.to_version))
        return int(current)


def _create_fresh(conn: Connection) -> None:
    existing = set(inspect(conn).get_table_names()) & set(schema.metadata.tables)
    if existing:
        raise ConfigurationError(
            "the database has Fogline tables but no schema version: "
            f"{', '.join(sorted(existing))}; point Fogline at an empty database or schema"
        )
    schema.metadata.create_all(conn)
