"""A logical dump of the whole database, and its load into an empty one: the same on SQLite and
PostgreSQL (a dump of one loads into the other).

Generic over tables: the dump reflects every table the database holds (what the migrations
made, so a table a future migration adds is included with nothing to change here), parent
tables before the tables that refer to them. One JSON array per row, one file per table. The
load makes the current schema, inserts every row and moves each id sequence past the ids it
inserted, all in one transaction: a failed load leaves the database as empty as it was."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Connection, Engine, Integer, MetaData, Table, inspect, select, text

from fogline.domain.errors import ConfigurationError
from fogline.store import schema
from fogline.store.migrations import SCHEMA_VERSION, schema_version

VERSION_TABLE = schema_version.name
_ROWS_PER_READ = 2_000
_ROWS_PER_INSERT = 1_000


@dataclass(frozen=True)
class TableDump:
    name: str
    columns: list[str]
    rows: int


class Writer(Protocol):
    def write(self, data: bytes, /) -> int: ...


class DatabaseNotEmpty(ConfigurationError):
    """The database a dump is loaded into already holds tables."""


def reflected(conn: Connection) -> list[Table]:
    """Every table of the database, parents first (foreign keys), the version table aside."""
    metadata = MetaData()
    metadata.reflect(conn)
    return [t for t in metadata.sorted_tables if t.name != VERSION_TABLE]


def stored_version(conn: Connection) -> int | None:
    if VERSION_TABLE not in inspect(conn).get_table_names():
        return None
    version = conn.execute(select(schema_version.c.version)).scalar_one_or_none()
    return None if version is None else int(version)


def dump_table(conn: Connection, table: Table, out: Writer) -> TableDump:
    """The table's rows to `out`, a JSON array a line, read in pages (never held whole)."""
    columns = [c.name for c in table.columns]
    order = list(table.primary_key.columns) or list(table.columns)
    result = conn.execution_options(yield_per=_ROWS_PER_READ).execute(
        select(table).order_by(*order)
    )
    rows = 0
    for partition in result.partitions():
        out.write(b"".join(_encode_row(row) for row in partition))
        rows += len(partition)
    return TableDump(table.name, columns, rows)


def load_dump(
    engine: Engine,
    tables: list[TableDump],
    rows_of: Callable[[TableDump], Iterable[list[Any]]],
) -> None:
    """Make the current schema in an empty database and insert the dumped rows, in one
    transaction (and, as SQLite's driver commits its DDL on its own, with the tables made
    dropped again should the load fail). Refuses (DatabaseNotEmpty) a database that holds any
    table."""
    with engine.connect() as conn:
        existing = inspect(conn).get_table_names()
    if existing:
        shown = ", ".join(sorted(existing)[:5]) + (", ..." if len(existing) > 5 else "")
        raise DatabaseNotEmpty(
            f"the database to restore into is not empty (it holds {len(existing)} "
            f"table(s): {shown}); restore into an empty database or schema"
        )
    try:
        _load(engine, tables, rows_of)
    except BaseException:
        with engine.begin() as conn:  # it was empty: whatever it holds now is the load's
            metadata = MetaData()
            metadata.reflect(conn)
            metadata.drop_all(conn)
        raise


def _load(
    engine: Engine,
    tables: list[TableDump],
    rows_of: Callable[[TableDump], Iterable[list[Any]]],
) -> None:
    with engine.begin() as conn:
        schema_version.metadata.create_all(conn)
        schema.metadata.create_all(conn)
        conn.execute(schema_version.insert().values(version=SCHEMA_VERSION))
        target = {t.name: t for t in reflected(conn)}
        for dump in tables:
            table = target.get(dump.name)
            if table is None:
                raise ConfigurationError(
                    f"the backup holds a table {dump.name!r} this Fogline's schema does not have"
                )
            unknown = set(dump.columns) - {c.name for c in table.columns}
            if unknown:
                raise ConfigurationError(
                    f"the backup's table {dump.name!r} has columns this Fogline's schema "
                    f"does not have: {', '.join(sorted(unknown))}"
                )
            for batch in _batches(rows_of(dump), _ROWS_PER_INSERT):
                conn.execute(
                    table.insert(), [dict(zip(dump.columns, r, strict=True)) for r in batch]
                )
            if conn.dialect.name == "postgresql":
                _advance_sequences(conn, table)


def read_rows(lines: Iterable[bytes]) -> Iterator[list[Any]]:
    for line in lines:
        if line.strip():
            yield [_decode(v) for v in json.loads(line)]


def _advance_sequences(conn: Connection, table: Table) -> None:
    """Rows inserted with their own ids leave the id sequence behind them: the next id the
    platform takes would clash. Each integer primary key with a sequence moves past its max."""
    for column in table.primary_key.columns:
        if not isinstance(column.type, Integer):
            continue
        conn.execute(
            text(
                "SELECT setval(pg_get_serial_sequence(:table, :column), "
                f'COALESCE((SELECT MAX("{column.name}") FROM "{table.name}"), 0) + 1, false)'
            ),
            {"table": f'"{table.name}"', "column": column.name},
        )


def _batches(rows: Iterable[list[Any]], size: int) -> Iterator[list[list[Any]]]:
    batch: list[list[Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _encode_row(row: Any) -> bytes:
    # Python's json: non-finite floats survive (as NaN/Infinity), unlike strict JSON encoders.
    return json.dumps([_encode(v) for v in row], separators=(",", ":")).encode() + b"\n"


def _encode(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$bytes": base64.b64encode(bytes(value)).decode()}
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict) and "$bytes" in value:
        return base64.b64decode(value["$bytes"])
    return value
