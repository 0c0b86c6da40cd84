"""The logical dump that `fogline backup` writes and `fogline restore` loads: every table the
migrations made, on SQLite and PostgreSQL, back row for row; and the load is all or nothing."""

from __future__ import annotations

import io
import math
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import select

from fogline.domain.telemetry import DeadLetter, DeadLetterReason
from fogline.store.database import Database
from fogline.store.dump import (
    DatabaseNotEmpty,
    TableDump,
    dump_table,
    load_dump,
    read_rows,
    reflected,
)
from fogline.store.engine import open_engine
from fogline.store.migrations import SCHEMA_VERSION, migrate
from tests.conftest import POSTGRES_ADMIN_URL
from tests.integration.test_store_contract import T0, db, reading, seeded

__all__ = ["db"]  # the store contract's fixture: SQLite and PostgreSQL


@pytest.fixture
def empty_target(db: Database, tmp_path: Path) -> Iterator[str]:
    """An empty database of the same kind as `db`: a second fresh schema on PostgreSQL."""
    if db.dialect == "sqlite":
        yield f"sqlite:///{tmp_path / 'target.db'}"
        return
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{POSTGRES_ADMIN_URL}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def letter(i: int) -> DeadLetter:
    return DeadLetter("acme", "d1", T0 + i, DeadLetterReason.NOT_JSON, f"bad {i}", "{")


def dump_all(database: Database) -> tuple[list[TableDump], dict[str, bytes]]:
    dumps, data = [], {}
    with database.engine.connect() as conn:
        for table in reflected(conn):
            out = io.BytesIO()
            dumps.append(dump_table(conn, table, out))
            data[table.name] = out.getvalue()
    return dumps, data


def every_row(database: Database) -> dict[str, list[Any]]:
    with database.engine.connect() as conn:
        return {
            t.name: [tuple(r) for r in conn.execute(select(t).order_by(*t.primary_key.columns))]
            for t in reflected(conn)
        }


def test_a_dump_loads_back_row_for_row_and_new_ids_follow(db: Database, empty_target: str) -> None:
    store = seeded(db).telemetry
    values: list[dict[str, object]] = [
        {"temperature": 20.5, "rpm": 1, "state": 'quote " and , comma', "running": True},
        {"temperature": math.inf, "rpm": -(2**62)},
        {"state": "ünïcode ✓", "running": False},
    ]
    store.commit_batch(
        [reading(T0 + i, **v) for i, v in enumerate(values)],
        [letter(i) for i in range(3)],
        [],
        None,
    )
    dumps, data = dump_all(db)
    names = [d.name for d in dumps]
    # Parents before the tables that refer to them; the version table is the manifest's.
    with db.engine.connect() as conn:
        for table in reflected(conn):
            for fk in table.foreign_keys:
                if fk.column.table is not table:
                    assert names.index(fk.column.table.name) < names.index(table.name)
    assert "fogline_schema_version" not in names
    assert {d.name: d.rows for d in dumps}["dead_letters"] == 3

    target = Database.connect(empty_target)
    try:
        load_dump(target.engine, dumps, lambda d: read_rows(io.BytesIO(data[d.name])))
        assert every_row(target) == every_row(db)
        assert migrate(target.engine) == SCHEMA_VERSION  # stamped: nothing left to migrate
        # New rows take ids past the loaded ones (PostgreSQL's sequences were moved on).
        target.telemetry.commit_batch([], [letter(9)], [], None)
        ids = [d.id for d in target.telemetry.dead_letters("acme", None, None, 10)]
        assert sorted(ids) == [1, 2, 3, 4]
    finally:
        target.close()


def test_a_load_into_a_database_that_holds_tables_changes_nothing(
    db: Database, empty_target: str
) -> None:
    seeded(db)
    dumps, data = dump_all(db)
    engine = open_engine(empty_target)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE mine (x INTEGER)")
        with pytest.raises(DatabaseNotEmpty, match=r"holds 1 table\(s\): mine"):
            load_dump(engine, dumps, lambda d: read_rows(io.BytesIO(data[d.name])))
        with engine.connect() as conn:
            assert [t.name for t in reflected(conn)] == ["mine"]
    finally:
        engine.dispose()


def test_a_load_that_fails_midway_leaves_the_database_empty(
    db: Database, empty_target: str
) -> None:
    seeded(db)
    dumps, data = dump_all(db)

    def rows_of(dump: TableDump) -> Iterator[list[Any]]:
        if dump.name == "assets":
            raise OSError("the archive broke off")
        return read_rows(io.BytesIO(data[dump.name]))

    engine = open_engine(empty_target)
    try:
        with pytest.raises(OSError, match="broke off"):
            load_dump(engine, dumps, rows_of)
        with engine.connect() as conn:
            assert reflected(conn) == []
    finally:
        engine.dispose()
