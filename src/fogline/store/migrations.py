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
from sqlalchemy import Column, Connection, Engine, Integer, MetaData, Table, inspect, select, text

from fogline.domain.errors import ConfigurationError
from fogline.store import schema


@dataclass(frozen=True)
class Migration:
    to_version: int
    description: str
    apply: Callable[[Operations], None]


# Version 1 is the first released schema. Append steps here; never edit one that shipped.
MIGRATIONS: list[Migration] = []

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
