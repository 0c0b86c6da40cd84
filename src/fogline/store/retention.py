"""Retention in SQL: the policy overrides of tenants and asset types, and the bounded steps
the retention job takes (expire a batch of one series' readings, rolling them up first when
asked; expire old aggregates)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from sqlalchemy import Engine, and_, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from fogline.domain.errors import NotFound
from fogline.domain.retention import AGGREGATE_BUCKET_MS, RetentionOverride
from fogline.domain.timeseries import bucket_start, now_ms
from fogline.store import schema as s

# Rows per aggregate upsert statement: 500 x 8 parameters, under every driver's limit.
_UPSERT_CHUNK = 500


@dataclass(frozen=True)
class RetainedSeries:
    """One asset's history, with what decides its policy."""

    series_id: int
    tenant: str
    asset: str
    asset_type: str | None  # None: the asset is gone (its history went with it)


@dataclass(frozen=True)
class ExpiredBatch:
    deleted: int  # readings
    aggregated: int  # (hour, telemetry) roll-ups written or added to


@dataclass(frozen=True)
class TenantOverrides:
    """A tenant's override and every one of its asset types with its own (None: none)."""

    tenant: RetentionOverride | None
    asset_types: dict[str, RetentionOverride | None]


# Called with the overrides as a change leaves them, inside its transaction: raising undoes it.
OverridesCheck = Callable[[TenantOverrides], None]


class RetentionStore(Protocol):
    def tenant_override(self, tenant: str) -> RetentionOverride | None: ...
    def set_tenant_override(
        self, tenant: str, override: RetentionOverride, check: OverridesCheck | None = None
    ) -> None: ...
    def asset_type_overrides(self, tenant: str) -> dict[str, RetentionOverride]: ...
    def set_asset_type_override(
        self,
        tenant: str,
        asset_type: str,
        override: RetentionOverride,
        check: OverridesCheck | None = None,
    ) -> None: ...
    def all_overrides(
        self,
    ) -> tuple[dict[str, RetentionOverride], dict[tuple[str, str], RetentionOverride]]: ...
    def retained_series(self) -> list[RetainedSeries]: ...
    def expire_readings(
        self, series_id: int, before_ms: int, max_rows: int, aggregate: bool
    ) -> ExpiredBatch: ...
    def expire_aggregates(self, series_id: int, before_ms: int, max_rows: int) -> int: ...
    def oldest_reading(self, series_id: int) -> int | None: ...


def _override(row: Any) -> RetentionOverride:
    return RetentionOverride(row.history, row.aggregates)


@dataclass
class _Rollup:
    count: int = 0
    numeric: int = 0
    total: float = 0.0
    low: float | None = None
    high: float | None = None

    def add(self, value: Any) -> None:
        if value is None:
            return
        self.count += 1
        number: float
        if isinstance(value, bool):
            number = 1.0 if value else 0.0
        elif isinstance(value, int | float):
            number = float(value)
        else:
            return  # text: counted, not summed
        if not math.isfinite(number):
            return
        self.numeric += 1
        self.total += number
        self.low = number if self.low is None else min(self.low, number)
        self.high = number if self.high is None else max(self.high, number)


def roll_up(rows: list[tuple[int, str]]) -> dict[tuple[int, str], _Rollup]:
    """Hourly roll-ups of (ts, values JSON) rows, per (hour, telemetry)."""
    rollups: dict[tuple[int, str], _Rollup] = {}
    for ts, values_json in rows:
        hour = bucket_start(ts, AGGREGATE_BUCKET_MS)
        for name, value in orjson.loads(values_json).items():
            key = (hour, name)
            rollup = rollups.get(key)
            if rollup is None:
                rollup = rollups[key] = _Rollup()
            rollup.add(value)
    return rollups


class SqlRetentionStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._mark = "?" if self.dialect == "sqlite" else "%s"

    def _insert(self, table: Any) -> Any:
        module: Any = sqlite if self.dialect == "sqlite" else postgresql
        return module.insert(table)

    # -- policies -------------------------------------------------------------------------

    def tenant_override(self, tenant: str) -> RetentionOverride | None:
        t = s.tenant_retention
        with self.engine.connect() as conn:
            row = conn.execute(select(t).where(t.c.tenant_id == tenant)).first()
        return None if row is None else _override(row)

    def set_tenant_override(
        self, tenant: str, override: RetentionOverride, check: OverridesCheck | None = None
    ) -> None:
        """Sets both parts (None: inherit); an override that sets nothing is removed. `check`
        sees the tenant's overrides as the change leaves them and may refuse it by raising."""
        t = s.tenant_retention
        with self.engine.begin() as conn:
            self._lock_tenant(conn, tenant)
            self._put(conn, t, {"tenant_id": tenant}, override)
            if check is not None:
                check(self._tenant_overrides(conn, tenant))

    def _lock_tenant(self, conn: Connection, tenant: str) -> None:
        """One change to a tenant's policies at a time, so that two changes each checked alone
        cannot together leave an incoherent policy (PostgreSQL: the tenant's row FOR UPDATE;
        SQLite: a single writer, and a write after a stale read fails as busy)."""
        query = select(s.tenants.c.id).where(s.tenants.c.id == tenant)
        if self.dialect != "sqlite":
            query = query.with_for_update()
        if conn.execute(query).first() is None:
            raise NotFound(f"tenant {tenant!r} does not exist")

    def _tenant_overrides(self, conn: Connection, tenant: str) -> TenantOverrides:
        own = conn.execute(
            select(s.tenant_retention).where(s.tenant_retention.c.tenant_id == tenant)
        ).first()
        types, t = s.asset_types, s.asset_type_retention
        rows = conn.execute(
            select(types.c.id, t.c.history, t.c.aggregates)
            .select_from(
                types.outerjoin(
                    t, and_(t.c.tenant_id == types.c.tenant_id, t.c.asset_type_id == types.c.id)
                )
            )
            .where(types.c.tenant_id == tenant)
        )
        return TenantOverrides(
            None if own is None else _override(own),
            {
                row.id: None if row.history is None and row.aggregates is None else _override(row)
                for row in rows
            },
        )

    def asset_type_overrides(self, tenant: str) -> dict[str, RetentionOverride]:
        t = s.asset_type_retention
        with self.engine.connect() as conn:
            rows = conn.execute(select(t).where(t.c.tenant_id == tenant))
            return {row.asset_type_id: _override(row) for row in rows}

    def set_asset_type_override(
        self,
        tenant: str,
        asset_type: str,
        override: RetentionOverride,
        check: OverridesCheck | None = None,
    ) -> None:
        types, t = s.asset_types, s.asset_type_retention
        with self.engine.begin() as conn:
            self._lock_tenant(conn, tenant)
            exists = conn.execute(
                select(types.c.id).where(types.c.tenant_id == tenant, types.c.id == asset_type)
            ).first()
            if exists is None:
                raise NotFound(f"asset type {asset_type!r} does not exist")
            self._put(conn, t, {"tenant_id": tenant, "asset_type_id": asset_type}, override)
            if check is not None:
                check(self._tenant_overrides(conn, tenant))

    def _put(
        self, conn: Connection, table: Any, key: dict[str, str], override: RetentionOverride
    ) -> None:
        where = and_(*(table.c[k] == v for k, v in key.items()))
        if override.history is None and override.aggregates is None:
            conn.execute(delete(table).where(where))
            return
        values = {"history": override.history, "aggregates": override.aggregates}
        statement = self._insert(table).values(**key, **values, updated_at=now_ms())
        conn.execute(
            statement.on_conflict_do_update(
                index_elements=list(key),
                set_={**values, "updated_at": statement.excluded.updated_at},
            )
        )

    def all_overrides(
        self,
    ) -> tuple[dict[str, RetentionOverride], dict[tuple[str, str], RetentionOverride]]:
        with self.engine.connect() as conn:
            tenants = {
                row.tenant_id: _override(row) for row in conn.execute(select(s.tenant_retention))
            }
            types = {
                (row.tenant_id, row.asset_type_id): _override(row)
                for row in conn.execute(select(s.asset_type_retention))
            }
        return tenants, types

    # -- the job's steps ------------------------------------------------------------------

    def retained_series(self) -> list[RetainedSeries]:
        series, assets = s.telemetry_series, s.assets
        of_series = and_(assets.c.tenant_id == series.c.tenant_id, assets.c.id == series.c.asset_id)
        query = (
            select(series.c.id, series.c.tenant_id, series.c.asset_id, assets.c.asset_type_id)
            .select_from(series.outerjoin(assets, of_series))
            .order_by(series.c.id)
        )
        with self.engine.connect() as conn:
            return [
                RetainedSeries(int(r.id), r.tenant_id, r.asset_id, r.asset_type_id)
                for r in conn.execute(query)
            ]

    def expire_readings(
        self, series_id: int, before_ms: int, max_rows: int, aggregate: bool
    ) -> ExpiredBatch:
        """Deletes the oldest readings of a series older than `before_ms`, at most `max_rows`,
        and rolls them up into hourly aggregates first when `aggregate`: one short
        transaction. The delete comes first so that SQLite takes its write lock at the start
        (a read first could not be upgraded once the historian has committed meanwhile)."""
        m = self._mark
        # The oldest `max_rows` rows below the cutoff, by the primary key: the newest of them
        # bounds the delete (null when fewer are there: then all of them go).
        sql = (
            f"DELETE FROM readings WHERE series_id = {m} AND ts < {m} AND ts <= COALESCE(("
            f"SELECT ts FROM readings WHERE series_id = {m} AND ts < {m} "
            f"ORDER BY ts LIMIT 1 OFFSET {m}), {m}) RETURNING ts, values_json"
        )
        params = (series_id, before_ms, series_id, before_ms, max_rows - 1, before_ms)
        with self.engine.begin() as conn:
            rows = [(int(r[0]), r[1]) for r in conn.exec_driver_sql(sql, params)]
            rollups = roll_up(rows) if aggregate and rows else {}
            self._add_aggregates(conn, series_id, rollups)
        return ExpiredBatch(len(rows), len(rollups))

    def _add_aggregates(
        self, conn: Connection, series_id: int, rollups: dict[tuple[int, str], _Rollup]
    ) -> None:
        items = sorted(rollups.items())
        for start in range(0, len(items), _UPSERT_CHUNK):
            chunk = items[start : start + _UPSERT_CHUNK]
            params = tuple(
                v
                for (hour, name), r in chunk
                for v in (series_id, hour, name, r.count, r.numeric, r.total, r.low, r.high)
            )
            conn.exec_driver_sql(self._aggregate_upsert(len(chunk)), params)

    def _aggregate_upsert(self, count: int) -> str:
        """Adds roll-ups to those of the same hours already there (an hour whose readings
        expired over several batches or runs)."""
        row = "(" + ", ".join([self._mark] * 8) + ")"
        least, greatest = ("min", "max") if self.dialect == "sqlite" else ("least", "greatest")
        a, e = "telemetry_aggregates", "excluded"

        def merged(fn: str, column: str) -> str:
            # SQLite's two-argument min/max give null when either is null: pick the other.
            return (
                f"{column} = {fn}(COALESCE({a}.{column}, {e}.{column}), "
                f"COALESCE({e}.{column}, {a}.{column}))"
            )

        return (
            "INSERT INTO telemetry_aggregates (series_id, bucket_ts, name, value_count, "
            "numeric_count, value_sum, value_min, value_max) VALUES "
            + ", ".join([row] * count)
            + " ON CONFLICT (series_id, bucket_ts, name) DO UPDATE SET "
            f"value_count = {a}.value_count + {e}.value_count, "
            f"numeric_count = {a}.numeric_count + {e}.numeric_count, "
            f"value_sum = {a}.value_sum + {e}.value_sum, "
            f"{merged(least, 'value_min')}, {merged(greatest, 'value_max')}"
        )

    def expire_aggregates(self, series_id: int, before_ms: int, max_rows: int) -> int:
        """Deletes a series' aggregates of hours that ended by `before_ms`, at most `max_rows`."""
        m = self._mark
        last_hour = before_ms - AGGREGATE_BUCKET_MS  # an hour starting after it is not over
        sql = (
            f"DELETE FROM telemetry_aggregates WHERE series_id = {m} AND bucket_ts <= {m} "
            f"AND bucket_ts <= COALESCE((SELECT bucket_ts FROM telemetry_aggregates "
            f"WHERE series_id = {m} AND bucket_ts <= {m} ORDER BY bucket_ts, name "
            f"LIMIT 1 OFFSET {m}), {m}) RETURNING bucket_ts"
        )
        params = (series_id, last_hour, series_id, last_hour, max_rows - 1, last_hour)
        with self.engine.begin() as conn:
            return len(conn.exec_driver_sql(sql, params).fetchall())

    def oldest_reading(self, series_id: int) -> int | None:
        r = s.readings
        with self.engine.connect() as conn:
            found = conn.execute(
                select(r.c.ts).where(r.c.series_id == series_id).order_by(r.c.ts).limit(1)
            ).scalar_one_or_none()
        return None if found is None else int(found)
